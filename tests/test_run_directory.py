"""A damaged or shared run directory: nothing outside it is touched, nothing is lost.

Each test runs from a scratch working directory that holds dotfiles and a `.git`, and checks
afterwards that every file outside the run directory kept its name and its bytes. Checkpoints
are small real ones (a variable), saved by TensorFlow's CheckpointManager as a run saves them.
"""

import json
import os
import socket
import subprocess
import sys

import pytest
import tensorflow as tf

from vatt_gh import checkpoints, harmonize, input_state, run_lock
from vatt_gh.data import builder, captions
from vatt_gh.errors import ConfigError, TrainingError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def scratch(tmp_path, monkeypatch, snapshot):
    """A working directory with dotfiles and a .git, and a run directory beside it.

    Yields (cwd, model_dir); on exit, asserts nothing outside model_dir changed."""
    cwd = tmp_path / "cwd"
    (cwd / ".git" / "objects").mkdir(parents=True)
    (cwd / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    for name in (".x", ".gitignore", ".venv", ".ci"):
        (cwd / name).write_text(f"{name}\n")
    (cwd / "notes.txt").write_text("keep me\n")
    victim = tmp_path / "victim"  # what a state file may name outside the run
    victim.mkdir()
    for name in ("notes", "notes.index", "notes.data-00000-of-00001", "notes.txt"):
        (victim / name).write_text("precious\n")
    model_dir = tmp_path / "run"
    model_dir.mkdir()
    monkeypatch.chdir(cwd)
    before = snapshot(str(tmp_path), skip={str(model_dir)})
    yield cwd, str(model_dir)
    assert snapshot(str(tmp_path), skip={str(model_dir)}) == before


def save(ckpt_dir, steps, value=1.0):
    manager = tf.train.CheckpointManager(
        tf.train.Checkpoint(v=tf.Variable(value)), ckpt_dir, max_to_keep=len(steps)
    )
    for step in steps:
        manager.save(checkpoint_number=step)


def truncate(ckpt_dir, step, size=10):
    with open(os.path.join(ckpt_dir, f"ckpt-{step}.data-00000-of-00001"), "r+b") as f:
        f.truncate(size)


def stated(ckpt_dir):
    state = tf.train.get_checkpoint_state(ckpt_dir)
    return [os.path.basename(p) for p in state.all_model_checkpoint_paths] if state else []


def test_the_only_checkpoint_truncated_stops_with_one_line_and_changes_nothing(scratch, snapshot):
    _, model_dir = scratch
    ckpt_dir = os.path.join(model_dir, "checkpoints")
    save(ckpt_dir, [20])
    truncate(ckpt_dir, 20)
    before = snapshot(model_dir)
    with pytest.raises(ConfigError) as e:
        checkpoints.newest_step(ckpt_dir, chief=True)
    message = str(e.value)
    assert "\n" not in message and "ckpt-20" in message and "start over" in message
    assert snapshot(model_dir) == before  # not renamed: nothing changed at all
    with pytest.raises(ConfigError):  # the same on every later start
        checkpoints.newest_step(ckpt_dir, chief=True)


def test_every_checkpoint_unreadable_names_them_all(scratch):
    _, model_dir = scratch
    ckpt_dir = os.path.join(model_dir, "checkpoints")
    save(ckpt_dir, [10, 20])
    truncate(ckpt_dir, 10)
    truncate(ckpt_dir, 20)
    with pytest.raises(ConfigError, match=r"ckpt-20, ckpt-10"):
        checkpoints.set_aside_unreadable(ckpt_dir)


def test_a_state_file_naming_paths_outside_is_never_followed(scratch, tmp_path):
    _, model_dir = scratch
    victim = tmp_path / "victim"
    ckpt_dir = os.path.join(model_dir, "checkpoints")
    save(ckpt_dir, [10])
    outside = [str(victim / "notes"), "", "../../cwd/.x", "/"]
    for paths in ([*outside, os.path.join(ckpt_dir, "ckpt-10")], outside):
        with open(os.path.join(ckpt_dir, "checkpoint"), "w") as f:
            f.write(f'model_checkpoint_path: "{paths[-1]}"\n')
            f.writelines(f'all_model_checkpoint_paths: "{p}"\n' for p in paths)
        restored = checkpoints.set_aside_unreadable(ckpt_dir)
        assert restored == os.path.join(ckpt_dir, "ckpt-10")
        assert stated(ckpt_dir) == ["ckpt-10"]  # rewritten from the directory's own files
        # A manager on the rewritten state deletes only its own old checkpoints.
        manager = tf.train.CheckpointManager(
            tf.train.Checkpoint(v=tf.Variable(2.0)), ckpt_dir, max_to_keep=1
        )
        manager.save(checkpoint_number=11)
        assert checkpoints.checkpoints_on_disk(ckpt_dir) == [11]
        for name in os.listdir(ckpt_dir):
            if name.startswith("ckpt-11"):
                os.rename(os.path.join(ckpt_dir, name), os.path.join(ckpt_dir, "x" + name))
        save(ckpt_dir, [10])


def test_an_empty_checkpoint_list_never_globs_the_working_directory(scratch):
    cwd, model_dir = scratch
    ckpt_dir = os.path.join(model_dir, "checkpoints")
    save(ckpt_dir, [5, 20])
    truncate(ckpt_dir, 20)
    # The old code emptied its list here and then globbed "" + ".*" in the working directory.
    assert checkpoints.set_aside_unreadable(ckpt_dir) == os.path.join(ckpt_dir, "ckpt-5")
    assert os.path.exists(os.path.join(ckpt_dir, "ckpt-20.index.unreadable"))
    assert stated(ckpt_dir) == ["ckpt-5"]
    assert not [n for n in os.listdir(cwd) if n.endswith(".unreadable")]


def test_a_missing_state_file_is_rebuilt_from_the_checkpoints(scratch):
    _, model_dir = scratch
    ckpt_dir = os.path.join(model_dir, "checkpoints")
    save(ckpt_dir, [120, 160, 200])
    os.remove(os.path.join(ckpt_dir, "checkpoint"))
    assert tf.train.latest_checkpoint(ckpt_dir) is None  # what TensorFlow alone would see
    assert checkpoints.newest_step(ckpt_dir, chief=True) == 200
    assert stated(ckpt_dir) == ["ckpt-120", "ckpt-160", "ckpt-200"]
    truncate(ckpt_dir, 200)  # newest readable first
    os.remove(os.path.join(ckpt_dir, "checkpoint"))
    assert checkpoints.newest_step(ckpt_dir, chief=True) == 160


def test_a_state_file_without_its_checkpoints_or_only_set_aside_ones_is_refused(scratch):
    _, model_dir = scratch
    ckpt_dir = os.path.join(model_dir, "checkpoints")
    save(ckpt_dir, [30])
    for name in os.listdir(ckpt_dir):
        if name.startswith("ckpt-30"):
            os.remove(os.path.join(ckpt_dir, name))
    with pytest.raises(ConfigError, match="ckpt-30"):
        checkpoints.newest_step(ckpt_dir, chief=True)
    os.remove(os.path.join(ckpt_dir, "checkpoint"))
    open(os.path.join(ckpt_dir, "ckpt-30.index.unreadable"), "w").close()
    with pytest.raises(ConfigError, match=r"ckpt-30\.index\.unreadable"):
        checkpoints.newest_step(ckpt_dir, chief=True)


def test_an_empty_directory_is_a_fresh_start(scratch):
    _, model_dir = scratch
    assert checkpoints.newest_step(os.path.join(model_dir, "checkpoints"), chief=True) == 0


def test_a_second_run_on_one_directory_is_refused(scratch):
    _, model_dir = scratch
    with run_lock.hold(model_dir) as path:
        holder = json.load(open(path))
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        with pytest.raises(ConfigError) as e:
            run_lock.acquire(model_dir)
        assert "in use by another run" in str(e.value) and str(os.getpid()) in str(e.value)
    assert not os.path.exists(path)  # released
    with run_lock.hold(model_dir, chief=False) as nothing:  # other workers take no lock
        assert nothing is None and not os.path.exists(path)


def test_a_stale_lock_is_taken_over(scratch):
    _, model_dir = scratch
    path = os.path.join(model_dir, run_lock.NAME)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    for content in (
        json.dumps({"host": socket.gethostname(), "pid": dead.pid, "since": 0}),  # gone
        "{half writ",  # a lock whose writer was killed mid-write
    ):
        with open(path, "w") as f:
            f.write(content)
        with run_lock.hold(model_dir):
            assert json.load(open(path))["pid"] == os.getpid()
        assert not os.path.exists(path)
    # Another host's lock: stale only when it was not refreshed for STALE_SECONDS.
    with open(path, "w") as f:
        f.write(json.dumps({"host": "elsewhere", "pid": 1, "since": 0}))
    with pytest.raises(ConfigError, match="elsewhere"):
        run_lock.acquire(model_dir)
    old = os.path.getmtime(path) - run_lock.STALE_SECONDS - 60
    os.utime(path, (old, old))
    with run_lock.hold(model_dir):
        pass


def test_a_corrupt_input_position_falls_back_to_counting(scratch, caplog):
    from vatt_gh.data.configs import PretrainConfig

    _, model_dir = scratch
    ckpt_dir = os.path.join(model_dir, "checkpoints")
    state = input_state.InputState(PretrainConfig.__new__(PretrainConfig), 8, ckpt_dir, "chief")
    os.makedirs(state.directory)
    for content in ("{not json", '{"step": 5}', '{"pipelines": {"0": 3}}'):
        with open(os.path.join(state.directory, "position-5.json"), "w") as f:
            f.write(content)
        state.restore(5)  # no JSONDecodeError: warned, then recomputed as when it is missing
        assert state._saved == {}
    assert "unreadable" in caplog.text


@pytest.mark.parametrize("field", ["gamma_start", "gamma_end"])
@pytest.mark.parametrize("value", [2.0, -1.5, float("nan"), float("inf")])
def test_a_gamma_outside_the_cosine_range_is_refused(field, value):
    with pytest.raises(ValueError, match=rf"Harmonization\.{field}"):
        harmonize.Harmonization(method="curriculum", **{field: value})
    harmonize.Harmonization(method="curriculum", **{field: 1.0 if field == "gamma_end" else -1.0})


@pytest.mark.parametrize("prefix", ["../../x", "a/b", "..", "", "/abs"])
def test_a_builder_prefix_cannot_leave_the_output_folder(prefix):
    with pytest.raises(ValueError, match="BuildConfig.prefix"):
        builder.BuildConfig(prefix=prefix)


def test_the_builder_tool_names_a_bad_prefix_and_writes_nothing(scratch):
    cwd, model_dir = scratch
    videos = os.path.join(model_dir, "videos")
    os.makedirs(videos)
    open(os.path.join(videos, "a.mp4"), "wb").write(b"not a video")
    out = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "tools", "build_dataset.py"),
            f"--videos={videos}/*.mp4",
            f"--out_dir={os.path.join(model_dir, 'out', 'deep')}",
            "--prefix=../../escaped",
        ],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )
    assert out.returncode != 0
    last = out.stderr.strip().splitlines()[-1]
    assert "prefix" in last and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert sorted(os.listdir(model_dir)) == ["videos"]  # the fixture checks the rest


def test_an_srt_cue_with_a_negative_start_is_reported(tmp_path, caplog):
    path = tmp_path / "v.srt"
    path.write_text(
        "1\n-00:00:01,000 --> 00:00:02,000\nlost\n\n2\n00:00:02,000 --> 00:00:03,000\nkept\n\n"
    )
    assert captions.read_subtitles(str(path)) == [(2.0, 3.0, "kept")]
    assert "1 cue(s) left out" in caplog.text and "-00:00:01,000" in caplog.text


def test_a_full_disk_at_a_checkpoint_is_one_line_naming_the_last_good_one(scratch):
    from vatt_gh import loop

    _, model_dir = scratch
    ckpt_dir = os.path.join(model_dir, "checkpoints")
    save(ckpt_dir, [40])

    class Writer:
        closed = False

        def close(self):
            self.closed = True

    writer = Writer()
    with pytest.raises(TrainingError) as e:
        with loop._disk_full_as_error(ckpt_dir, 50, writer):
            raise tf.errors.ResourceExhaustedError(None, None, "No space left on device")
    message = str(e.value)
    assert "\n" not in message and writer.closed
    assert "checkpoint 50" in message and ckpt_dir in message
    assert "MiB free" in message and "ckpt-40" in message
    with pytest.raises(OSError):  # other OS errors pass through unchanged
        with loop._disk_full_as_error(ckpt_dir, 50, writer):
            raise PermissionError(13, "denied")


def test_a_killed_synthetic_build_leaves_nothing_behind(scratch, clean_gin):
    from vatt_gh import provision

    _, model_dir = scratch
    leftover = os.path.join(model_dir, "data.tmp-4242")  # a build killed half-way
    os.makedirs(leftover)
    open(os.path.join(leftover, "synthetic-00000-of-00002.tfrecord"), "wb").write(b"half")
    tiny = provision.SyntheticData(num_clips=4, num_frames=2, frame_size=8, num_shards=1)
    config = provision.data_config(model_dir, tiny)
    assert sorted(os.listdir(model_dir)) == ["data"]
    assert config.sources[0].file_pattern.startswith(os.path.join(model_dir, "data"))
