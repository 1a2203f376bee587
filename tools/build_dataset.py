r"""Builds sharded TFRecord clips from video files and their narrations (README "## Data").

An Apache Beam pipeline (`vatt_gh/data/beam_build.py`): on this machine with the DirectRunner
(`--direct_num_workers` processes), at scale with any Beam runner; every Beam pipeline option
passes through. HowTo100M (narration table), AudioSet (no text), YouTube-8M (ASR captions next
to the videos):
  python tools/build_dataset.py --videos=/data/howto/videos \
      --captions=/data/howto/raw_caption.json --out_dir=/data/howto/tfrecords \
      --fps=10 --short_side=256 --clip_seconds=4 --direct_num_workers=2
  python tools/build_dataset.py --videos=/data/audioset/videos \
      --out_dir=/data/audioset/tfrecords --fps=25 --clip_seconds=10
  python tools/build_dataset.py --videos=gs://BUCKET/howto/videos \
      --captions=gs://BUCKET/howto/raw_caption.json --out_dir=gs://BUCKET/howto/tfrecords \
      --runner=DataflowRunner --project=PROJECT --region=us-central1 \
      --temp_location=gs://BUCKET/tmp --setup_file=./setup.py --max_num_workers=100

--videos: directories or glob patterns (comma separated) of mp4 / webm / mkv files.
--captions: CSV (video_id,start,end,text) or JSON ({video_id: {start: [], end: [], text: []}}).
  A video the table lacks (or every video, without --captions) takes its narrations from the
  WebVTT / SRT file next to it: <id>.<caption_language>.vtt|srt, else <id>.vtt|srt (YouTube's
  rolling automatic captions are de-duplicated).
--labels: CSV (video_id,labels with indices separated by spaces) or JSON ({video_id: [indices]}),
  e.g. YouTube-8M vocabulary indices; stored in every clip as clip/label/index.
Re-running the same command skips finished shards (each has a .json sidecar); files that cannot
be decoded, or whose captions cannot be parsed, are listed in the summary at the end and in
<out_dir>/<prefix>-failures.jsonl. On this machine (DirectRunner, local --out_dir) the worker
processes' log goes to <out_dir>/<prefix>-workers.log unless --verbose.
"""

import contextlib
import logging
import os
import sys

from absl import app, flags

from vatt_gh import console

console.define_verbose_flag()
flags.adopt_module_key_flags(console)  # --verbose, listed by --help
FLAGS = flags.FLAGS
flags.DEFINE_list("videos", None, "Directories or glob patterns of video files.")
flags.DEFINE_string(
    "captions", None, "Narration table: CSV or JSON (HowTo100M layout); else subtitle files."
)
flags.DEFINE_string("caption_language", "en", "Subtitle files <id>.<language>.vtt|srt first.")
flags.DEFINE_string("labels", None, "Video labels: CSV (video_id,labels) or JSON.")
flags.DEFINE_string("out_dir", None, "Output directory for the shards.")
flags.DEFINE_float("fps", 10.0, "Stored frame rate.")
flags.DEFINE_integer("short_side", 256, "Frames are resized to this short side (0: keep).")
flags.DEFINE_float("clip_seconds", 4.0, "Length of a clip (one record).")
flags.DEFINE_float("min_clip_seconds", 1.0, "A shorter last clip of a video is dropped.")
flags.DEFINE_integer("neighbours", 2, "Neighbouring narrations kept on each side.")
flags.DEFINE_integer("jpeg_quality", 90, "JPEG quality of the frames.")
flags.DEFINE_integer("videos_per_shard", 16, "Videos per output shard.")
flags.DEFINE_string("prefix", "clips", "Shard file name prefix.")
flags.DEFINE_string(
    "runner",
    "DirectRunner",
    "Beam runner: DirectRunner (this machine), DataflowRunner, FlinkRunner, SparkRunner, ...; "
    "any other Beam pipeline option (--project, --region, --temp_location, --setup_file, ...) "
    "is passed through.",
)
flags.DEFINE_integer(
    "direct_num_workers", 2, "DirectRunner: worker processes (shards are built in parallel)."
)
flags.DEFINE_float(
    "progress_seconds", 10.0, "DirectRunner: seconds between progress lines (0: none)."
)
flags.mark_flags_as_required(["videos", "out_dir"])
for _name, _ok, _what in (
    ("fps", lambda v: 0 < v < float("inf"), "a positive number"),
    ("clip_seconds", lambda v: 0 < v < float("inf"), "a positive number"),
    ("min_clip_seconds", lambda v: 0 <= v < float("inf"), ">= 0"),
    ("short_side", lambda v: v >= 0, ">= 0"),
    ("neighbours", lambda v: v >= 0, ">= 0"),
    ("jpeg_quality", lambda v: 1 <= v <= 100, "in 1..100"),
    ("videos_per_shard", lambda v: v >= 1, ">= 1"),
    ("direct_num_workers", lambda v: v >= 1, ">= 1"),
    ("progress_seconds", lambda v: 0 <= v < float("inf"), ">= 0"),
):
    flags.register_validator(_name, _ok, message=f"--{_name} must be {_what}")


def parse_flags(argv):
    """Our flags; every other --option is Beam's (returned for main)."""
    try:
        return FLAGS(argv, known_only=True)
    except flags.Error as e:
        sys.exit(f"FATAL Flags parsing error: {e}\nPass --helpshort or --helpfull to see help.")


def quiet_beam() -> list:
    """Beam's start-up notes off (no GCS / BigQuery client, Python-version warnings, the
    DirectRunner workers' INFO log), here and in the worker processes; returns Beam options."""
    os.environ.setdefault("PYTHONWARNINGS", "ignore")  # inherited by the worker processes
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the import's notes go to the root logger
    import apache_beam  # noqa: F401

    root.setLevel(level)
    logging.getLogger("apache_beam").setLevel(logging.ERROR)
    return ["--default_sdk_harness_log_level=ERROR"]


@contextlib.contextmanager
def worker_log(path):
    """The process's stderr (file descriptor 2, which the DirectRunner's worker processes
    inherit: their TensorFlow and Beam start-up notes) appended to `path` meanwhile."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 2)
    try:
        yield
    except ValueError:  # bad input, named in one line: nothing in the log about it
        raise
    except BaseException:
        sys.stderr.flush()
        os.dup2(saved, 2)
        print(f"(the workers' log: {path})", file=sys.stderr)
        raise
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def main(argv):
    console.quiet(FLAGS.verbose)
    beam_args = ([] if FLAGS.verbose else quiet_beam()) + argv[1:]
    from vatt_gh.data import builder  # TensorFlow and Beam: after the flags, so --help stays fast

    try:
        config = builder.BuildConfig(
            fps=FLAGS.fps,
            short_side=FLAGS.short_side,
            clip_seconds=FLAGS.clip_seconds,
            min_clip_seconds=FLAGS.min_clip_seconds,
            neighbours=FLAGS.neighbours,
            jpeg_quality=FLAGS.jpeg_quality,
            videos_per_shard=FLAGS.videos_per_shard,
            prefix=FLAGS.prefix,
            caption_language=FLAGS.caption_language,
        )
    except ValueError as e:  # a bad flag value: one line naming it
        raise SystemExit(f"error: {e}") from None
    videos = builder.find_videos(FLAGS.videos)
    if not videos:
        raise app.UsageError(f"no mp4/webm/mkv files match {FLAGS.videos}")
    pipeline_args = [
        f"--runner={FLAGS.runner}",
        f"--direct_num_workers={FLAGS.direct_num_workers}",
        *beam_args,
    ]
    direct = FLAGS.runner == "DirectRunner"
    log = contextlib.nullcontext()
    if direct and "://" not in FLAGS.out_dir and not FLAGS.verbose:
        os.makedirs(FLAGS.out_dir, exist_ok=True)
        log = worker_log(os.path.join(FLAGS.out_dir, f"{FLAGS.prefix}-workers.log"))
    try:
        with log:
            summary = builder.build_dataset(
                videos,
                FLAGS.captions,
                FLAGS.out_dir,
                config,
                pipeline_args=pipeline_args,
                labels_path=FLAGS.labels,
                say=console.say if direct and FLAGS.progress_seconds else None,
                progress_interval=FLAGS.progress_seconds,
            )
    except ValueError as e:  # a bad table, label file or pipeline option: one line naming it
        raise SystemExit(f"error: {e}") from None
    print(builder.format_summary(summary))


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
