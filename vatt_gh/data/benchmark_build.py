"""A benchmark `Listing` -> sharded TFRecords (`schema` layout) and `index.json`.

Three steps, each a plain function of its inputs (so they map onto a Beam pipeline: a Create of
the tasks, a Map of `encode_task`, a sink of shards):

  list     `benchmarks.list_benchmark(name, root)`: tasks (one per media file) and splits
  encode   `encode_task(task, config)`: decode the file once (PyAV), one record per clip
           (a YouCook2 video gives one record per annotated segment; an ESC50 .wav an
           audio-only record: audio and label, no frames)
  write    tasks are grouped into shards of `videos_per_shard` files (per `Task.group`); each
           shard is written to `<name>.tmp`, renamed when complete, then its `<name>.json`
           sidecar (its files, clips, failed files) marks it done: a re-run skips a finished
           shard unless its file list changed (a file downloaded since) or a file failed

Records are written once per file; which split or fold a clip belongs to is kept apart, in
`<out_dir>/index.json` (benchmark, kind, classes, splits of clip ids, missing and failed files),
so features are extracted once per clip and reused across the three splits or five folds.
Shards are built by `num_workers` processes; a progress line reports files/s.
"""

import dataclasses
import json
import multiprocessing
import os
import re
import time
from typing import Callable, List, Optional, Sequence

import tensorflow as tf

from vatt_gh.data import benchmarks, schema

INDEX = "index.json"


@dataclasses.dataclass(frozen=True)
class EncodeConfig:
    fps: float = 10.0
    short_side: int = 256
    jpeg_quality: int = 90
    videos_per_shard: int = 32

    def __post_init__(self):
        if not 0 < self.fps < float("inf") or self.videos_per_shard < 1:
            raise ValueError(
                f"EncodeConfig: fps must be positive and videos_per_shard >= 1, got "
                f"{self.fps!r}, {self.videos_per_shard!r}"
            )
        if self.short_side < 0 or not 1 <= self.jpeg_quality <= 100:
            raise ValueError(
                f"EncodeConfig: short_side >= 0 and jpeg_quality in 1..100, got "
                f"{self.short_side!r}, {self.jpeg_quality!r}"
            )


def encode_task(task: benchmarks.Task, config: EncodeConfig) -> List[tf.train.SequenceExample]:
    """The records of one task's clips (raises on an undecodable file)."""
    from vatt_gh.data import video_io  # PyAV only here

    if task.audio_only:
        audio = video_io.decode_audio(task.path)
        clip = task.clips[0]
        return [
            schema.make_sequence_example(
                clip.clip_id, [], audio, clip.captions, clip.labels, audio_only=True
            )
        ]
    records = []
    samples_per_frame = int(round(schema.SAMPLE_RATE / config.fps))
    for clip in task.clips:
        frames, audio = video_io.decode_video(
            task.path, config.fps, config.short_side, start=clip.start, end=clip.end
        )
        records.append(
            schema.make_sequence_example(
                clip.clip_id,
                video_io.encode_jpegs(frames, config.jpeg_quality),
                audio,
                clip.captions,
                clip.labels,
                audio_chunk=samples_per_frame,
            )
        )
    return records


def shard_name(out_dir: str, group: str, index: int, count: int) -> str:
    return os.path.join(out_dir, f"{group}-{index:05d}-of-{count:05d}.tfrecord")


def build_shard(job) -> dict:
    """Writes one shard (temp name, then rename) unless its sidecar exists; returns the sidecar."""
    tasks, path, config = job
    sidecar = path + ".json"
    paths = [task.path for task in tasks]
    if tf.io.gfile.exists(sidecar):
        with tf.io.gfile.GFile(sidecar) as f:
            done = json.load(f)
        if done.get("paths") == paths and not done.get("failed"):
            return dict(done, skipped=True)  # else: files changed or one failed, rebuild
    failed, clips = [], []
    with tf.io.TFRecordWriter(path + ".tmp") as writer:
        for task in tasks:
            for clip in task.clips:  # a segment past a video's end fails alone
                try:
                    records = encode_task(dataclasses.replace(task, clips=(clip,)), config)
                except Exception as e:  # any decoder failure: listed, the rest carry on
                    where = task.path if len(task.clips) == 1 else f"{task.path} [{clip.clip_id}]"
                    failed.append([where, f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"])
                    continue
                for record in records:
                    writer.write(record.SerializeToString())
                clips.append(clip.clip_id)
    tf.io.gfile.rename(path + ".tmp", path, overwrite=True)
    info = dict(
        shard=os.path.basename(path), files=len(tasks), paths=paths, clips=clips, failed=failed
    )
    with tf.io.gfile.GFile(sidecar + ".tmp", "w") as f:
        json.dump(info, f)
    tf.io.gfile.rename(sidecar + ".tmp", sidecar, overwrite=True)
    return dict(info, skipped=False)


def shard_jobs(tasks: Sequence[benchmarks.Task], out_dir: str, config: EncodeConfig) -> list:
    """(tasks, shard path, config) per shard; tasks keep their listed order within a group."""
    groups = {}
    for task in tasks:
        groups.setdefault(task.group, []).append(task)
    jobs = []
    for group, members in sorted(groups.items()):
        per = config.videos_per_shard
        count = -(-len(members) // per)
        for i in range(count):
            jobs.append(
                (members[i * per : (i + 1) * per], shard_name(out_dir, group, i, count), config)
            )
    return jobs


_SHARD = re.compile(r"^[\w.]+-\d{5}-of-\d{5}\.tfrecord$")


def _ours(shard: str) -> bool:
    """Whether this builder wrote `shard` (its sidecar lists the files: build_dataset's do not)."""
    try:
        with tf.io.gfile.GFile(shard + ".json") as f:
            return "paths" in json.load(f)
    except (tf.errors.OpError, ValueError):
        return False


def _remove_stale_shards(out_dir: str, current) -> List[str]:
    """Removes this builder's shards (and sidecars) in out_dir that the current build did not
    produce (a changed file list renumbers the shards); other files are left alone."""
    stale = sorted(
        name
        for name in tf.io.gfile.listdir(out_dir)
        if _SHARD.match(name) and name not in current and _ours(os.path.join(out_dir, name))
    )
    for name in stale:
        for suffix in ("", ".json"):
            if tf.io.gfile.exists(os.path.join(out_dir, name + suffix)):
                tf.io.gfile.remove(os.path.join(out_dir, name + suffix))
    return stale


def build_benchmark(
    listing: benchmarks.Listing,
    out_dir: str,
    config: EncodeConfig = EncodeConfig(),
    num_workers: int = 1,
    say: Optional[Callable[[str], None]] = None,
) -> dict:
    """Writes every shard (in parallel over shards) and index.json; returns the index."""
    tf.io.gfile.makedirs(out_dir)
    jobs = shard_jobs(listing.tasks, out_dir, config)
    total_files = sum(len(job[0]) for job in jobs)
    start, done_files, results = time.time(), 0, []
    pool = None
    if num_workers > 1 and len(jobs) > 1:
        pool = multiprocessing.get_context("spawn").Pool(min(num_workers, len(jobs)))
        results_iter = pool.imap_unordered(build_shard, jobs)
    else:
        results_iter = map(build_shard, jobs)
    try:
        for info in results_iter:
            results.append(info)
            done_files += info["files"]
            if say is not None:
                elapsed = max(time.time() - start, 1e-6)
                written = sum(r["files"] for r in results if not r["skipped"])
                say(
                    f"  shard {len(results)}/{len(jobs)}  files {done_files}/{total_files}  "
                    f"{written / elapsed:.1f} files/s"
                    + (
                        f"  ({sum(r['skipped'] for r in results)} already done)"
                        if info["skipped"]
                        else ""
                    )
                )
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    results.sort(key=lambda r: r["shard"])
    stale = _remove_stale_shards(out_dir, {r["shard"] for r in results})
    if stale and say is not None:
        say(f"  removed {len(stale)} shard(s) of an earlier, different file list: {stale[:3]}")
    failed = [tuple(f) for r in results for f in r["failed"]]
    index = dict(
        benchmark=listing.benchmark,
        kind=listing.kind,
        classes=listing.classes,
        splits=listing.splits,
        shards=[r["shard"] for r in results],
        num_clips=sum(len(r["clips"]) for r in results),
        missing=listing.missing,
        failed=failed,
        fps=config.fps,
        seconds=round(time.time() - start, 1),
        written=sum(not r["skipped"] for r in results),
        skipped=sum(r["skipped"] for r in results),
    )
    with tf.io.gfile.GFile(os.path.join(out_dir, INDEX + ".tmp"), "w") as f:
        json.dump(index, f, indent=1)
    tf.io.gfile.rename(
        os.path.join(out_dir, INDEX + ".tmp"), os.path.join(out_dir, INDEX), overwrite=True
    )
    return index


def read_index(directory: str) -> dict:
    """`index.json` of a built benchmark (ValueError naming the file when absent or broken)."""
    path = os.path.join(directory, INDEX)
    if not tf.io.gfile.exists(path):
        raise ValueError(f"{path}: not found (build it with tools/build_benchmark.py)")
    try:
        with tf.io.gfile.GFile(path) as f:
            index = json.load(f)
        index["splits"], index["shards"]
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a benchmark index ({type(e).__name__}: {e})") from None
    return index


def format_summary(index: dict) -> List[str]:
    lines = [
        f"{index['num_clips']} clip(s) in {len(index['shards'])} shard(s) "
        f"({index['written']} written, {index['skipped']} already finished) in "
        f"{index['seconds']:g} s"
    ]
    if index["failed"]:
        lines.append(f"{len(index['failed'])} file(s) could not be decoded:")
        lines.extend(f"  {path}: {error}" for path, error in index["failed"])
    else:
        lines.append("no file failed to decode")
    if index["missing"]:
        lines.append(f"{len(index['missing'])} listed file(s) missing on disk (see index.json)")
    return lines
