r"""Converts a Table 1 benchmark, as downloaded, into TFRecords and a split index (README "Table 1").

    python tools/build_benchmark.py --benchmark=ucf101 --root=/data/ucf101 \
        --out_dir=/data/benchmarks/ucf101 --num_workers=2

--benchmark: ucf101, hmdb51, esc50, youcook2, msrvtt or kinetics400; --root: where its archives
were unpacked (the layouts are in vatt_gh/data/benchmarks.py and docs/evaluation.md).
Writes <out_dir>/<group>-NNNNN-of-NNNNN.tfrecord (one record per video, per YouCook2 segment or
per ESC50 .wav; Kinetics-400: train-* and val-*) and <out_dir>/index.json (classes, the official
splits / folds as clip ids, missing and undecodable files). Prints what it found, progress with
files/s, and the files that are missing or could not be decoded (listed, never fatal). A re-run
skips finished shards. Evaluate the row with tools/evaluate.py --benchmarks_dir.
"""

import os

from absl import app, flags

from vatt_gh import console

console.define_verbose_flag()
flags.adopt_module_key_flags(console)  # --verbose, listed by --help
FLAGS = flags.FLAGS
BENCHMARKS = ("ucf101", "hmdb51", "esc50", "youcook2", "msrvtt", "kinetics400")
flags.DEFINE_enum("benchmark", None, BENCHMARKS, "Which benchmark --root holds.")
flags.DEFINE_string("root", None, "The benchmark's directory as downloaded and unpacked.")
flags.DEFINE_string("out_dir", None, "Output directory (shards and index.json).")
flags.DEFINE_float("fps", 10.0, "Stored frame rate (match the evaluation's EvalConfig.fps).")
flags.DEFINE_integer("short_side", 256, "Frames are resized to this short side (0: keep).")
flags.DEFINE_integer("jpeg_quality", 90, "JPEG quality of the frames.")
flags.DEFINE_integer("videos_per_shard", 32, "Media files per output shard.")
flags.DEFINE_integer("num_workers", 2, "Worker processes (shards are built in parallel).")
flags.mark_flags_as_required(["benchmark", "root", "out_dir"])
for _name, _ok, _what in (
    ("fps", lambda v: 0 < v < float("inf"), "a positive number"),
    ("short_side", lambda v: v >= 0, ">= 0"),
    ("jpeg_quality", lambda v: 1 <= v <= 100, "in 1..100"),
    ("videos_per_shard", lambda v: v >= 1, ">= 1"),
    ("num_workers", lambda v: v >= 1, ">= 1"),
):
    flags.register_validator(_name, _ok, message=f"--{_name} must be {_what}")


def main(argv):
    del argv
    console.quiet(FLAGS.verbose)
    from vatt_gh.data import benchmarks  # no TensorFlow: a bad layout fails fast

    if os.path.abspath(FLAGS.out_dir) == os.path.abspath(FLAGS.root):
        raise SystemExit("error: --out_dir must differ from --root (the download is read-only)")
    try:
        listing = benchmarks.list_benchmark(FLAGS.benchmark, FLAGS.root)
    except benchmarks.LayoutError as e:
        raise SystemExit(f"error: {e}") from None
    for line in listing.summary():
        console.say(line)
    from vatt_gh.data import benchmark_build

    config = benchmark_build.EncodeConfig(
        fps=FLAGS.fps,
        short_side=FLAGS.short_side,
        jpeg_quality=FLAGS.jpeg_quality,
        videos_per_shard=FLAGS.videos_per_shard,
    )
    index = benchmark_build.build_benchmark(
        listing, FLAGS.out_dir, config, FLAGS.num_workers, say=console.say
    )
    for line in benchmark_build.format_summary(index):
        console.say(line)
    console.say(f"index written to {os.path.join(FLAGS.out_dir, benchmark_build.INDEX)}")


if __name__ == "__main__":
    app.run(main)
