"""Tasks -> sharded TFRecord files, as an Apache Beam pipeline (any runner).

The pipeline is generic over *tasks*: picklable objects with a `name` (a file path: failures are
reported under it), and one function `make_records(task) -> TaskRecords` that turns a task into
its serialized records plus integer statistics. The video builder (`builder.video_records`) is
one such function; a benchmark converter is another ("tasks -> decode + encode one task ->
shards"). `run(tasks, make_records, out_dir, prefix, tasks_per_shard, pipeline_args)` writes the
task list to `<out_dir>/<prefix>-tasks.txt` (one pickled `(index, task)` per line, so the job's
graph stays small for a million videos) and runs

    ReadFromText(task list) -> (shard, task) -> GroupByKey -> WriteShard -> failures
        -> ToList -> failures file

- Shards: the tasks, in the order given, go round-robin to `ceil(n / tasks_per_shard)` shards
  (task i to shard i % num_shards). A shard holds its tasks' records in task order, each task's
  records in the order `make_records` returned them, so a shard's name and bytes depend only on
  the inputs and options: not on the runner, the worker count or the bundle layout. Only the
  small tasks are shuffled; the worker that makes a shard's records writes them.
- Nothing lost, nothing twice: a shard is written to `<shard>.tmp-<random>` and renamed to
  `<prefix>-<i>-of-<n>.tfrecord` when complete; then a `<shard>.json` sidecar (clip and video
  counts, failures, statistics) is published the same way and marks the shard finished. A run
  started again skips every shard whose sidecar exists and rewrites any other from the start;
  a retried or duplicated bundle writes the same bytes under its own temp name. A killed run
  leaves only `.tmp-*` files, which the next run removes before it starts (and every run after it
  finishes). A run into a directory that holds finished shards of the same prefix made from
  other tasks (the task list differs: other videos, tables or options) stops with a ValueError
  before it writes anything: their shards would mix.
- Failures: a task whose `make_records` raises (undecodable video, unparsable captions) is
  skipped with its reason; the job carries on. Failures are listed in the shard's sidecar and in
  `<prefix>-failures.jsonl` (one `{"file", "reason"}` per line, sorted; written by the pipeline,
  skipped shards' failures included).
- Beam metrics (namespace `vatt_gh.build`): counters `videos` (tasks made), `clips`
  (records), `failures`, `shards_written`, `shards_skipped` and each statistic (`video_ms`,
  `with_text` for videos), over the shards this run wrote.
- Progress (`say` given; for a local run): a thread reads each sidecar once as its shard
  finishes and prints shards, videos and clips done, clips/s and failures so far.

Runner options are Beam's own (`--runner`, `--direct_num_workers`, `--project`, `--region`,
`--temp_location`, `--setup_file`, Flink / Spark options...). For the DirectRunner with more
than one worker, `--direct_running_mode=multi_processing` is the default here (one process per
worker: decoding and JPEG encoding hold the GIL in places).
"""

import base64
import dataclasses
import json
import os
import pickle
import threading
import time
import uuid
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import apache_beam as beam
import tensorflow as tf
from apache_beam.options import pipeline_options as beam_options

NAMESPACE = "vatt_gh.build"
SIDECAR_KEYS = ("shard", "num_clips", "videos", "failed")  # the rest: a task's statistics


@dataclasses.dataclass
class TaskRecords:
    """What one task makes: serialized records (in order) and integer statistics."""

    records: List[bytes]
    stats: Dict[str, int] = dataclasses.field(default_factory=dict)


def shard_paths(out_dir: str, prefix: str, index: int, num_shards: int) -> Tuple[str, str]:
    """(shard file, sidecar) of shard `index`."""
    name = os.path.join(out_dir, f"{prefix}-{index:05d}-of-{num_shards:05d}.tfrecord")
    return name, name + ".json"


def failures_path(out_dir: str, prefix: str) -> str:
    return os.path.join(out_dir, f"{prefix}-failures.jsonl")


def tasks_path(out_dir: str, prefix: str) -> str:
    return os.path.join(out_dir, f"{prefix}-tasks.txt")


def num_shards_for(num_tasks: int, tasks_per_shard: int) -> int:
    return max(1, -(-num_tasks // tasks_per_shard))


def _encode_task(index: int, task) -> str:
    return base64.b64encode(pickle.dumps((index, task))).decode("ascii")


def _to_shard(line: str, num_shards: int):
    """A task-list line -> (shard, (index, task)): task i goes to shard i % num_shards."""
    index, task = pickle.loads(base64.b64decode(line))
    return index % num_shards, (index, task)


def _shard_job(group, num_shards: int):
    """(shard, [(index, task)]) -> (shard, num_shards, the shard's tasks in task-list order)."""
    shard, indexed_tasks = group
    return shard, num_shards, [task for _, task in sorted(indexed_tasks, key=lambda t: t[0])]


def _publish(path: str, write: Callable) -> None:
    """Writes `path` through a temp name of its own and renames it: readers see all or nothing."""
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    write(tmp)
    tf.io.gfile.rename(tmp, path, overwrite=True)


def remove_temp_files(out_dir: str, prefix: str) -> int:
    """Removes the `.tmp-*` files of `prefix` that a stopped run left; returns how many."""
    stale = tf.io.gfile.glob(os.path.join(out_dir, f"{prefix}-*.tmp-*"))
    for path in stale:
        tf.io.gfile.remove(path)
    return len(stale)


class WriteShard(beam.DoFn):
    """(index, num_shards, tasks) -> the shard's failures [(file, reason)], written or read back
    from a finished shard's sidecar."""

    def __init__(self, make_records: Callable, out_dir: str, prefix: str):
        self._make_records = make_records
        self._out_dir = out_dir
        self._prefix = prefix
        self._counters = {}

    def _count(self, name: str, value: int) -> None:
        if name not in self._counters:
            self._counters[name] = beam.metrics.Metrics.counter(NAMESPACE, name)
        self._counters[name].inc(int(value))

    def process(self, job):
        index, num_shards, tasks = job
        final, sidecar = shard_paths(self._out_dir, self._prefix, index, num_shards)
        if tf.io.gfile.exists(sidecar):
            with tf.io.gfile.GFile(sidecar) as f:
                info = json.load(f)
            self._count("shards_skipped", 1)
        else:
            info = self._write(final, sidecar, tasks)
            self._count("shards_written", 1)
        for path, reason in info["failed"]:
            yield path, reason

    def _write(self, final: str, sidecar: str, tasks: list) -> dict:
        failed, num_clips, stats = [], 0, {}

        def write(tmp):
            nonlocal num_clips
            with tf.io.TFRecordWriter(tmp) as writer:
                for task in tasks:
                    try:
                        made = self._make_records(task)
                    except Exception as e:  # any decoder or caption failure: named, not fatal
                        failed.append([task.name, f"{type(e).__name__}: {e}"])
                        self._count("failures", 1)
                        continue
                    for record in made.records:
                        writer.write(record)
                    num_clips += len(made.records)
                    for key, value in made.stats.items():
                        stats[key] = stats.get(key, 0) + int(value)
                        self._count(key, value)
                    self._count("videos", 1)
                    self._count("clips", len(made.records))

        _publish(final, write)
        info = dict(stats, shard=final, num_clips=num_clips, videos=len(tasks), failed=failed)
        _publish(sidecar, lambda tmp: _write_text(tmp, json.dumps(info)))
        return info


def _read_text(path: str) -> Optional[str]:
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return f.read()


def _write_text(path: str, text: str) -> None:
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(text)


def _write_failures(failures: list, path: str) -> None:
    lines = "".join(
        json.dumps({"file": file, "reason": reason}) + "\n" for file, reason in sorted(failures)
    )
    _publish(path, lambda tmp: _write_text(tmp, lines))


def pipeline_options(args: Sequence[str]) -> beam_options.PipelineOptions:
    """Beam options from command-line style `args`; DirectRunner with 2 processes by default.

    An argument no Beam option knows (a typo such as --direct_num_worker) is a ValueError: Beam
    itself only logs and drops it.
    """
    args = list(args)
    options = beam_options.PipelineOptions(args)
    parsers = []
    options.get_all_options(add_extra_args_fn=parsers.append)
    unknown = parsers[0].parse_known_args(args)[1]
    if unknown:
        raise ValueError(f"unknown pipeline option(s) {' '.join(unknown)} (Beam's options only)")
    direct = options.view_as(beam_options.DirectOptions)
    if not any(a.startswith("--direct_num_workers") for a in args):
        args.append("--direct_num_workers=2")
        direct.direct_num_workers = 2
    if not any(a.startswith("--direct_running_mode") for a in args):
        mode = "multi_processing" if direct.direct_num_workers > 1 else "in_memory"
        args.append(f"--direct_running_mode={mode}")
    return beam_options.PipelineOptions(args)


def read_sidecars(out_dir: str, prefix: str, known: Optional[dict] = None) -> Dict[str, dict]:
    """Sidecar path -> contents, for the finished shards of `prefix` in `out_dir` (the ones in
    `known` not read again)."""
    infos = {}
    for path in tf.io.gfile.glob(os.path.join(out_dir, f"{prefix}-*-of-*.tfrecord.json")):
        if known and path in known:
            infos[path] = known[path]
            continue
        with tf.io.gfile.GFile(path) as f:
            infos[path] = json.load(f)
    return infos


class Progress:
    """Prints shards / videos / clips done, clips/s and failures from the sidecars while the
    pipeline runs: checked every `interval` seconds, printed when a shard finished (at least
    every 6 intervals). Shards finished before the start count as done, not in the rate."""

    def __init__(self, out_dir: str, prefix: str, num_shards: int, say: Callable, interval=10.0):
        self._args = (out_dir, prefix)
        self._num_shards = num_shards
        self._say = say
        self._interval = interval
        self._infos = read_sidecars(out_dir, prefix)
        self._before = set(self._infos)
        self._start = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def line(self) -> Tuple[int, str]:
        """(shards finished, the progress line)."""
        infos = self._infos = read_sidecars(*self._args, known=self._infos)
        new = [info for path, info in infos.items() if path not in self._before]
        clips = sum(info["num_clips"] for info in new)
        seconds = time.monotonic() - self._start
        return len(infos), (
            f"{len(infos)}/{self._num_shards} shards, this run: "
            f"{sum(info['videos'] for info in new)} videos, {clips} clips in "
            f"{seconds:.0f} s ({clips / max(seconds, 1e-9):.2f} clips/s), "
            f"{sum(len(info['failed']) for info in new)} failed"
        )

    def _loop(self):
        done, quiet = len(self._before), 0
        while not self._stop.wait(self._interval):
            now, line = self.line()
            quiet += 1
            if now != done or quiet >= 6:
                self._say(line)
                done, quiet = now, 0

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._say(self.line()[1])


def _counters(result) -> Dict[str, int]:
    query = result.metrics().query(beam.metrics.MetricsFilter().with_namespace(NAMESPACE))
    totals = {}
    for counter in query["counters"]:
        value = counter.committed if counter.committed is not None else counter.attempted
        totals[counter.key.metric.name] = totals.get(counter.key.metric.name, 0) + value
    return totals


def run(
    tasks: Sequence,
    make_records: Callable,
    out_dir: str,
    prefix: str,
    tasks_per_shard: int,
    pipeline_args: Sequence[str] = (),
    say: Optional[Callable] = None,
    progress_interval: float = 10.0,
) -> dict:
    """Runs the pipeline to the end; returns the summary.

    summary: shards (paths, sorted), num_clips, written / skipped shard counts, videos, the
    summed statistics of every shard, failed [(file, reason)] sorted, failures_file, metrics
    (this run's Beam counters).
    """
    if not tasks:
        raise ValueError("no tasks given")
    options = pipeline_options(pipeline_args)
    tf.io.gfile.makedirs(out_dir)
    num_shards = num_shards_for(len(tasks), tasks_per_shard)
    task_list = tasks_path(out_dir, prefix)
    lines = "".join(_encode_task(i, task) + "\n" for i, task in enumerate(tasks))
    if read_sidecars(out_dir, prefix) and _read_text(task_list) != lines:
        raise ValueError(
            f"{out_dir} holds shards {prefix}-* of other inputs or options ({task_list} differs); "
            "use a new --out_dir or --prefix"
        )
    remove_temp_files(out_dir, prefix)
    _publish(task_list, lambda tmp: _write_text(tmp, lines))
    pipeline = beam.Pipeline(options=options)
    _ = (
        pipeline
        | "ReadTasks" >> beam.io.ReadFromText(task_list)
        | "ToShard" >> beam.Map(_to_shard, num_shards)
        | "GroupByShard" >> beam.GroupByKey()
        | "ShardJob" >> beam.Map(_shard_job, num_shards)
        | "WriteShards" >> beam.ParDo(WriteShard(make_records, out_dir, prefix))
        | "AllFailures" >> beam.combiners.ToList()
        | "WriteFailures" >> beam.Map(_write_failures, failures_path(out_dir, prefix))
    )
    watch = Progress(out_dir, prefix, num_shards, say, progress_interval) if say else None
    if watch:
        watch.__enter__()
    try:
        result = pipeline.run()
        result.wait_until_finish()
    finally:
        if watch:
            watch.__exit__()
    remove_temp_files(out_dir, prefix)
    return summarize(out_dir, prefix, num_shards, _counters(result))


def summarize(out_dir: str, prefix: str, num_shards: int, metrics: Dict[str, int]) -> dict:
    """The summary from the sidecars of the `num_shards` shards (every one must be finished)."""
    infos = read_sidecars(out_dir, prefix)
    sidecars = [shard_paths(out_dir, prefix, i, num_shards)[1] for i in range(num_shards)]
    missing = [path for path in sidecars if path not in infos]
    if missing:
        raise RuntimeError(f"the pipeline ended without finishing {missing[0]} ({len(missing)})")
    mine = [infos[path] for path in sidecars]
    stats = {}
    for info in mine:
        for key, value in info.items():
            if key not in SIDECAR_KEYS:
                stats[key] = stats.get(key, 0) + value
    return dict(
        stats,
        shards=[info["shard"] for info in mine],
        num_clips=sum(info["num_clips"] for info in mine),
        written=metrics.get("shards_written", 0),
        skipped=metrics.get("shards_skipped", 0),
        videos=sum(info["videos"] for info in mine),
        failed=sorted(tuple(f) for info in mine for f in info["failed"]),
        failures_file=failures_path(out_dir, prefix),
        metrics=metrics,
    )
