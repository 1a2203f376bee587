"""Listing and reading shards: ONE reader, from an input position, for both paths.

    files = list_files("/data/train-*.tfrecord,/data/extra-*.tfrecord")
    records = read_records(files, errors, cycle_length=8, repeat=True, op_seed=s,
                           start=SourcePosition(), counts=ShardCounts())   # (serialized, shard, index)

Each shard is counted once per epoch (`readable_records`: every CRC checked) before it is read,
so a corrupt or truncated shard is named and, under on_error='skip', its intact prefix is used.
The order of the stream is defined in `vatt_gh.data.position`.
"""

import threading
from typing import Dict, List, Sequence

import tensorflow as tf

from vatt_gh.data.configs import Patterns
from vatt_gh.data.position import SourcePosition, group_files_tensor, group_size
from vatt_gh.data.rejects import (
    CORRUPT_SHARD,
    BadRecordError,
    DataErrors,
    NoValidRecordsError,
    fail_in_graph,
)


def list_files(patterns: Patterns) -> List[str]:
    """Sorted files of one or more glob patterns; raises naming any pattern that matches nothing."""
    if isinstance(patterns, str):
        patterns = tuple(p for p in patterns.split(",") if p)
    if not patterns:
        raise ValueError("no file pattern given")
    files = []
    for pattern in patterns:
        matched = tf.io.gfile.glob(pattern)
        if not matched:
            raise FileNotFoundError(f"file pattern {pattern!r} matches no files")
        files.extend(matched)
    return sorted(set(files))


def readable_records(path: bytes, errors: DataErrors, source: str = "", num_files: int = 0) -> int:
    """Records of a shard readable before any corruption (every CRC checked); reports the rest.

    Runs once per shard and epoch (a cheap sequential read that also warms the page cache), so a
    corrupt or truncated shard is named, and under 'skip' its intact prefix is still used.
    """
    path = path.decode("utf-8")
    count = 0
    try:
        for _ in tf.compat.v1.io.tf_record_iterator(path):
            count += 1
    except tf.errors.DataLossError as e:
        errors.report(path, count, CORRUPT_SHARD, e.message.splitlines()[0])
    if source:  # a pipeline's read (not a position's count): watch for all-empty sources
        errors.shard_read(source, path, count, num_files)
    return count


class ShardCounts:
    """Readable records per shard, learnt as the pipeline opens shards (counted once if not)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._counts: Dict[str, int] = {}

    def record(self, path: str, count: int) -> None:
        with self._lock:
            self._counts[path] = count

    def __call__(self, path: str) -> int:
        with self._lock:
            if path in self._counts:
                return self._counts[path]
        count = readable_records(path.encode("utf-8"), DataErrors("skip"))
        self.record(path, count)
        return count


def read_records(
    files: Sequence[str],
    errors: DataErrors,
    *,
    cycle_length: int,
    repeat: bool,
    op_seed: int,
    start: SourcePosition,
    counts: ShardCounts,
    source: str,
    shuffle_files: bool = True,
) -> tf.data.Dataset:
    """(serialized, shard, index) triples of a source's stream from `start.block_start` on.

    `source` names the source in errors; `shuffle_files` False reads every epoch in file order
    (the evaluation path). The shards' counts are recorded in `counts` as they are opened.
    """
    files_t = tf.constant(list(files))
    c = group_size(cycle_length, len(files))
    per_epoch = -(-len(files) // c)

    def shard_records(path, skip):
        def count_fn(p):
            try:
                n = readable_records(p.numpy(), errors, source, len(files))
            except (BadRecordError, NoValidRecordsError) as e:
                return 0, str(e)
            counts.record(p.numpy().decode("utf-8"), n)
            return n, ""

        count, message = tf.py_function(count_fn, [path], (tf.int64, tf.string))
        with tf.control_dependencies([fail_in_graph(message)]):
            count = tf.identity(count)
        records = tf.data.TFRecordDataset(path).take(tf.reshape(count, []))
        return records.enumerate().skip(skip).map(lambda i, r: (r, path, i))

    def group_records(group, skips=None, first_slot=0):
        paths = group_files_tensor(files_t, group, cycle_length, op_seed, shuffle_files)
        if skips is None:
            skips = tf.zeros(tf.shape(paths), tf.int64)
        order = tf.roll(tf.range(tf.size(paths)), -first_slot, axis=0)  # read next_slot first
        return tf.data.Dataset.from_tensor_slices(
            (tf.gather(paths, order), tf.gather(skips, order))
        ).interleave(
            shard_records,
            cycle_length=c,
            block_length=1,
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )

    skips = tf.constant(list(start.consumed), tf.int64) if start.consumed else None
    first = group_records(tf.constant(start.group, tf.int64), skips, start.next_slot)
    later = tf.data.Dataset.counter(start.group + 1)
    if not repeat:
        later = later.take(max(0, per_epoch - start.group - 1))
    return first.concatenate(later.flat_map(group_records))
