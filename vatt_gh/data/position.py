"""The pre-training input position: a few numbers per source, and the source mixture.

    position = InputPosition(0, (SourcePosition(),))                   # the start
    after = advance_source(position.sources[0], 640, files, 8, 1024, op_seed, counts)
    mixture_counts(weights, seed, start=0, n=640)                      # examples per source

The order of a source's stream (which shards a group holds, block by block) is defined here and
read by `vatt_gh.data.read.read_records`; `advance_source` walks the same order by arithmetic
over the shards' record counts, without reading a record.

A source's training stream on one input pipeline is a pure function of (files, seed, position):
  epoch e orders the files by a permutation seeded with (seed, e); the order is cut into
  groups of `cycle_length` files; a group's shards are read round-robin (one record each in
  turn, a finished shard drops out) until all are done, then the next group starts;
  the records are cut into shuffle blocks of `shuffle_buffer` records, each permuted with a
  permutation seeded with (seed, block number), and numbered (the number seeds the record's
  random choices).
So a position is: records consumed, and at the start of the current block the group, the
records consumed from each of its shards and the shard to read next. A restart reads again at
most the open group's shards (cycle_length) and one block, whatever the step.
Under on_error='skip' a rejected record's place is taken by another record of its block, so a
block always yields `shuffle_buffer` examples and positions stay exact (a block whose every
record is rejected yields none: the resume is then off by that block).
The evaluation path reads the same stream at position 0, files in sorted order (`shuffle`
False), blocks of one record: every clip once, in file order.
"""

import dataclasses
from typing import Callable, List, Sequence, Tuple

import tensorflow as tf


@dataclasses.dataclass
class SourcePosition:
    """Where one source's record stream on one input pipeline stands."""

    records: int = 0  # examples taken from this source (= records: one per record)
    block_start: int = 0  # records before the current shuffle block
    group: int = 0  # at block_start: the group being read (epoch = group // groups per epoch)
    consumed: Tuple[int, ...] = ()  # at block_start: records taken from each shard of the group
    next_slot: int = 0  # at block_start: the group's shard read next

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "SourcePosition":
        d = dict(d)
        d["consumed"] = tuple(d.get("consumed", ()))
        return cls(**d)


@dataclasses.dataclass
class InputPosition:
    """Where one input pipeline stands: examples it has given, and each source's position."""

    examples: int = 0
    sources: Tuple[SourcePosition, ...] = ()

    def to_json(self) -> dict:
        return {"examples": self.examples, "sources": [s.to_json() for s in self.sources]}

    @classmethod
    def from_json(cls, d: dict) -> "InputPosition":
        return cls(d["examples"], tuple(SourcePosition.from_json(s) for s in d["sources"]))


def source_seed(seed: Tuple[int, int]) -> int:
    """The int seed of a source's stream (file order, shuffle blocks) from its (base, index) pair."""
    return int(seed[0]) * 7919 + int(seed[1])


def group_size(cycle_length: int, num_files: int) -> int:
    """Files per group (the last group of an epoch may hold fewer)."""
    return max(1, min(cycle_length, num_files))


def group_files_tensor(
    files: tf.Tensor, group, cycle_length: int, op_seed: int, shuffle: bool = True
) -> tf.Tensor:
    """The files of global group `group` (in slot order), as a string tensor; `shuffle` False
    keeps every epoch in the given (sorted) order."""
    n = int(files.shape[0])
    c = group_size(cycle_length, n)
    per_epoch = -(-n // c)
    group = tf.cast(group, tf.int64)
    epoch, j = group // per_epoch, group % per_epoch
    order = tf.range(n, dtype=tf.int64)
    if shuffle:
        order = tf.random.experimental.stateless_shuffle(
            order, seed=tf.stack([tf.constant(op_seed, tf.int64), epoch])
        )
    return tf.gather(files, order[j * c : tf.minimum((j + 1) * c, n)])


def group_files(files: Sequence[str], group: int, cycle_length: int, op_seed: int) -> List[str]:
    """`group_files_tensor` in Python (the same op: the tracker and the pipeline agree)."""
    t = group_files_tensor(tf.constant(list(files)), group, cycle_length, op_seed)
    return [f.decode("utf-8") for f in t.numpy()]


def advance_source(
    position: SourcePosition,
    records: int,
    files: Sequence[str],
    cycle_length: int,
    shuffle_buffer: int,
    op_seed: int,
    counts: Callable[[str], int],
) -> SourcePosition:
    """The position after `records` more records (pure arithmetic over the shards' counts;
    `counts(path)`: a shard's readable records, e.g. a `read.ShardCounts`)."""
    block = max(1, shuffle_buffer)
    total = position.records + records
    block_start = (total // block) * block
    group, next_slot = position.group, position.next_slot
    paths = group_files(files, group, cycle_length, op_seed)
    consumed = list(position.consumed) or [0] * len(paths)
    sizes = [counts(p) for p in paths]
    todo = block_start - position.block_start
    while todo > 0:
        remaining = [s - c for s, c in zip(sizes, consumed)]
        if not any(r > 0 for r in remaining):  # the group is done: the next one starts at slot 0
            group, next_slot = group + 1, 0
            paths = group_files(files, group, cycle_length, op_seed)
            consumed, sizes = [0] * len(paths), [counts(p) for p in paths]
            continue
        if remaining[next_slot] > 0:
            consumed[next_slot] += 1
            todo -= 1
        next_slot = (next_slot + 1) % len(paths)
    return SourcePosition(total, block_start, group, tuple(consumed), next_slot)


MIXTURE_BLOCK = 1024  # the source of example k is drawn in blocks seeded with (seed, k // 1024)


def mixture_choices(weights: Sequence[float], seed: int, block) -> tf.Tensor:
    """int64 (MIXTURE_BLOCK,): the source of each example of mixture block `block`."""
    logits = tf.math.log(tf.constant([list(weights)], tf.float32))
    seed = tf.stack([tf.constant(seed, tf.int64), tf.cast(block, tf.int64)])
    return tf.random.stateless_categorical(logits, MIXTURE_BLOCK, seed, dtype=tf.int64)[0]


def mixture_counts(weights: Sequence[float], seed: int, start: int, n: int) -> List[int]:
    """How many of the mixture's examples [start, start + n) come from each source."""
    counts = [0] * len(weights)
    k = start
    while k < start + n:
        block, offset = divmod(k, MIXTURE_BLOCK)
        take = min(MIXTURE_BLOCK - offset, start + n - k)
        chosen = mixture_choices(weights, seed, block).numpy()[offset : offset + take]
        for i in range(len(weights)):
            counts[i] += int((chosen == i).sum())
        k += take
    return counts


def mixture(datasets, weights: Sequence[float], seed: int, start: int) -> tf.data.Dataset:
    """The sources' datasets mixed i.i.d. by `weights` (normalised), from mixture example `start`."""
    choices = (
        tf.data.Dataset.counter(start // MIXTURE_BLOCK)
        .map(lambda b: mixture_choices(weights, seed, b))
        .unbatch()
        .skip(start % MIXTURE_BLOCK)
    )
    return tf.data.Dataset.choose_from_datasets(datasets, choices, stop_on_empty_dataset=False)
