"""Real videos + their narrations -> sharded TFRecord clips (`schema` layout).

A video is cut into consecutive clips of `clip_seconds` (a last shorter clip is kept if it lasts at
least `min_clip_seconds`). A video's narrations come from the table given (HowTo100M's CSV/JSON)
or, for a video the table lacks, from the WebVTT/SRT file next to it (`captions.sidecar_file`,
e.g. YouTube's automatic captions); a video with neither has no text (AudioSet). A clip's captions
are the narrations overlapping it plus `neighbours` narrations before and after, in time order; a
clip no narration overlaps has no text. Video-level labels (optional) go to every clip of the
video. Frames are resampled to `fps` with the short side `short_side`, JPEG-encoded; audio is mono
48 kHz.

`video_records(task)` makes one video's records; `build_dataset` runs it over all videos as an
Apache Beam pipeline (`beam_build`: DirectRunner on this machine, Dataflow / Flink / Spark at
scale), which writes the shards, skips finished ones on a re-run, and names every video that
cannot be decoded (or whose subtitle file cannot be parsed) while the rest carry on.
"""

import dataclasses
import os
from typing import Callable, List, Optional, Sequence, Tuple

import tensorflow as tf

from vatt_gh.data import beam_build, schema
from vatt_gh.data import captions as captions_lib

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


@dataclasses.dataclass(frozen=True)
class VideoTask:
    """One video to cut: its path, its narrations (None: read the subtitle file next to it),
    its labels. Picklable: the Beam pipeline ships it to a worker."""

    name: str  # the video's path
    narrations: Optional[Tuple[captions_lib.Narration, ...]]
    labels: Tuple[int, ...]
    config: BuildConfig


def video_records(task: VideoTask) -> beam_build.TaskRecords:
    """The serialized SequenceExamples of one video's clips (THE per-video step of the builder).

    stats: video_ms (decoded length, milliseconds), with_text (1 if the video had narrations).
    Raises for a video that cannot be decoded or a subtitle file that cannot be parsed.
    """
    from vatt_gh.data import video_io  # PyAV only here

    config = task.config
    narrations = task.narrations
    if narrations is None:
        subtitles = captions_lib.sidecar_file(task.name, config.caption_language)
        narrations = captions_lib.read_subtitles(subtitles) if subtitles else []
    frames, audio = video_io.decode_video(task.name, config.fps, config.short_side)
    vid = video_id(task.name)
    per_clip = int(round(config.clip_seconds * config.fps))
    samples_per_frame = schema.SAMPLE_RATE / config.fps
    records = []
    for k0 in range(0, len(frames), per_clip):
        k1 = min(k0 + per_clip, len(frames))
        if (k1 - k0) / config.fps < config.min_clip_seconds:
            break
        t0, t1 = k0 / config.fps, k1 / config.fps
        jpegs = video_io.encode_jpegs(frames[k0:k1], config.jpeg_quality)
        clip_audio = None
        if audio is not None:
            clip_audio = audio[
                int(round(k0 * samples_per_frame)) : int(round(k1 * samples_per_frame))
            ]
        example = schema.make_sequence_example(
            f"{vid}_{t0:.2f}",
            jpegs,
            clip_audio,
            captions_lib.clip_captions(narrations, t0, t1, config.neighbours),
            labels=task.labels,
            audio_chunk=int(round(samples_per_frame)),
        )
        records.append(example.SerializeToString())
    stats = dict(
        video_ms=int(round(1000 * len(frames) / config.fps)), with_text=int(bool(narrations))
    )
    return beam_build.TaskRecords(records, stats)


def video_tasks(
    videos: Sequence[str],
    config: BuildConfig,
    captions_path: Optional[str] = None,
    labels_path: Optional[str] = None,
) -> List[VideoTask]:
    """One task per video, in the order given, with its rows of the narration and label tables.

    captions_path: a narration table (CSV/JSON), or None: subtitle files next to the videos only.
    labels_path: video-level labels (CSV/JSON, `captions.load_labels`), or None.
    """
    for flag, path in (("captions", captions_path), ("labels", labels_path)):
        if path and not tf.io.gfile.exists(path):
            raise ValueError(f"--{flag} file {path!r} does not exist")
    table = captions_lib.load_table(captions_path) if captions_path else {}
    labels = captions_lib.load_labels(labels_path) if labels_path else {}
    return [
        VideoTask(
            name=path,
            narrations=tuple(table[video_id(path)]) if video_id(path) in table else None,
            labels=tuple(labels.get(video_id(path), ())),
            config=config,
        )
        for path in videos
    ]


def build_dataset(
    videos: Sequence[str],
    captions_path: Optional[str],
    out_dir: str,
    config: BuildConfig = BuildConfig(),
    pipeline_args: Sequence[str] = (),
    labels_path: Optional[str] = None,
    say: Optional[Callable[[str], None]] = None,
    progress_interval: float = 10.0,
) -> dict:
    """Builds all shards with the Beam pipeline (`beam_build.run`); returns its summary.

    pipeline_args: Beam options (default: DirectRunner, 2 worker processes). say: prints the
    progress lines (None: quiet). summary: shards, num_clips, written / skipped shard counts,
    videos, with_text (videos that had narrations), video_ms, failed [(file, reason)],
    failures_file, metrics.
    """
    if not videos:
        raise ValueError("no video files given")
    tasks = video_tasks(videos, config, captions_path, labels_path)
    return beam_build.run(
        tasks,
        video_records,
        out_dir,
        config.prefix,
        config.videos_per_shard,
        pipeline_args,
        say=say,
        progress_interval=progress_interval,
    )


def format_summary(summary: dict) -> str:
    lines = [
        f"{summary['num_clips']} clips in {len(summary['shards'])} shard(s) "
        f"({summary['written']} written, {summary['skipped']} already finished)",
        f"{summary.get('with_text', 0)} of {summary['videos']} video(s) had narrations, "
        f"{summary.get('video_ms', 0) / 1e3:.0f} s ({summary.get('video_ms', 0) / 3600e3:.1f} h) "
        "of video decoded",
    ]
    if summary["failed"]:
        lines.append(
            f"{len(summary['failed'])} file(s) failed (also in {summary['failures_file']}):"
        )
        lines.extend(f"  {path}: {error}" for path, error in summary["failed"])
    else:
        lines.append("no file failed")
    return "\n".join(lines)
