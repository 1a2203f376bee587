"""The dataset builder as a Beam pipeline (DirectRunner) on real media written here with PyAV.

The reference is the in-process loop over videos (`builder.video_records` per video, no Beam):
the pipeline's shards must hold exactly those records, shard i the videos i, i + n, ... in
order, whatever the worker count. A file that is not a video and a video whose subtitle file
cannot be parsed go to the failures output with their reasons; a run killed part-way and
started again ends with every clip exactly once.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import tensorflow as tf
from test_data_builder import _make_mp4

from vatt_gh.data import beam_build, builder

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# name -> (colour, tone Hz, seconds); "subs" has a subtitle file that cannot be parsed
VIDEOS = {
    "a": ((220, 30, 30), 440.0, 2.0),
    "b": ((30, 220, 30), 660.0, 2.5),
    "c": ((30, 30, 220), 880.0, 1.5),
    "d": ((200, 200, 30), 990.0, 2.0),
    "subs": ((90, 90, 90), 500.0, 1.0),
}
CONFIG = builder.BuildConfig(
    fps=10.0, short_side=32, clip_seconds=1.0, neighbours=1, videos_per_shard=2, prefix="t"
)
ONE_WORKER = ["--direct_num_workers=1"]  # the in-memory DirectRunner: one process


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("beam")
    video_dir = root / "videos"
    video_dir.mkdir()
    for name, (rgb, hz, seconds) in VIDEOS.items():
        _make_mp4(str(video_dir / f"{name}.mp4"), rgb, hz, seconds=seconds)
    (video_dir / "broken.mp4").write_bytes(b"this is not a video")
    (video_dir / "subs.en.vtt").write_text("WEBVTT\n\n00:00:xx --> nonsense\nhello\n")
    captions = root / "captions.csv"
    captions.write_text(
        "video_id,start,end,text\na,0.1,0.9,a first\na,1.2,1.8,a second\nc,0.0,1.0,c only\n"
    )
    labels = root / "labels.json"
    labels.write_text(json.dumps({"b": [4, 7], "d": [1]}))
    videos = builder.find_videos([str(video_dir)])
    tasks = builder.video_tasks(videos, CONFIG, str(captions), str(labels))
    reference, failed = {}, []
    for task in tasks:  # the in-process reference: one video at a time, no Beam
        try:
            reference[task.name] = builder.video_records(task).records
        except Exception as e:
            failed.append((task.name, type(e).__name__))
    return dict(
        root=root, videos=videos, captions=str(captions), labels=str(labels),
        reference=reference, failed=failed,
    )  # fmt: skip


def build(media, out_dir, pipeline_args):
    return builder.build_dataset(
        media["videos"],
        media["captions"],
        str(out_dir),
        CONFIG,
        pipeline_args=pipeline_args,
        labels_path=media["labels"],
    )


@pytest.fixture(scope="module")
def two_workers(media):
    start = time.monotonic()
    summary = build(media, media["root"] / "two", ["--direct_num_workers=2"])
    return dict(summary=summary, seconds=time.monotonic() - start, out=media["root"] / "two")


def shard_records(out_dir, prefix="t"):
    """{shard file name: [serialized records in file order]}."""
    return {
        os.path.basename(path): [r.numpy() for r in tf.data.TFRecordDataset(path)]
        for path in sorted(tf.io.gfile.glob(os.path.join(str(out_dir), f"{prefix}-*.tfrecord")))
    }


def expected_shards(media, num_shards):
    """Shard i: the records of videos i, i + n, ... (sorted paths), each video's in clip order."""
    return {
        f"t-{i:05d}-of-{num_shards:05d}.tfrecord": [
            record
            for path in media["videos"][i::num_shards]
            for record in media["reference"].get(path, [])
        ]
        for i in range(num_shards)
    }


def test_reference_is_what_the_media_holds(media):
    # 7 files: 5 decodable videos (one with a bad subtitle file) and the broken one
    assert len(media["videos"]) == 6
    assert sorted((os.path.basename(p), e) for p, e in media["failed"]) == [
        ("broken.mp4", "InvalidDataError"),
        ("subs.mp4", "ValueError"),
    ]
    clips = {os.path.basename(p): len(r) for p, r in media["reference"].items()}
    # 1 s clips at 10 fps; a last piece shorter than min_clip_seconds (1 s) is dropped
    assert clips == {"a.mp4": 2, "b.mp4": 2, "c.mp4": 1, "d.mp4": 2}


def test_two_workers_write_the_reference_records_shard_by_shard(media, two_workers):
    s = two_workers["summary"]
    assert len(s["shards"]) == 3 and s["written"] == 3 and s["skipped"] == 0
    assert shard_records(two_workers["out"]) == expected_shards(media, 3)
    assert s["num_clips"] == 7 and s["videos"] == 6
    assert s["with_text"] == 2  # a and c: rows in the table
    print(f"two-worker build of 6 videos: {two_workers['seconds']:.1f} s")


def test_one_worker_writes_the_same_bytes(media, two_workers, tmp_path):
    build(media, tmp_path, ONE_WORKER)
    for name in ["t-failures.jsonl"] + [f"t-{i:05d}-of-00003.tfrecord" for i in range(3)]:
        with open(tmp_path / name, "rb") as a, open(two_workers["out"] / name, "rb") as b:
            assert a.read() == b.read(), name


def test_failures_output_names_the_broken_inputs(media, two_workers):
    s = two_workers["summary"]
    with open(s["failures_file"]) as f:
        rows = [json.loads(line) for line in f]
    assert [os.path.basename(r["file"]) for r in rows] == ["broken.mp4", "subs.mp4"]
    assert "Invalid data" in rows[0]["reason"]
    assert "subs.en.vtt" in rows[1]["reason"] and rows[1]["reason"].startswith("ValueError")
    assert [(f, r) for f, r in s["failed"]] == [(r["file"], r["reason"]) for r in rows]
    m = s["metrics"]
    assert (m["videos"], m["clips"], m["failures"], m["shards_written"]) == (4, 7, 2, 3)
    # decoded length: int(seconds * 25) source frames at 25 fps, resampled to whole 10 fps frames
    frames = [int(int(VIDEOS[v][2] * 25) / 25 * 10) for v in "abcd"]
    assert frames == [20, 24, 14, 20] and m["video_ms"] == 100 * sum(frames)
    assert "2 file(s) failed" in builder.format_summary(s)


def test_rerun_skips_finished_shards(media, two_workers):
    again = build(media, two_workers["out"], ONE_WORKER)
    assert again["written"] == 0 and again["skipped"] == 3
    assert again["failed"] == two_workers["summary"]["failed"]
    assert shard_records(two_workers["out"]) == expected_shards(media, 3)


def test_killed_run_started_again_has_every_clip_once(media, tmp_path):
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        os.path.join(REPO, "tools", "build_dataset.py"),
        f"--videos={os.path.dirname(media['videos'][0])}",
        f"--captions={media['captions']}",
        f"--labels={media['labels']}",
        f"--out_dir={out}",
        "--fps=10",
        "--short_side=32",
        "--clip_seconds=1",
        "--neighbours=1",
        "--videos_per_shard=1",  # 6 shards, one video each
        "--prefix=t",
        "--direct_num_workers=1",
        "--progress_seconds=0",
    ]
    proc = subprocess.Popen(cmd, cwd=REPO, start_new_session=True, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not beam_build.read_sidecars(str(out), "t") and time.monotonic() < deadline:
        assert proc.poll() is None, "the build ended before it could be stopped"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole job, workers included, mid-way
    proc.wait()
    done = beam_build.read_sidecars(str(out), "t")
    assert 1 <= len(done) < 6, f"{len(done)} shards finished before the kill"
    # what a kill mid-write leaves: a partial temp file (removed), a shard without sidecar
    (out / "t-00005-of-00006.tfrecord.tmp-0123").write_bytes(b"partial")

    # started again as a user would: the same command, with progress lines, 2 workers (threads:
    # a Beam option passed through; the processes' start-up is the 2-worker fixture's), in an
    # environment without the test suite's TF_CPP_MIN_LOG_LEVEL
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    again = subprocess.run(
        cmd[:-2]
        + [
            "--direct_num_workers=2",
            "--direct_running_mode=multi_threading",
            "--progress_seconds=1",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"7 clips in 6 shard(s) ({6 - len(done)} written, {len(done)} already finished)" in (
        again.stdout
    )
    assert "6/6 shards, this run:" in again.stdout and "2 file(s) failed" in again.stdout
    assert again.stderr == ""  # Beam's start-up notes: in t-workers.log
    records = [r for shard in shard_records(out).values() for r in shard]
    want = [r for path in media["videos"] for r in media["reference"].get(path, [])]
    assert sorted(records) == sorted(want) and len(set(records)) == len(records) == 7
    assert shard_records(out) == {
        f"t-{i:05d}-of-00006.tfrecord": media["reference"].get(path, [])
        for i, path in enumerate(media["videos"])
    }
    assert not tf.io.gfile.glob(str(out / "*.tmp-*"))


def test_unknown_pipeline_option_is_one_line(media, tmp_path):
    with pytest.raises(ValueError, match="unknown pipeline option.*--direct_num_worker=2"):
        build(media, tmp_path, ["--direct_num_worker=2"])


def test_other_inputs_into_a_finished_directory_are_refused(media, two_workers):
    other = builder.BuildConfig(**{**CONFIG.__dict__, "jpeg_quality": 80})
    before = sorted(os.listdir(two_workers["out"]))
    with pytest.raises(ValueError, match="holds shards t-\\* of other inputs or options"):
        builder.build_dataset(media["videos"], media["captions"], str(two_workers["out"]), other)
    assert sorted(os.listdir(two_workers["out"])) == before


def test_the_command_names_an_unknown_beam_option_in_one_line(media, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "tools", "build_dataset.py"),
            f"--videos={media['videos'][0]}",
            f"--out_dir={tmp_path / 'out'}",
            "--direct_num_worker=2",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0 and proc.stdout == ""
    assert proc.stderr.splitlines() == [
        "error: unknown pipeline option(s) --direct_num_worker=2 (Beam's options only)"
    ]
