"""Real videos + their narrations -> sharded TFRecord clips (`schema` layout).

A video is cut into consecutive clips of `clip_seconds` (a last shorter clip is kept if it lasts at
least `min_clip_seconds`). A video's narrations come from the table given (HowTo100M's CSV/JSON)
or, for a video the table lacks, from the WebVTT/SRT file next to it (`captions.sidecar_file`,
e.g. YouTube's automatic captions); a video with neither has no text (AudioSet). A clip's captions
are the narrations overlapping it plus `neighbours` narrations before and after, in time order; a
clip no narration overlaps has no text. Video-level labels (optional) go to every clip of the
video. Frames are resampled to `fps` with the short side `short_side`, JPEG-encoded; audio is mono
48 kHz.

Shards are independent jobs: each is written to `<name>.tmp`, renamed when complete, and then a
`<name>.json` sidecar (clip count, failed files) marks it finished, so a re-run skips it. A video
that cannot be decoded is recorded in the sidecar and in the final summary; the rest carry on.
"""

import dataclasses
import json
import multiprocessing
import os
from typing import List, Optional, Sequence, Tuple

import tensorflow as tf

from vatt_gh.data import captions as captions_lib
from vatt_gh.data import schema

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv")


@dataclasses.dataclass(frozen=True)
class BuildConfig:
    fps: float = 10.0
    short_side: int = 256
    clip_seconds: float = 4.0
    min_clip_seconds: float = 1.0
    neighbours: int = 2
    jpeg_quality: int = 90
    videos_per_shard: int = 16
    prefix: str = "clips"
    caption_language: str = "en"  # subtitle files <video>.<language>.vtt|srt before <video>.vtt

    def __post_init__(self):
        for name in ("fps", "clip_seconds", "videos_per_shard"):
            value = getattr(self, name)
            if not (value > 0 and value < float("inf")):
                raise ValueError(f"BuildConfig.{name} must be a positive number, got {value!r}")
        if not 0 <= self.min_clip_seconds <= self.clip_seconds:
            raise ValueError(
                f"BuildConfig.min_clip_seconds must be in [0, clip_seconds], "
                f"got {self.min_clip_seconds!r}"
            )
        if (
            not self.prefix
            or self.prefix in (".", "..")
            or any(sep in self.prefix for sep in ("/", "\\", os.sep))
        ):
            raise ValueError(
                f"BuildConfig.prefix {self.prefix!r} must be a plain file name prefix (no "
                "folder, no '..'): shards are written directly in --out_dir"
            )
        if self.neighbours < 0 or self.short_side < 0 or not 1 <= self.jpeg_quality <= 100:
            raise ValueError(
                "BuildConfig: neighbours and short_side must be >= 0, jpeg_quality in 1..100; got "
                f"{self.neighbours}, {self.short_side}, {self.jpeg_quality}"
            )


def find_videos(patterns: Sequence[str]) -> List[str]:
    """Video files (mp4, webm, mkv) from directories or glob patterns, sorted."""
    files = []
    for pattern in patterns:
        if tf.io.gfile.isdir(pattern):
            pattern = os.path.join(pattern, "*")
        files.extend(f for f in tf.io.gfile.glob(pattern) if f.lower().endswith(VIDEO_EXTENSIONS))
    return sorted(set(files))


def video_id(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def video_clips(
    path: str,
    narrations: Sequence[captions_lib.Narration],
    config: BuildConfig,
    labels: Sequence[int] = (),
):
    """SequenceExamples of one video's clips."""
    from vatt_gh.data import video_io  # PyAV only here

    frames, audio = video_io.decode_video(path, config.fps, config.short_side)
    vid = video_id(path)
    per_clip = int(round(config.clip_seconds * config.fps))
    samples_per_frame = schema.SAMPLE_RATE / config.fps
    for k0 in range(0, len(frames), per_clip):
        k1 = min(k0 + per_clip, len(frames))
        if (k1 - k0) / config.fps < config.min_clip_seconds:
            break
        t0, t1 = k0 / config.fps, k1 / config.fps
        jpegs = [tf.io.encode_jpeg(f, quality=config.jpeg_quality).numpy() for f in frames[k0:k1]]
        clip_audio = None
        if audio is not None:
            clip_audio = audio[
                int(round(k0 * samples_per_frame)) : int(round(k1 * samples_per_frame))
            ]
        yield schema.make_sequence_example(
            f"{vid}_{t0:.2f}",
            jpegs,
            clip_audio,
            captions_lib.clip_captions(narrations, t0, t1, config.neighbours),
            labels=labels,
            audio_chunk=int(round(samples_per_frame)),
        )


def shard_paths(out_dir: str, prefix: str, index: int, num_shards: int) -> Tuple[str, str]:
    name = os.path.join(out_dir, f"{prefix}-{index:05d}-of-{num_shards:05d}.tfrecord")
    return name, name + ".json"


def video_narrations(path: str, table: dict, config: BuildConfig) -> list:
    """The video's narrations: its rows in the table, else its subtitle file, else none."""
    vid = video_id(path)
    if vid in table:
        return table[vid]
    subtitles = captions_lib.sidecar_file(path, config.caption_language)
    return captions_lib.read_subtitles(subtitles) if subtitles else []


def build_shard(job) -> dict:
    """Writes one shard (temp name, then atomic rename); returns its sidecar contents."""
    videos, captions, labels, out_dir, index, num_shards, config = job
    final, sidecar = shard_paths(out_dir, config.prefix, index, num_shards)
    if tf.io.gfile.exists(sidecar):
        with tf.io.gfile.GFile(sidecar) as f:
            return dict(json.load(f), skipped=True)
    failed, num_clips, with_text = [], 0, 0
    tmp = final + ".tmp"
    with tf.io.TFRecordWriter(tmp) as writer:
        for path in videos:
            try:
                narrations = video_narrations(path, captions, config)
                vid_labels = labels.get(video_id(path), ())
                examples = list(video_clips(path, narrations, config, vid_labels))
            except Exception as e:  # any decoder or subtitle failure
                failed.append([path, f"{type(e).__name__}: {e}"])
                continue
            for example in examples:
                writer.write(example.SerializeToString())
            num_clips += len(examples)
            with_text += bool(narrations)
    tf.io.gfile.rename(tmp, final, overwrite=True)
    info = dict(
        shard=final, num_clips=num_clips, videos=len(videos), with_text=with_text, failed=failed
    )
    with tf.io.gfile.GFile(sidecar + ".tmp", "w") as f:
        json.dump(info, f)
    tf.io.gfile.rename(sidecar + ".tmp", sidecar, overwrite=True)
    return dict(info, skipped=False)


def build_dataset(
    videos: Sequence[str],
    captions_path: Optional[str],
    out_dir: str,
    config: BuildConfig = BuildConfig(),
    num_workers: int = 1,
    progress: bool = True,
    labels_path: Optional[str] = None,
) -> dict:
    """Builds all shards (in parallel over shards); returns a summary dict.

    captions_path: a narration table (CSV/JSON), or None: subtitle files next to the videos only.
    labels_path: video-level labels (CSV/JSON, `captions.load_labels`), or None.
    summary: shards (paths), num_clips, written / skipped shard counts, videos, with_text (videos
    that had narrations), failed [(file, error)].
    """
    if not videos:
        raise ValueError("no video files given")
    for flag, path in (("captions", captions_path), ("labels", labels_path)):
        if path and not tf.io.gfile.exists(path):
            raise ValueError(f"--{flag} file {path!r} does not exist")
    captions = captions_lib.load_table(captions_path) if captions_path else {}
    labels = captions_lib.load_labels(labels_path) if labels_path else {}
    tf.io.gfile.makedirs(out_dir)
    num_shards = max(1, -(-len(videos) // config.videos_per_shard))
    jobs = [
        (
            list(videos[i::num_shards]),
            {
                video_id(v): captions[video_id(v)]
                for v in videos[i::num_shards]
                if video_id(v) in captions
            },
            {
                video_id(v): labels[video_id(v)]
                for v in videos[i::num_shards]
                if video_id(v) in labels
            },
            out_dir,
            i,
            num_shards,
            config,
        )
        for i in range(num_shards)
    ]
    bar = None
    if progress:
        import tqdm

        bar = tqdm.tqdm(total=num_shards, unit="shard", desc="build_dataset")
    results = []
    if num_workers <= 1:
        results_iter = map(build_shard, jobs)
        pool = None
    else:
        pool = multiprocessing.get_context("spawn").Pool(num_workers)
        results_iter = pool.imap_unordered(build_shard, jobs)
    try:
        for info in results_iter:
            results.append(info)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(clips=sum(r["num_clips"] for r in results))
    finally:
        if pool is not None:
            pool.close()
            pool.join()
        if bar is not None:
            bar.close()
    results.sort(key=lambda r: r["shard"])
    return dict(
        shards=[r["shard"] for r in results],
        num_clips=sum(r["num_clips"] for r in results),
        written=sum(not r["skipped"] for r in results),
        skipped=sum(r["skipped"] for r in results),
        videos=sum(r["videos"] for r in results),
        with_text=sum(r.get("with_text", 0) for r in results),
        failed=[tuple(f) for r in results for f in r["failed"]],
    )


def format_summary(summary: dict) -> str:
    lines = [
        f"{summary['num_clips']} clips in {len(summary['shards'])} shard(s) "
        f"({summary['written']} written, {summary['skipped']} already finished)",
        f"{summary['with_text']} of {summary['videos']} video(s) had narrations",
    ]
    if summary["failed"]:
        lines.append(f"{len(summary['failed'])} file(s) could not be decoded:")
        lines.extend(f"  {path}: {error}" for path, error in summary["failed"])
    else:
        lines.append("no file failed")
    return "\n".join(lines)
