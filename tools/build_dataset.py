r"""Builds sharded TFRecord clips from video files and their narrations (README "## Data").

HowTo100M (narration table), AudioSet (no text), YouTube-8M (ASR captions next to the videos):
  python tools/build_dataset.py --videos=/data/howto/videos \
      --captions=/data/howto/raw_caption.json --out_dir=/data/howto/tfrecords \
      --fps=10 --short_side=256 --clip_seconds=4 --num_workers=2
  .venv/bin/python tools/build_dataset.py --videos=/data/audioset/videos \
      --out_dir=/data/audioset/tfrecords --fps=25 --clip_seconds=10
  .venv/bin/python tools/build_dataset.py --videos=/data/yt8m/videos \
      --labels=/data/yt8m/labels.csv --out_dir=/data/yt8m/tfrecords --fps=10 --clip_seconds=5

--videos: directories or glob patterns (comma separated) of mp4 / webm / mkv files.
--captions: CSV (video_id,start,end,text) or JSON ({video_id: {start: [], end: [], text: []}}).
  A video the table lacks (or every video, without --captions) takes its narrations from the
  WebVTT / SRT file next to it: <id>.<caption_language>.vtt|srt, else <id>.vtt|srt (YouTube's
  rolling automatic captions are de-duplicated).
--labels: CSV (video_id,labels with indices separated by spaces) or JSON ({video_id: [indices]}),
  e.g. YouTube-8M vocabulary indices; stored in every clip as clip/label/index.
Re-running the same command skips finished shards; files that cannot be decoded are listed in
the summary at the end (and in each shard's .json sidecar).
"""

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
flags.DEFINE_integer("num_workers", 2, "Worker processes (shards are built in parallel).")
flags.mark_flags_as_required(["videos", "out_dir"])
for _name, _ok, _what in (
    ("fps", lambda v: 0 < v < float("inf"), "a positive number"),
    ("clip_seconds", lambda v: 0 < v < float("inf"), "a positive number"),
    ("min_clip_seconds", lambda v: 0 <= v < float("inf"), ">= 0"),
    ("short_side", lambda v: v >= 0, ">= 0"),
    ("neighbours", lambda v: v >= 0, ">= 0"),
    ("jpeg_quality", lambda v: 1 <= v <= 100, "in 1..100"),
    ("videos_per_shard", lambda v: v >= 1, ">= 1"),
):
    flags.register_validator(_name, _ok, message=f"--{_name} must be {_what}")


def main(argv):
    del argv
    console.quiet(FLAGS.verbose)
    from vatt_gh.data import builder  # TensorFlow: after the flags, so --help stays fast

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
    try:
        summary = builder.build_dataset(
            videos,
            FLAGS.captions,
            FLAGS.out_dir,
            config,
            num_workers=FLAGS.num_workers,
            labels_path=FLAGS.labels,
        )
    except ValueError as e:  # a bad narration table or label file: one line naming it
        raise SystemExit(f"error: {e}") from None
    print(builder.format_summary(summary))


if __name__ == "__main__":
    app.run(main)
