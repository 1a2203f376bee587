r"""Clips/s of the dataset builder (tools/build_dataset.py's Beam pipeline) on this machine.

Example:
  python bench/build_throughput.py --videos=8 --video_seconds=24

Writes `--videos` HowTo100M-like videos (640 x 360 at 30 fps, a moving pattern with noise, 44.1
kHz audio) and builds them with the HowTo100M settings (10 fps, short side 256, 4 s clips,
JPEG quality 90) on the DirectRunner: 1 worker (in memory), 2 worker processes, 2 threads.
Prints a markdown table: clips, wall time including Beam's and the workers' start-up, clips/s,
and clips/s per core after the first shard finished (from the sidecars' times; divided by
min(workers, cores)); plus one video in process (`builder.video_records`, no Beam) in clips/s
and clips per CPU-second. Other jobs on a shared machine lower every wall-clock number: run it
on an idle one for a figure to plan with.
"""

import os
import tempfile
import time

import numpy as np
from absl import app, flags

from vatt_gh import console

FLAGS = flags.FLAGS
flags.DEFINE_integer("videos", 8, "Videos to build.")
flags.DEFINE_float("video_seconds", 24.0, "Length of each video.")
flags.DEFINE_list(
    "runs",
    ["1:in_memory", "2:multi_processing", "2:multi_threading"],
    "DirectRunner settings to measure: workers:direct_running_mode.",
)


def _write_videos(video_dir: str, count: int, seconds: float):
    from vatt_gh.data import video_io

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:360, 0:640]
    fps, rate = 30, 44100
    for v in range(count):

        def frames(v=v):
            for t in range(int(seconds * fps)):
                base = 128 + 60 * np.sin((xx + 3 * t + 11 * v) / 23.0 + yy / 31.0)
                noise = rng.normal(0, 10, (360, 640, 1))
                yield np.clip(base[..., None] * [1, 0.7, 0.4] + noise, 0, 255).astype(np.uint8)

        audio = 0.3 * np.sin(2 * np.pi * (300 + 50 * v) * np.arange(int(seconds * rate)) / rate)
        audio = audio + rng.normal(0, 0.05, audio.shape)
        video_io.write_mp4(
            os.path.join(video_dir, f"v{v:03d}.mp4"), frames(), fps, audio.astype(np.float32), rate
        )


def _steady_rate(out_dir: str, start: float) -> float:
    """Clips/s after the first shard: (clips of the later shards) / (last - first finish time)."""
    import tensorflow as tf

    from vatt_gh.data import beam_build

    done = sorted(
        (tf.io.gfile.stat(path).mtime_nsec / 1e9, info["num_clips"])
        for path, info in beam_build.read_sidecars(out_dir, "bench").items()
    )
    span = done[-1][0] - done[0][0]
    return sum(clips for _, clips in done[1:]) / span if span > 0 else float("nan")


def main(argv):
    del argv
    console.quiet(False)
    from vatt_gh.data import builder

    cores = len(os.sched_getaffinity(0))
    config = builder.BuildConfig(videos_per_shard=1, prefix="bench")  # HowTo100M's settings
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        video_dir = os.path.join(tmp, "videos")
        os.makedirs(video_dir)
        _write_videos(video_dir, FLAGS.videos, FLAGS.video_seconds)
        videos = builder.find_videos([video_dir])
        task = builder.video_tasks(videos[:1], config)[0]
        builder.video_records(task)  # warm-up: TensorFlow's and PyAV's first calls
        start, cpu = time.perf_counter(), time.process_time()
        made = builder.video_records(task)
        one = len(made.records) / (time.perf_counter() - start)
        per_cpu_second = len(made.records) / (time.process_time() - cpu)  # all threads' CPU
        for run in FLAGS.runs:
            workers, mode = run.split(":")
            out = os.path.join(tmp, run.replace(":", "_"))
            args = [f"--direct_num_workers={workers}", f"--direct_running_mode={mode}"]
            start = time.time()
            summary = builder.build_dataset(videos, None, out, config, args)
            seconds = time.time() - start
            steady = _steady_rate(out, start)
            used = min(int(workers), cores)
            rows.append(
                (run, summary["num_clips"], seconds, summary["num_clips"] / seconds, steady / used)
            )
    print(
        f"\n{FLAGS.videos} videos of {FLAGS.video_seconds:g} s (640 x 360, 30 fps) -> 4 s clips "
        f"at 10 fps, short side 256; {cores} cores"
    )
    print(
        "\n| workers:mode | clips | wall s (with start-up) | clips/s | "
        "clips/s per core after the first shard |"
    )
    print("| --- | --- | --- | --- | --- |")
    for run, clips, seconds, rate, per_core in rows:
        print(f"| {run} | {clips} | {seconds:.1f} | {rate:.2f} | {per_core:.2f} |")
    print(
        f"\nin process, one video, no Beam: {one:.2f} clips/s (wall), {per_cpu_second:.2f} clips "
        "per CPU-second (the figure other jobs on the machine disturb least)"
    )


if __name__ == "__main__":
    app.run(main)
