r"""Builds sharded TFRecord clips from video files and HowTo100M-style narrations.

Example:
  .venv/bin/python tools/build_dataset.py --videos=/data/howto/videos \
      --captions=/data/howto/raw_caption.json --out_dir=/data/howto/tfrecords \
      --fps=10 --short_side=256 --clip_seconds=4 --num_workers=2

--videos: directories or glob patterns (comma separated) of mp4 / webm / mkv files.
--captions: CSV (video_id,start,end,text) or JSON ({video_id: {start: [], end: [], text: []}}).
Re-running the same command skips finished shards; files that cannot be decoded are listed in
the summary at the end (and in each shard's .json sidecar).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # a bare checkout

from absl import app, flags

from vatt_gh.data import builder

FLAGS = flags.FLAGS
flags.DEFINE_list("videos", None, "Directories or glob patterns of video files.")
flags.DEFINE_string("captions", None, "Narrations: CSV or JSON (HowTo100M layout).")
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


def main(argv):
    del argv
    config = builder.BuildConfig(
        fps=FLAGS.fps,
        short_side=FLAGS.short_side,
        clip_seconds=FLAGS.clip_seconds,
        min_clip_seconds=FLAGS.min_clip_seconds,
        neighbours=FLAGS.neighbours,
        jpeg_quality=FLAGS.jpeg_quality,
        videos_per_shard=FLAGS.videos_per_shard,
        prefix=FLAGS.prefix,
    )
    videos = builder.find_videos(FLAGS.videos)
    if not videos:
        raise app.UsageError(f"no mp4/webm/mkv files match {FLAGS.videos}")
    summary = builder.build_dataset(
        videos, FLAGS.captions, FLAGS.out_dir, config, num_workers=FLAGS.num_workers
    )
    print(builder.format_summary(summary))


if __name__ == "__main__":
    app.run(main)
