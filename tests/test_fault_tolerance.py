"""Exact resume after SIGKILL, SIGTERM preemption, unreadable checkpoints, non-finite steps.

Every run is tools/pretrain.py (or tools/finetune.py, which runs the same loop) in a subprocess
on the tiny demo model (DropToken and dropout on, so the random generators matter) and
synthetic TFRecords; the schedules are pinned so that runs of different lengths follow the same
trajectory.

An interrupted run must still be training when the signal lands: on a fast machine the tiny
model's steps take ~60 ms, so STEPS leaves about a second of training after the first
checkpoint, and `interrupt` repeats a run that ended first with a shorter delay.
"""

import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from vatt_gh import checkpoints
from vatt_gh.data import schema, text

pytestmark = pytest.mark.slow  # in `make test-slow` (CI runs both)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS, EVERY = 20, 3
RUN = [
    "--gin_file=gin/curriculum.gin",
    "--gin_file=gin/demo.gin",
    "--gin_param=GLOBAL_BATCH=8",
    "--gin_param=SyntheticData.num_clips=32",
    "--gin_param=SyntheticData.num_shards=2",
    "--gin_param=build_vatt.num_layers=1",
    f"--gin_param=pretrain.checkpoint_every={EVERY}",
    "--gin_param=pretrain.summary_every=4",
    f"--gin_param=make_optimizer.decay_steps={STEPS}",
    f"--gin_param=Harmonization.gamma_steps={STEPS}",
    "--gin_param=make_optimizer.warmup_steps=2",
]


def command(model_dir, steps=STEPS, extra=()):
    return [
        sys.executable,
        os.path.join(REPO, "tools", "pretrain.py"),
        "--verbose",  # the log lines these tests read (resumed from, input position)
        f"--model_dir={model_dir}",
        f"--gin_param=TRAIN_STEPS={steps}",
        *RUN,
        *extra,
    ]


def run(model_dir, steps=STEPS, extra=(), timeout=600):
    return subprocess.run(
        command(model_dir, steps, extra), capture_output=True, text=True, timeout=timeout, cwd=REPO
    )


def final_state(model_dir, step=STEPS):
    """Weights, optimizer slots and generator states of checkpoint `step`."""
    reader = tf.train.load_checkpoint(os.path.join(model_dir, "checkpoints", f"ckpt-{step}"))
    return {
        name: reader.get_tensor(name)
        for name in reader.get_variable_to_shape_map()
        if name.split("/")[0] in ("model", "optimizer", "rng")
    }


def max_difference(a, b):
    assert a.keys() == b.keys() and len(a) > 10
    return max(
        float(np.max(np.abs(a[k].astype(np.float64) - b[k].astype(np.float64))))
        if a[k].dtype.kind in "fiu"
        else 0.0
        for k in a
    )


def has_a_checkpoint(model_dir):
    """Any checkpoint on disk, not a named one: a run keeps 5, one every 3 steps, so ckpt-3 is
    rotated out about 15 steps (a second or two) after it is written. Waiting for ckpt-3 in
    one run after another's missed it for good (CI: 600 s, then a failure)."""
    return bool(checkpoints.checkpoints_on_disk(os.path.join(model_dir, "checkpoints")))


def wait_for_checkpoint(model_dir, proc, timeout=300, others=()):
    """Wait until `model_dir` holds a checkpoint while `proc` runs; on failure show every
    process's stderr."""
    t0 = time.time()
    while not has_a_checkpoint(model_dir):
        if proc.poll() is not None or time.time() - t0 > timeout:
            for p in (proc, *others):
                p.kill()
            logs = "\n".join(
                f"--- process {i} (exit {p.wait()}):\n{p.communicate()[1][-3000:]}"
                for i, p in enumerate((proc, *others))
            )
            raise AssertionError(f"no checkpoint in {model_dir}\n{logs}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A complete run's directory (read only: copy it to change it)."""
    model_dir = str(tmp_path_factory.mktemp("uninterrupted"))
    proc = run(model_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return model_dir


@pytest.fixture(scope="module")
def uninterrupted(finished_run):
    return final_state(finished_run)


def interrupt(tmp_path, sig, extra=(), window=0.5, attempts=4, make_command=None):
    """Start a run and send `sig` at a random moment within `window` s of its first checkpoint.

    `make_command(run_dir)` gives the command (default: the pre-training run with `extra`).

    A run that ended before the signal proves nothing: it is started again in a fresh
    directory with a quarter of the window (the last attempt signals at once). Returns the
    model directory, the process and its stderr.
    """
    rng = random.Random(os.getpid())
    for attempt in range(attempts):
        model_dir = str(tmp_path / f"attempt{attempt}")
        proc = subprocess.Popen(
            make_command(model_dir) if make_command else command(model_dir, extra=extra),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        wait_for_checkpoint(model_dir, proc)
        if attempt < attempts - 1:
            time.sleep(rng.uniform(0.0, window / 4**attempt))
        proc.send_signal(sig)  # no-op once the process has ended
        _, stderr = proc.communicate(timeout=300)
        if proc.returncode != 0:
            return model_dir, proc, stderr
    raise AssertionError(f"all {attempts} runs ended before signal {sig} reached them")


def test_sigkill_at_a_random_moment_then_resume_is_exact(tmp_path, uninterrupted):
    """The input position saved with the checkpoint rebuilds the pipeline where it stood."""
    extra = ()
    model_dir, proc, stderr = interrupt(tmp_path, signal.SIGKILL, extra)
    assert proc.returncode == -signal.SIGKILL, stderr[-3000:]
    assert not os.path.exists(os.path.join(model_dir, "checkpoints", f"ckpt-{STEPS}.index"))
    resumed = run(model_dir, extra=extra)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stderr
    assert "input position of step" in resumed.stderr  # rebuilt from it, nothing replayed
    assert max_difference(final_state(model_dir), uninterrupted) == 0.0


def test_sigterm_saves_exits_42_and_resumes_exactly(tmp_path, uninterrupted):
    model_dir, proc, stderr = interrupt(tmp_path, signal.SIGTERM)
    assert proc.returncode == 42, stderr[-3000:]
    saved = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
    assert int(saved.rsplit("-", 1)[1]) >= EVERY  # saved at the step boundary after SIGTERM
    resumed = run(model_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert max_difference(final_state(model_dir), uninterrupted) == 0.0


def test_truncated_newest_checkpoint_falls_back_to_the_previous(tmp_path, uninterrupted):
    model_dir = str(tmp_path)
    assert run(model_dir, steps=2 * EVERY).returncode == 0
    data = os.path.join(model_dir, "checkpoints", f"ckpt-{2 * EVERY}.data-00000-of-00001")
    with open(data, "r+b") as f:
        f.truncate(os.path.getsize(data) // 2)
    resumed = run(model_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"ckpt-{2 * EVERY} is unreadable" in resumed.stderr
    assert (
        f"falling back to {os.path.join(model_dir, 'checkpoints', f'ckpt-{EVERY}')}"
        in resumed.stderr
    )
    assert os.path.exists(data + ".unreadable")  # set aside, not deleted
    assert max_difference(final_state(model_dir), uninterrupted) == 0.0


def write_nan_records(directory, clips=16):
    """Clips whose audio is finite but 3e38 (the pipeline, allowed that amplitude, passes it;
    NaN audio it would reject): every step's loss and gradient overflow to non-finite."""
    rng = np.random.default_rng(0)
    examples = []
    for i in range(clips):
        frames = [
            tf.io.encode_jpeg(rng.integers(0, 255, (40, 40, 3), np.uint8)).numpy()
            for _ in range(16)
        ]
        audio = np.full(16 * 4800, 3e38, np.float32)
        examples.append(
            schema.make_sequence_example(
                f"nan_{i}", frames, audio=audio, captions=["a red ball", "a tone"]
            )
        )
    schema.write_records(os.path.join(directory, "nan-00000-of-00001.tfrecord"), examples)
    text.write_word_vocab(os.path.join(directory, "vocab.txt"), ["a", "red", "ball", "tone"])


def read_scalar(log_dir, tag):
    out = {}
    for path in tf.io.gfile.glob(os.path.join(log_dir, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag == tag:
                    out[event.step] = float(tf.make_ndarray(value.tensor))
    return out


def test_nonfinite_steps_are_skipped_counted_and_stop_training(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    write_nan_records(str(data))
    extra = [
        "--gin_param=pretrain.synthetic_data=None",
        f"--gin_param=nan/SourceConfig.file_pattern='{data}/nan-*.tfrecord'",
        "--gin_param=PretrainConfig.sources=(@nan/SourceConfig(),)",
        f"--gin_param=PretrainConfig.vocab_path='{data}/vocab.txt'",
        "--gin_param=pretrain.max_nonfinite_in_a_row=3",
        "--gin_param=PretrainConfig.max_audio_amplitude=3.4e38",
    ]
    proc = run(str(tmp_path / "run"), extra=extra)
    assert proc.returncode != 0
    assert "3 non-finite steps in a row (steps 1-3)" in proc.stderr, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    counted = read_scalar(str(tmp_path / "run" / "train"), "train/skipped_nonfinite")
    assert counted == {3: 3.0}  # summed since the last summary: all three steps skipped


def _numeric_regions(prefix):
    """(start, end) byte ranges of the data file that hold the numeric tensors."""
    reader = tf.train.load_checkpoint(prefix)
    data = open(prefix + ".data-00000-of-00001", "rb").read()
    regions = []
    for name, dtype in reader.get_variable_to_dtype_map().items():
        if dtype.is_numpy_compatible and dtype != tf.string:
            raw = np.ascontiguousarray(reader.get_tensor(name)).tobytes()
            start = data.find(raw) if len(raw) >= 64 else -1
            if start >= 0:
                regions.append((start, start + len(raw)))
    return data, sorted(regions)


def test_flipped_bytes_in_a_tensor_fall_back_to_the_previous(tmp_path):
    """16 flipped bytes inside the largest tensor of the newest checkpoint (its size and index
    intact): the whole checkpoint is verified before restoring (every entry's checksum), set
    aside, and the previous one used (that resuming from it is exact is the
    truncated-checkpoint test's business)."""
    model_dir = str(tmp_path)
    assert run(model_dir, steps=2 * EVERY).returncode == 0
    prefix = os.path.join(model_dir, "checkpoints", f"ckpt-{2 * EVERY}")
    data, regions = _numeric_regions(prefix)
    a, b = max(regions, key=lambda r: r[1] - r[0])  # the largest tensor's bytes
    damaged = bytearray(data)
    middle = (a + b) // 2
    damaged[middle : middle + 16] = bytes(x ^ 0xFF for x in damaged[middle : middle + 16])
    with open(prefix + ".data-00000-of-00001", "wb") as f:
        f.write(bytes(damaged))
    resumed = run(model_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"ckpt-{2 * EVERY} is unreadable" in resumed.stderr
    assert os.path.exists(prefix + ".data-00000-of-00001.unreadable")
    assert f"resumed from {os.path.join(model_dir, 'checkpoints', f'ckpt-{EVERY}')}" in (
        resumed.stderr
    )


def one_bad_record_run(tmp_path, on_error):
    """A run on 16 clips of which record 5 has a NaN audio sample."""
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    examples = []
    for i in range(16):
        frames = [
            tf.io.encode_jpeg(rng.integers(0, 255, (40, 40, 3), np.uint8)).numpy()
            for _ in range(16)
        ]
        audio = rng.uniform(-0.5, 0.5, 16 * 4800).astype(np.float32)
        audio[3] = np.nan if i == 5 else audio[3]
        examples.append(
            schema.make_sequence_example(f"c{i}", frames, audio=audio, captions=["a red ball"])
        )
    shard = str(data / "one-bad-00000-of-00001.tfrecord")
    schema.write_records(shard, examples)
    text.write_word_vocab(str(data / "vocab.txt"), ["a", "red", "ball"])
    extra = [
        "--gin_param=pretrain.synthetic_data=None",
        f"--gin_param=bad/SourceConfig.file_pattern='{shard}'",
        "--gin_param=PretrainConfig.sources=(@bad/SourceConfig(),)",
        f"--gin_param=PretrainConfig.vocab_path='{data}/vocab.txt'",
        f"--gin_param=PretrainConfig.on_error='{on_error}'",
    ]
    return shard, run(str(tmp_path / "run"), steps=4, extra=extra)


def test_bad_record_under_raise_is_a_one_line_error(tmp_path):
    shard, proc = one_bad_record_run(tmp_path, "raise")
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: shard {shard} record 5: non-finite or out-of-range"), last
    assert "sample 3 of 76800 is nan" in last and "on_error='skip'" in last
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]


def test_skipped_records_are_totalled_in_the_log_and_tensorboard(tmp_path):
    shard, proc = one_bad_record_run(tmp_path, "skip")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"skipping shard {shard} record 5: non-finite" in proc.stderr
    counted = read_scalar(str(tmp_path / "run" / "train"), "data/skipped/bad_audio_values")
    assert counted and min(counted.values()) >= 1.0, counted  # totals since the start
    end = re.search(r"input: skipped (\d+) record\(s\): (\d+) x bad_audio_values", proc.stderr)
    assert end and end[1] == end[2] and int(end[1]) >= max(counted.values()), proc.stderr[-3000:]


def finetune_command(tiny_run, output_dir):
    """Fine-tuning the shared tiny pre-trained run (tests/eval_fixtures.py) for STEPS steps."""
    return [
        sys.executable,
        os.path.join(REPO, "tools", "finetune.py"),
        "--verbose",  # the log lines these tests read (resumed from, input position)
        f"--model_dir={tiny_run['model_dir']}",
        f"--output_dir={output_dir}",
        f"--train_pattern={tiny_run['train_pattern']}",
        f"--test_pattern={tiny_run['test_pattern']}",
        f"--num_classes={tiny_run['num_classes']}",
        f"--gin_param=FinetuneConfig.train_steps={STEPS}",
        "--gin_param=FinetuneConfig.global_batch_size=8",
        "--gin_param=FinetuneConfig.warmup_steps=2",
        f"--gin_param=FinetuneConfig.checkpoint_every={EVERY}",
        "--gin_param=FinetuneConfig.summary_every=4",
        "--gin_param=FinetuneConfig.eval_windows=1",
        "--gin_param=FinetuneConfig.head_dropout=0.1",  # the head's dropout stream too
    ]


def test_finetune_sigkill_at_a_random_moment_then_resume_is_exact(tmp_path, tiny_run):
    """Fine-tuning runs the pre-training loop: the random generators are checkpointed and the
    input position saved with each checkpoint, so a killed and resumed run ends where an
    uninterrupted one does."""
    uninterrupted = str(tmp_path / "uninterrupted")
    proc = subprocess.run(
        finetune_command(tiny_run, uninterrupted),
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    output_dir, proc, stderr = interrupt(
        tmp_path, signal.SIGKILL, make_command=lambda out: finetune_command(tiny_run, out)
    )
    assert proc.returncode == -signal.SIGKILL, stderr[-3000:]
    assert not os.path.exists(os.path.join(output_dir, "checkpoints", f"ckpt-{STEPS}.index"))
    resumed = subprocess.run(
        finetune_command(tiny_run, output_dir),
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stderr
    assert "input position of step" in resumed.stderr  # rebuilt from it, nothing replayed
    assert max_difference(final_state(output_dir), final_state(uninterrupted)) == 0.0


def test_every_checkpoint_damaged_stops_and_touches_nothing_anywhere(
    tmp_path, finished_run, snapshot
):
    """The reported case: a run whose checkpoints were all truncated (a full disk), resumed
    from a working directory holding dotfiles and a .git. Before the fix it renamed them all."""
    model_dir = str(tmp_path / "run")
    shutil.copytree(finished_run, model_dir)
    ckpt_dir = os.path.join(model_dir, "checkpoints")
    for name in os.listdir(ckpt_dir):
        if name.endswith(".data-00000-of-00001"):
            with open(os.path.join(ckpt_dir, name), "r+b") as f:
                f.truncate(1000)
    cwd = tmp_path / "cwd"
    (cwd / ".git").mkdir(parents=True)
    (cwd / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    for name in (".x", ".venv", ".gitignore"):
        (cwd / name).write_text(name)
    before = snapshot(str(tmp_path))
    proc = subprocess.run(
        command(model_dir), capture_output=True, text=True, timeout=600, cwd=str(cwd)
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: every checkpoint in") and "start over" in last, last
    assert f"ckpt-{STEPS}" in last and "{{" not in last
    assert snapshot(str(tmp_path)) == before  # the run directory too: nothing renamed


def _start_logged(cmd, log):
    """A run whose log goes to a file: a pipe nobody reads fills up (--verbose) and stalls it."""
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=f, cwd=REPO)
    proc.log = log
    return proc


def _log_of(proc):
    with open(proc.log) as f:
        return f.read()


def _wait_until(ready, what, procs, timeout=600):
    t0 = time.time()
    while not ready():
        alive = all(p.poll() is None for p in procs)
        if not alive or time.time() - t0 > timeout:
            raise AssertionError(f"{what} never happened\n{_stacks_and_logs(procs)}")
        time.sleep(0.05)


def _exit_code(proc, timeout=300):
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"no exit in {timeout} s\n{_stacks_and_logs([proc])}") from None


def _stacks_and_logs(procs):
    """The end of each process's log, with the Python stacks of those still running (SIGUSR1)."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGUSR1)
    time.sleep(3)
    return "\n".join(f"--- pid {p.pid}, exit {p.poll()}:\n{_log_of(p)[-4000:]}" for p in procs)


def test_sigterm_at_random_moments_always_exits_42_with_a_readable_checkpoint(tmp_path):
    """20 signals, each at a random moment of a run's life (start-up, tracing, training,
    saving), two runs at a time: every exit is 42 (never the C++ abort, 134), the newest
    checkpoint verifies, the lock is released; and a second run on a busy directory is refused."""

    rng = random.Random(1234)
    dirs = [str(tmp_path / f"run{i}") for i in range(2)]
    endless = 10_000  # never completes: every segment resumes the same run

    logs = []

    def start(model_dir):
        logs.append(str(tmp_path / f"log{len(logs)}.txt"))
        return _start_logged(command(model_dir, steps=endless), logs[-1])

    started = []  # every process, killed at the end whatever happens (they never finish)
    try:
        # A first checkpoint in each directory, and the start-up time that sets the window.
        t0 = time.time()
        procs = [start(d) for d in dirs]
        started += procs
        lock = os.path.join(dirs[0], "run.lock")
        _wait_until(lambda: os.path.exists(lock), f"{lock} created", procs)
        busy = subprocess.run(
            command(dirs[0], steps=endless), capture_output=True, text=True, timeout=600, cwd=REPO
        )
        _wait_until(lambda: all(map(has_a_checkpoint, dirs)), "a checkpoint in each run", procs)
        window = min(time.time() - t0 + 2.0, 60.0)  # start-up, tracing and some steps
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            assert _exit_code(p) == 42, _log_of(p)[-3000:]
        assert busy.returncode == 1 and "in use by another run" in busy.stderr, busy.stderr[-2000:]

        codes = []
        for _ in range(10):
            procs = [start(d) for d in dirs]
            started += procs
            time.sleep(rng.uniform(1.0, window))  # from the tool's first line (imports: ~0.3 s)
            for p in procs:
                p.send_signal(signal.SIGTERM)
            for d, p in zip(dirs, procs):
                _exit_code(p)
                stderr = _log_of(p)
                codes.append(p.returncode)
                assert p.returncode == 42, stderr[-3000:]
                assert "terminate called" not in stderr
                ckpt_dir = os.path.join(d, "checkpoints")
                checkpoints.verify_checkpoint(tf.train.latest_checkpoint(ckpt_dir))
                assert not os.path.exists(os.path.join(d, "run.lock"))
        assert codes == [42] * 20
    finally:
        for p in started:
            if p.poll() is None:
                p.kill()
                p.wait()
