"""Real videos + HowTo100M-style narrations -> sharded TFRecord clips (`schema` layout).

A video is cut into consecutive clips of `clip_seconds` (a last shorter clip is kept if it lasts at
least `min_clip_seconds`). A clip's captions are the narrations overlapping it plus `neighbours`
narrations before and after, in time order; a clip no narration overlaps has no text. Frames are
resampled to `fps` with the short side `short_side`, JPEG-encoded; audio is mono 48 kHz.

Shards are independent jobs: each is written to `<name>.tmp`, renamed when complete, and then a
`<name>.json` sidecar (clip count, failed files) marks it finished, so a re-run skips it. A video
that cannot be decoded is recorded in the sidecar and in the final summary; the rest carry on.
"""

import csv
import dataclasses
import json
import multiprocessing
import os
from typing import Dict, List, Optional, Sequence, Tuple

import tensorflow as tf

from vatt_gh.data import schema

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv")
Narration = Tuple[float, float, str]


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


def load_captions(path: str) -> Dict[str, List[Narration]]:
    """video id -> [(start, end, text)] sorted by start.

    CSV: columns video_id, start, end, text (one row per narration). JSON: HowTo100M's
    `{video_id: {"start": [...], "end": [...], "text": [...]}}` or `{video_id: [{start, end, text}]}`.
    """
    out: Dict[str, List[Narration]] = {}
    with tf.io.gfile.GFile(path) as f:
        if path.endswith(".json"):
            for vid, value in json.load(f).items():
                if isinstance(value, dict):
                    rows = zip(value["start"], value["end"], value["text"])
                else:
                    rows = ((r["start"], r["end"], r["text"]) for r in value)
                out[vid] = [(float(s), float(e), str(t)) for s, e, t in rows]
        else:
            for row in csv.DictReader(f):
                out.setdefault(row["video_id"], []).append(
                    (float(row["start"]), float(row["end"]), row["text"])
                )
    return {vid: sorted(rows) for vid, rows in out.items()}


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


def clip_captions(
    narrations: Sequence[Narration], t0: float, t1: float, neighbours: int
) -> List[str]:
    """Narrations overlapping [t0, t1) plus `neighbours` on each side; [] if none overlaps."""
    hits = [i for i, (s, e, text) in enumerate(narrations) if s < t1 and e > t0 and text.strip()]
    if not hits:
        return []
    lo, hi = max(hits[0] - neighbours, 0), min(hits[-1] + neighbours + 1, len(narrations))
    return [text for _, _, text in narrations[lo:hi] if text.strip()]


def video_clips(path: str, narrations: Sequence[Narration], config: BuildConfig):
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
            clip_captions(narrations, t0, t1, config.neighbours),
            audio_chunk=int(round(samples_per_frame)),
        )


def shard_paths(out_dir: str, prefix: str, index: int, num_shards: int) -> Tuple[str, str]:
    name = os.path.join(out_dir, f"{prefix}-{index:05d}-of-{num_shards:05d}.tfrecord")
    return name, name + ".json"


def build_shard(job) -> dict:
    """Writes one shard (temp name, then atomic rename); returns its sidecar contents."""
    videos, captions, out_dir, index, num_shards, config = job
    final, sidecar = shard_paths(out_dir, config.prefix, index, num_shards)
    if tf.io.gfile.exists(sidecar):
        with tf.io.gfile.GFile(sidecar) as f:
            return dict(json.load(f), skipped=True)
    failed, num_clips = [], 0
    tmp = final + ".tmp"
    with tf.io.TFRecordWriter(tmp) as writer:
        for path in videos:
            try:
                examples = list(video_clips(path, captions.get(video_id(path), []), config))
            except Exception as e:  # any decoder failure
                failed.append([path, f"{type(e).__name__}: {e}"])
                continue
            for example in examples:
                writer.write(example.SerializeToString())
            num_clips += len(examples)
    tf.io.gfile.rename(tmp, final, overwrite=True)
    info = dict(shard=final, num_clips=num_clips, videos=len(videos), failed=failed)
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
) -> dict:
    """Builds all shards (in parallel over shards); returns a summary dict.

    summary: shards (paths), num_clips, written / skipped shard counts, failed [(file, error)].
    """
    if not videos:
        raise ValueError("no video files given")
    captions = load_captions(captions_path) if captions_path else {}
    tf.io.gfile.makedirs(out_dir)
    num_shards = max(1, -(-len(videos) // config.videos_per_shard))
    jobs = [
        (
            list(videos[i::num_shards]),
            {video_id(v): captions.get(video_id(v), []) for v in videos[i::num_shards]},
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
        failed=[tuple(f) for r in results for f in r["failed"]],
    )


def format_summary(summary: dict) -> str:
    lines = [
        f"{summary['num_clips']} clips in {len(summary['shards'])} shard(s) "
        f"({summary['written']} written, {summary['skipped']} already finished)"
    ]
    if summary["failed"]:
        lines.append(f"{len(summary['failed'])} file(s) could not be decoded:")
        lines.extend(f"  {path}: {error}" for path, error in summary["failed"])
    else:
        lines.append("no file failed")
    return "\n".join(lines)
