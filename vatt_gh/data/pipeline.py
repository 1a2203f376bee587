"""tf.data pipelines: pre-training (single source or a mixture) and evaluation.

Named phases, one function each (DMVR style):
  read      shards interleaved in parallel; each shard read alone so a corrupt one is named;
            training reads from an `InputPosition` (a few numbers per source, see "read from a
            position" below), so a resumed run rebuilds its stream without replaying it
  shuffle   records in blocks of `shuffle_buffer` (training only), then numbered: the number
            seeds every random choice
  decode    parse, validate, pick the temporal window(s), decode only the crop of those frames,
            cut the audio of the same time span; a failure becomes a value, not an exception
  check     invalid records are reported to `DataErrors` (raise at once, or skip and count)
  augment   resize, flip, colour jitter, pixels to [-1, 1], K narrations tokenised with masks
  batch     drop_remainder (pre-training), prefetch

Pre-training batches (no string tensors):
  'video' float32 (B, T, H, W, 3) in [-1, 1]     'audio' float32 (B, S), S = T*stride/fps*48000
  'text' int32 (B, K, L), pad 0                   'audio_mask' float32 (B,)
  'text_mask' float32 (B, K)                      'label' int32 (B,) first label or -1
  'aligned_va', 'aligned_vt' float32 (B,) synthetic ground truth (1 for real data)
Evaluation batches stack the temporal windows on axis 1 (one element per clip):
  'video' (B, NW, T, H, W, 3), 'audio' (B, NW, S), 'text' (B, K, L) central narration(s) (K = 1 by
  default: one caption per clip for retrieval), masks, 'label', aligned flags and 'clip_id' string.
"""

import dataclasses
import functools
import threading
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import tensorflow as tf
from absl import logging

import gin
from vatt_gh.data import augment, schema
from vatt_gh.data import text as text_lib

AUTOTUNE = tf.data.AUTOTUNE
ON_ERROR = ("raise", "skip")

# Reasons a record is rejected (int codes travel through the graph).
OK, UNDECODABLE, NO_VIDEO, EMPTY_CAPTION, SHORT_AUDIO, CORRUPT_SHARD = range(6)
REASONS = {
    UNDECODABLE: "undecodable record (proto parse or JPEG decode error, logged above)",
    NO_VIDEO: f"no video frames (missing {schema.IMAGE!r})",
    EMPTY_CAPTION: f"empty narration string in {schema.CAPTION!r}",
    SHORT_AUDIO: "audio shorter than the clip's time window",
    CORRUPT_SHARD: "corrupt or truncated shard (DataLossError); the rest of the shard is unread",
}


class BadRecordError(ValueError):
    """Raised under on_error='raise'; the message names the shard and the record index."""


class DataErrors:
    """Counts (and, under on_error='raise', raises on) rejected records. Thread-safe.

    Pass one to a pipeline and read it after (or during) iteration:
      errors = DataErrors(); ds = pretrain_dataset(cfg, 8, errors=errors); ...; errors.summary()
    """

    def __init__(self, on_error: str = "raise", max_examples: int = 100):
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        self.on_error = on_error
        self.max_examples = max_examples
        self._lock = threading.Lock()
        self.counts: Dict[str, int] = {}
        self.examples: List[Tuple[str, int, str]] = []  # (shard, record index, reason)

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self.counts.values())

    def report(self, shard: str, index: int, reason: int, detail: str = "") -> None:
        message = (
            f"shard {shard} record {index}: {REASONS[reason]}{': ' + detail if detail else ''}"
        )
        if self.on_error == "raise":
            raise BadRecordError(message + " (set on_error='skip' to skip and count such records)")
        logging.warning("skipping %s", message)
        with self._lock:
            self.counts[REASONS[reason]] = self.counts.get(REASONS[reason], 0) + 1
            if len(self.examples) < self.max_examples:
                self.examples.append((shard, index, REASONS[reason]))

    def summary(self) -> str:
        with self._lock:
            if not self.counts:
                return "no records skipped"
            lines = [f"{n} x {reason}" for reason, n in sorted(self.counts.items())]
            return f"skipped {sum(self.counts.values())} record(s): " + "; ".join(lines)


# ---------------------------------------------------------------------------------------------
# Configs (frozen dataclasses, every field bindable from gin)
# ---------------------------------------------------------------------------------------------
Patterns = Union[str, Tuple[str, ...]]


@gin.configurable
@dataclasses.dataclass(frozen=True)
class SourceConfig:
    """One pre-training source: its shards, stored frame rate, temporal stride and mixture weight."""

    file_pattern: Patterns = ""
    fps: float = 10.0
    stride: int = 1
    weight: float = 1.0
    name: str = ""

    def __post_init__(self):
        if isinstance(self.file_pattern, list):
            object.__setattr__(self, "file_pattern", tuple(self.file_pattern))


@gin.configurable
@dataclasses.dataclass(frozen=True)
class PretrainConfig:
    """Pre-training input (paper Section 4.2 defaults)."""

    sources: Tuple[SourceConfig, ...] = ()
    num_frames: int = 32
    crop_size: int = 224
    min_resize: int = 256  # crop_size / min_resize of the short side at zoom 1
    scale_jitter: Tuple[float, float] = (0.8, 1.2)
    flip: bool = True
    brightness: float = 32.0 / 255.0  # colour jitter: additive, in [0, 1] pixel units
    contrast: float = 0.4  # multiplicative factor in [1 - c, 1 + c]
    saturation: float = 0.4  # multiplicative factor in [1 - s, 1 + s]
    sample_rate: int = schema.SAMPLE_RATE
    audio_seconds: Optional[float] = None  # None: the frames' window (sources must agree)
    audio_tolerance_seconds: float = 0.1  # shortfall zero-padded before a record counts as bad
    num_captions: int = 5  # K neighbouring narrations
    max_tokens: int = 16  # L
    vocab_path: str = ""
    tokenizer: str = "word"  # 'word' | 'wordpiece'
    shuffle_buffer: int = 1024
    cycle_length: int = 8  # shards read in parallel
    repeat: bool = True
    seed: int = 0
    on_error: str = "raise"  # 'raise' | 'skip'

    def __post_init__(self):
        if isinstance(self.sources, SourceConfig):
            object.__setattr__(self, "sources", (self.sources,))
        object.__setattr__(self, "sources", tuple(self.sources))
        object.__setattr__(self, "scale_jitter", tuple(self.scale_jitter))
        if self.on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, got {self.on_error!r}")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Evaluation input: central crops, `num_windows` evenly spaced windows, no shuffling."""

    file_pattern: Patterns = ""
    fps: float = 10.0
    stride: int = 1
    num_frames: int = 32
    num_windows: int = 4
    crop_size: int = 224
    min_resize: int = 256
    sample_rate: int = schema.SAMPLE_RATE
    audio_tolerance_seconds: float = 0.1
    num_captions: int = 1  # central narration(s); 1 = one caption per clip
    max_tokens: int = 16
    vocab_path: str = ""
    tokenizer: str = "word"
    cycle_length: int = 4
    on_error: str = "raise"

    def __post_init__(self):
        if isinstance(self.file_pattern, list):
            object.__setattr__(self, "file_pattern", tuple(self.file_pattern))
        if self.on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, got {self.on_error!r}")


@dataclasses.dataclass(frozen=True)
class _ClipSpec:
    """What the decode phase needs for one source."""

    fps: float
    stride: int
    num_frames: int
    num_windows: int
    crop_size: int
    min_resize: int
    scale_jitter: Optional[Tuple[float, float]]
    sample_rate: int
    audio_samples: int
    audio_tolerance: int
    training: bool


def audio_samples_for(num_frames: int, stride: int, fps: float, sample_rate: int) -> int:
    """S: the samples in the time window of `num_frames` frames at `stride` (fps = stored rate)."""
    return int(round(num_frames * stride / fps * sample_rate))


# ---------------------------------------------------------------------------------------------
# read
# ---------------------------------------------------------------------------------------------
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


def _readable_records(path: bytes, errors: DataErrors) -> int:
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
        errors.report(path, count, CORRUPT_SHARD, e.message)
    return count


def read_records(
    files: Sequence[str],
    errors: DataErrors,
    cycle_length: int,
    shuffle_files: bool,
    repeat: bool,
    seed: int,
) -> tf.data.Dataset:
    """(serialized, shard, index) triples, shards interleaved in parallel, deterministic order."""
    ds = tf.data.Dataset.from_tensor_slices(list(files))
    if shuffle_files:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()

    def shard_records(path):
        count = tf.py_function(lambda p: _readable_records(p.numpy(), errors), [path], tf.int64)
        records = tf.data.TFRecordDataset(path).take(tf.reshape(count, []))
        return records.enumerate().map(lambda i, r: (r, path, i))

    return ds.interleave(
        shard_records,
        cycle_length=min(cycle_length, len(files)),
        block_length=1,
        num_parallel_calls=AUTOTUNE,
        deterministic=True,
    )


# ---------------------------------------------------------------------------------------------
# read from a position (pre-training): the input state is a few numbers per source
# ---------------------------------------------------------------------------------------------
# A source's training stream on one input pipeline is a pure function of (files, seed, position):
#   epoch e orders the files by a permutation seeded with (seed, e); the order is cut into
#   groups of `cycle_length` files; a group's shards are read round-robin (one record each in
#   turn, a finished shard drops out) until all are done, then the next group starts;
#   the records are cut into shuffle blocks of `shuffle_buffer` records, each permuted with a
#   permutation seeded with (seed, block number), and numbered (the number seeds the record's
#   random choices).
# So a position is: records consumed, and at the start of the current block the group, the
# records consumed from each of its shards and the shard to read next. A restart reads again at
# most the open group's shards (cycle_length) and one block, whatever the step.
# Under on_error='skip' a rejected record's place is taken by another record of its block, so a
# block always yields `shuffle_buffer` examples and positions stay exact (a block whose every
# record is rejected yields none: the resume is then off by that block).


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
        count = _readable_records(path.encode("utf-8"), DataErrors("skip"))
        self.record(path, count)
        return count


def _source_seed(seed: Tuple[int, int]) -> int:
    return int(seed[0]) * 7919 + int(seed[1])


def _group_size(cycle_length: int, num_files: int) -> int:
    return max(1, min(cycle_length, num_files))


def _group_files_tensor(files: tf.Tensor, group, cycle_length: int, op_seed: int) -> tf.Tensor:
    """The files of global group `group` (in slot order), as a string tensor."""
    n = int(files.shape[0])
    c = _group_size(cycle_length, n)
    per_epoch = -(-n // c)
    group = tf.cast(group, tf.int64)
    epoch, j = group // per_epoch, group % per_epoch
    order = tf.random.experimental.stateless_shuffle(
        tf.range(n, dtype=tf.int64), seed=tf.stack([tf.constant(op_seed, tf.int64), epoch])
    )
    return tf.gather(files, order[j * c : tf.minimum((j + 1) * c, n)])


def group_files(files: Sequence[str], group: int, cycle_length: int, op_seed: int) -> List[str]:
    """`_group_files_tensor` in Python (the same op: the tracker and the pipeline agree)."""
    t = _group_files_tensor(tf.constant(list(files)), group, cycle_length, op_seed)
    return [f.decode("utf-8") for f in t.numpy()]


def advance_source(
    position: SourcePosition,
    records: int,
    files: Sequence[str],
    cycle_length: int,
    shuffle_buffer: int,
    op_seed: int,
    counts: ShardCounts,
) -> SourcePosition:
    """The position after `records` more records (pure arithmetic over the shards' counts)."""
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


def read_records_from(
    files: Sequence[str],
    errors: DataErrors,
    cycle_length: int,
    repeat: bool,
    op_seed: int,
    start: SourcePosition,
    counts: ShardCounts,
) -> tf.data.Dataset:
    """(serialized, shard, index) triples of the training stream from `start.block_start` on."""
    files_t = tf.constant(list(files))
    c = _group_size(cycle_length, len(files))
    per_epoch = -(-len(files) // c)

    def shard_records(path, skip):
        def count_fn(p):
            n = _readable_records(p.numpy(), errors)
            counts.record(p.numpy().decode("utf-8"), n)
            return n

        count = tf.py_function(count_fn, [path], tf.int64)
        records = tf.data.TFRecordDataset(path).take(tf.reshape(count, []))
        return records.enumerate().skip(skip).map(lambda i, r: (r, path, i))

    def group_records(group, skips=None, first_slot=0):
        paths = _group_files_tensor(files_t, group, cycle_length, op_seed)
        if skips is None:
            skips = tf.zeros(tf.shape(paths), tf.int64)
        order = tf.roll(tf.range(tf.size(paths)), -first_slot, axis=0)  # read next_slot first
        return tf.data.Dataset.from_tensor_slices(
            (tf.gather(paths, order), tf.gather(skips, order))
        ).interleave(
            shard_records,
            cycle_length=c,
            block_length=1,
            num_parallel_calls=AUTOTUNE,
            deterministic=True,
        )

    skips = tf.constant(list(start.consumed), tf.int64) if start.consumed else None
    first = group_records(tf.constant(start.group, tf.int64), skips, start.next_slot)
    later = tf.data.Dataset.counter(start.group + 1)
    if not repeat:
        later = later.take(max(0, per_epoch - start.group - 1))
    return first.concatenate(later.flat_map(group_records))


def training_clips(
    files: Sequence[str],
    spec: _ClipSpec,
    errors: DataErrors,
    *,
    cycle_length: int,
    shuffle_buffer: int,
    repeat: bool,
    seed: Tuple[int, int],
    start: SourcePosition,
    counts: ShardCounts,
) -> tf.data.Dataset:
    """read from `start` -> shuffle blocks -> number -> decode -> check, for one source."""
    op_seed = _source_seed(seed)
    block = max(1, shuffle_buffer)
    fill = repeat and block > 1
    base_seed = tf.constant(seed, tf.int64)
    records = read_records_from(files, errors, cycle_length, repeat, op_seed, start, counts)

    def one_block(number, block_records):
        serialized, shard, index = block_records
        size = tf.size(serialized, out_type=tf.int64)
        perm = tf.random.experimental.stateless_shuffle(
            tf.range(size), seed=tf.stack([tf.constant(op_seed, tf.int64), number])
        )
        numbered = tf.data.Dataset.from_tensor_slices(
            (
                number * block + tf.range(size),
                tf.gather(serialized, perm),
                tf.gather(shard, perm),
                tf.gather(index, perm),
            )
        )
        decoded = numbered.interleave(
            lambda i, r, s, x: _guarded(i, r, s, x, spec, base_seed),
            cycle_length=4,
            block_length=1,
            num_parallel_calls=AUTOTUNE,
            deterministic=True,
        )
        checked = decoded.filter(functools.partial(_check, errors=errors))
        if not fill:
            return checked
        # Rejected records' places go to the block's first good records (decoded again).
        spare = decoded.filter(lambda ex: ex["reason"] == OK).repeat()
        return checked.concatenate(spare).take(size)

    blocks = tf.data.Dataset.zip(
        (tf.data.Dataset.counter(start.block_start // block), records.batch(block))
    )
    return blocks.flat_map(one_block).skip(start.records - start.block_start)


MIXTURE_BLOCK = 1024  # the source of example k is drawn in blocks seeded with (seed, k // 1024)


def _mixture_choices(weights: Sequence[float], seed: int, block) -> tf.Tensor:
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
        chosen = _mixture_choices(weights, seed, block).numpy()[offset : offset + take]
        for i in range(len(weights)):
            counts[i] += int((chosen == i).sum())
        k += take
    return counts


def _mixture(datasets, weights: Sequence[float], seed: int, start: int) -> tf.data.Dataset:
    choices = (
        tf.data.Dataset.counter(start // MIXTURE_BLOCK)
        .map(lambda b: _mixture_choices(weights, seed, b))
        .unbatch()
        .skip(start % MIXTURE_BLOCK)
    )
    return tf.data.Dataset.choose_from_datasets(datasets, choices, stop_on_empty_dataset=False)


# ---------------------------------------------------------------------------------------------
# decode (may fail: run inside `_guarded`, which turns a failure into reason=UNDECODABLE)
# ---------------------------------------------------------------------------------------------
def _empty_clip(spec: _ClipSpec, reason: int) -> dict:
    w = spec.num_windows
    return {
        "frames": tf.zeros([w, spec.num_frames, 0, 0, 3], tf.uint8),
        "audio": tf.zeros([w, spec.audio_samples], tf.float32),
        "has_audio": tf.constant(False),
        "captions": tf.zeros([0], tf.string),
        "label": tf.constant(-1, tf.int32),
        "aligned_va": tf.constant(1.0),
        "aligned_vt": tf.constant(1.0),
        "clip_id": tf.constant(""),
        "reason": tf.constant(reason, tf.int32),
    }


def _decode(serialized: tf.Tensor, seed: tf.Tensor, spec: _ClipSpec) -> dict:
    """Parses and validates one record and decodes the frames and audio of its window(s)."""
    parsed = schema.parse_sequence_example(serialized)
    num_stored = tf.size(parsed["frames"])
    audio = parsed["audio"]
    audio_len = tf.size(audio)
    window_seed, crop_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    span = spec.num_frames * spec.stride
    offsets = augment.window_offsets(
        num_stored, span, spec.num_windows, window_seed if spec.training else None
    )  # (W,)
    # Audio window: the frames' time span, or `audio_samples` centred on it.
    per_frame = spec.sample_rate / spec.fps
    frames_samples = int(round(span * per_frame))
    shift = (frames_samples - spec.audio_samples) // 2
    starts = tf.cast(tf.round(tf.cast(offsets, tf.float32) * per_frame), tf.int32) + shift
    starts = tf.maximum(starts, 0)
    video_end = tf.cast(tf.round(tf.cast(num_stored, tf.float32) * per_frame), tf.int32)
    needed = tf.reduce_max(tf.minimum(starts + spec.audio_samples, video_end))
    has_audio = audio_len > 0
    empty_caption = tf.reduce_any(tf.strings.length(tf.strings.strip(parsed["captions"])) == 0)

    reason = tf.constant(OK, tf.int32)
    reason = tf.where(has_audio & (audio_len < needed - spec.audio_tolerance), SHORT_AUDIO, reason)
    reason = tf.where(empty_caption, EMPTY_CAPTION, reason)
    reason = tf.where(num_stored == 0, NO_VIDEO, reason)

    def decode_branch():
        box = augment.crop_box(
            tf.image.extract_jpeg_shape(parsed["frames"][0]),
            spec.crop_size,
            spec.min_resize,
            spec.scale_jitter,
            crop_seed if spec.training else None,
        )
        idx = augment.frame_indices(offsets, spec.num_frames, spec.stride, num_stored)  # (W, T)
        frames = augment.decode_crop_frames(tf.gather(parsed["frames"], tf.reshape(idx, [-1])), box)
        frames = tf.reshape(frames, [spec.num_windows, spec.num_frames, box[2], box[3], 3])
        padded = tf.pad(audio, [[0, spec.audio_samples]])
        starts_in = tf.minimum(starts, audio_len)
        cut = tf.gather(padded, starts_in[:, None] + tf.range(spec.audio_samples)[None, :])
        cut = tf.where(has_audio, cut, tf.zeros_like(cut))
        return frames, cut

    def skip_branch():
        return (
            tf.zeros([spec.num_windows, spec.num_frames, 0, 0, 3], tf.uint8),
            tf.zeros([spec.num_windows, spec.audio_samples], tf.float32),
        )

    frames, audio_cut = tf.cond(reason == OK, decode_branch, skip_branch)
    labels = tf.cast(parsed["labels"], tf.int32)
    return {
        "frames": tf.ensure_shape(frames, [spec.num_windows, spec.num_frames, None, None, 3]),
        "audio": tf.ensure_shape(audio_cut, [spec.num_windows, spec.audio_samples]),
        "has_audio": has_audio,
        "captions": parsed["captions"],
        "label": tf.cond(tf.size(labels) > 0, lambda: labels[0], lambda: tf.constant(-1)),
        "aligned_va": tf.cast(parsed["aligned_va"], tf.float32),
        "aligned_vt": tf.cast(parsed["aligned_vt"], tf.float32),
        "clip_id": parsed["clip_id"],
        "reason": reason,
    }


def _guarded(element_index, record, shard, record_index, spec: _ClipSpec, base_seed):
    """Runs `_decode` on one record; an op error becomes a reason=UNDECODABLE element."""
    seed = tf.random.experimental.stateless_fold_in(base_seed, element_index)
    good = (
        tf.data.Dataset.from_tensors((record, seed))
        .map(lambda r, s: _decode(r, s, spec))
        .ignore_errors(log_warning=True)
    )
    bad = tf.data.Dataset.from_tensors(_empty_clip(spec, UNDECODABLE))
    extra = {"shard": shard, "record_index": record_index, "seed": seed}
    return good.concatenate(bad).take(1).map(lambda ex: {**ex, **extra})


def _check(example: dict, errors: DataErrors) -> tf.Tensor:
    """Filter predicate: True for valid records; reports the others (may raise)."""

    def report(shard, index, reason):
        errors.report(shard.numpy().decode("utf-8"), int(index), int(reason))
        return False

    return tf.cond(
        example["reason"] == OK,
        lambda: tf.constant(True),
        lambda: tf.py_function(
            report, [example["shard"], example["record_index"], example["reason"]], Tout=tf.bool
        ),
    )


def decoded_clips(
    files: Sequence[str],
    spec: _ClipSpec,
    errors: DataErrors,
    *,
    cycle_length: int,
    shuffle_buffer: int,
    repeat: bool,
    seed: Tuple[int, int],
) -> tf.data.Dataset:
    """read -> shuffle -> number -> decode -> check, for one source."""
    op_seed = int(seed[0]) * 7919 + int(seed[1])
    ds = read_records(
        files, errors, cycle_length, shuffle_files=spec.training, repeat=repeat, seed=op_seed
    )
    if spec.training and shuffle_buffer > 1:
        ds = ds.shuffle(shuffle_buffer, seed=op_seed, reshuffle_each_iteration=True)
    ds = ds.enumerate()
    base_seed = tf.constant(seed, tf.int64)
    ds = ds.interleave(
        lambda i, rec: _guarded(i, rec[0], rec[1], rec[2], spec, base_seed),
        cycle_length=4,
        block_length=1,
        num_parallel_calls=AUTOTUNE,
        deterministic=True,
    )
    return ds.filter(functools.partial(_check, errors=errors))


# ---------------------------------------------------------------------------------------------
# augment
# ---------------------------------------------------------------------------------------------
def select_captions(captions: tf.Tensor, k: int, seed: Optional[tf.Tensor]):
    """K consecutive narrations (random window with a seed, central without), padded with ''.

    Returns (string (K,), float32 mask (K,)).
    """
    count = tf.size(captions)
    max_start = tf.maximum(count - k, 0)
    if seed is None:
        start = max_start // 2
    else:
        start = tf.random.stateless_uniform(
            [], seed, minval=0, maxval=max_start + 1, dtype=tf.int32
        )
    chosen = captions[start : start + k]
    real = tf.size(chosen)
    chosen = tf.pad(chosen, [[0, k - real]], constant_values="")
    mask = tf.cast(tf.range(k) < real, tf.float32)
    return tf.ensure_shape(chosen, [k]), mask


def _finish(
    example: dict,
    spec: _ClipSpec,
    tokenizer: text_lib.Tokenizer,
    num_captions: int,
    color: Optional[Tuple[bool, float, float, float]],
    keep_strings: bool,
) -> dict:
    """augment: frames -> [-1, 1] clip(s), narrations -> token ids + mask; drops bookkeeping."""
    aug_seed, caption_seed = tf.unstack(tf.random.experimental.stateless_split(example["seed"], 2))
    video = augment.resize_frames(example["frames"], spec.crop_size)  # (W, T, H, W, 3)
    if spec.training:
        video = video[0]  # (T, H, W, 3)
        if color is not None:
            video = augment.flip_and_color(video, aug_seed, *color)
        audio = example["audio"][0]  # (S,)
    else:
        audio = example["audio"]  # (W, S)
    video = augment.to_symmetric(video)
    size = [spec.num_frames, spec.crop_size, spec.crop_size, 3]
    video = tf.ensure_shape(video, size if spec.training else [spec.num_windows] + size)
    captions, text_mask = select_captions(
        example["captions"], num_captions, caption_seed if spec.training else None
    )
    out = {
        "video": video,
        "audio": audio,
        "text": tokenizer(captions),  # (K, L)
        "audio_mask": tf.cast(example["has_audio"], tf.float32),
        "text_mask": text_mask,  # (K,)
        "label": example["label"],
        "aligned_va": example["aligned_va"],
        "aligned_vt": example["aligned_vt"],
    }
    if keep_strings:
        out["clip_id"] = example["clip_id"]
    return out


# ---------------------------------------------------------------------------------------------
# pre-training
# ---------------------------------------------------------------------------------------------
def _source_specs(config: PretrainConfig) -> List[_ClipSpec]:
    if not config.sources:
        raise ValueError("PretrainConfig.sources is empty: give at least one SourceConfig")
    specs = []
    for source in config.sources:
        if config.audio_seconds is None:
            samples = audio_samples_for(
                config.num_frames, source.stride, source.fps, config.sample_rate
            )
        else:
            samples = int(round(config.audio_seconds * config.sample_rate))
        specs.append(
            _ClipSpec(
                fps=source.fps,
                stride=source.stride,
                num_frames=config.num_frames,
                num_windows=1,
                crop_size=config.crop_size,
                min_resize=config.min_resize,
                scale_jitter=config.scale_jitter,
                sample_rate=config.sample_rate,
                audio_samples=samples,
                audio_tolerance=int(round(config.audio_tolerance_seconds * config.sample_rate)),
                training=True,
            )
        )
    lengths = {s.audio_samples for s in specs}
    if len(lengths) > 1:
        raise ValueError(
            f"sources cover different time windows (audio lengths {sorted(lengths)} samples): make "
            "num_frames * stride / fps equal, or set PretrainConfig.audio_seconds"
        )
    return specs


def _pipeline_files(source: SourceConfig, pipeline_id: int, num_pipelines: int) -> List[str]:
    """The shards input pipeline `pipeline_id` reads: files[pipeline_id::num_pipelines]."""
    files = list_files(source.file_pattern)
    if num_pipelines > 1:
        if len(files) < num_pipelines:
            raise ValueError(
                f"source {source.name or source.file_pattern!r} has {len(files)} "
                f"shard(s) for {num_pipelines} input pipelines: write more shards"
            )
        files = files[pipeline_id::num_pipelines]
    return files


def _source_seeds(config: PretrainConfig, pipeline_id: int) -> List[Tuple[int, int]]:
    return [(config.seed * 1000003 + pipeline_id, i) for i in range(len(config.sources))]


def _start(config: PretrainConfig, position: Optional[InputPosition]) -> InputPosition:
    if position is None:
        return InputPosition(0, tuple(SourcePosition() for _ in config.sources))
    if len(position.sources) != len(config.sources):
        raise ValueError(
            f"the saved input position has {len(position.sources)} source(s), the config "
            f"{len(config.sources)}: resume with the data config the run started with"
        )
    return position


def advance_position(
    config: PretrainConfig,
    position: Optional[InputPosition],
    examples: int,
    pipeline_id: int = 0,
    num_pipelines: int = 1,
    counts: Optional[ShardCounts] = None,
) -> InputPosition:
    """The position of input pipeline `pipeline_id` after `examples` more examples.

    Arithmetic over the shards' record counts (`counts`: those the pipeline learnt while
    reading, or counted here), no decoding: cheap to call at every checkpoint.
    """
    position = _start(config, position)
    counts = counts if counts is not None else ShardCounts()
    if len(config.sources) == 1:
        per_source = [examples]
    else:
        weights = [float(s.weight) for s in config.sources]
        per_source = mixture_counts(weights, config.seed, position.examples, examples)
    sources = []
    for i, (source, seed) in enumerate(zip(config.sources, _source_seeds(config, pipeline_id))):
        sources.append(
            advance_source(
                position.sources[i],
                per_source[i],
                _pipeline_files(source, pipeline_id, num_pipelines),
                config.cycle_length,
                config.shuffle_buffer,
                _source_seed(seed),
                counts,
            )
        )
    return InputPosition(position.examples + examples, tuple(sources))


def _pretrain_examples(
    config: PretrainConfig,
    errors: DataErrors,
    pipeline_id: int = 0,
    num_pipelines: int = 1,
    position: Optional[InputPosition] = None,
    counts: Optional[ShardCounts] = None,
) -> tf.data.Dataset:
    """Unbatched pre-training examples from `position` on, sources mixed i.i.d. by weight."""
    specs = _source_specs(config)
    position = _start(config, position)
    counts = counts if counts is not None else ShardCounts()
    tokenizer = text_lib.Tokenizer(config.vocab_path, config.tokenizer, config.max_tokens)
    color = (config.flip, config.brightness, config.contrast, config.saturation)
    datasets = []
    seeds = _source_seeds(config, pipeline_id)  # distinct per source and host
    for i, (source, spec) in enumerate(zip(config.sources, specs)):
        ds = training_clips(
            _pipeline_files(source, pipeline_id, num_pipelines),
            spec,
            errors,
            cycle_length=config.cycle_length,
            shuffle_buffer=config.shuffle_buffer,
            repeat=config.repeat,
            seed=seeds[i],
            start=position.sources[i],
            counts=counts,
        )
        datasets.append(
            ds.map(
                functools.partial(
                    _finish,
                    spec=spec,
                    tokenizer=tokenizer,
                    num_captions=config.num_captions,
                    color=color,
                    keep_strings=False,
                ),
                num_parallel_calls=AUTOTUNE,
                deterministic=True,
            )
        )
    if len(datasets) == 1:
        return datasets[0]
    weights = [float(s.weight) for s in config.sources]
    total = sum(weights)
    return _mixture(datasets, [w / total for w in weights], config.seed, position.examples)


def pretrain_dataset(
    config: PretrainConfig,
    batch_size: int,
    errors: Optional[DataErrors] = None,
    position: Optional[InputPosition] = None,
    counts: Optional[ShardCounts] = None,
) -> tf.data.Dataset:
    """Pre-training batches for one device from `position` on (see the module docstring)."""
    errors = errors if errors is not None else DataErrors(config.on_error)
    ds = _pretrain_examples(config, errors, position=position, counts=counts)
    return ds.batch(batch_size, drop_remainder=True).prefetch(AUTOTUNE)


def make_pretrain_input_fn(
    config: PretrainConfig,
    global_batch_size: int,
    errors: Optional[DataErrors] = None,
    position_fn: Optional[Callable[[int, int], Optional[InputPosition]]] = None,
    counts: Optional[ShardCounts] = None,
):
    """input_fn(input_context) for `strategy.distribute_datasets_from_function`.

    Each input pipeline (host) reads the shards `files[pipeline_id::num_pipelines]` from
    `position_fn(pipeline_id, num_pipelines)` (default: the start) and batches
    `input_context.get_per_replica_batch_size(global_batch_size)` examples.
    """
    errors = errors if errors is not None else DataErrors(config.on_error)
    position_fn = position_fn or (lambda pid, num: None)

    def input_fn(input_context: tf.distribute.InputContext) -> tf.data.Dataset:
        batch = input_context.get_per_replica_batch_size(global_batch_size)
        pid = input_context.input_pipeline_id
        ds = _pretrain_examples(
            config,
            errors,
            pid,
            input_context.num_input_pipelines,
            position_fn(pid, input_context.num_input_pipelines),
            counts,
        )
        return ds.batch(batch, drop_remainder=True).prefetch(AUTOTUNE)

    return input_fn


# ---------------------------------------------------------------------------------------------
# evaluation
# ---------------------------------------------------------------------------------------------
def eval_dataset(
    config: EvalConfig, batch_size: int, errors: Optional[DataErrors] = None
) -> tf.data.Dataset:
    """Every clip once, in file order; the last batch may be smaller (no clip is dropped)."""
    errors = errors if errors is not None else DataErrors(config.on_error)
    spec = _ClipSpec(
        fps=config.fps,
        stride=config.stride,
        num_frames=config.num_frames,
        num_windows=config.num_windows,
        crop_size=config.crop_size,
        min_resize=config.min_resize,
        scale_jitter=None,
        sample_rate=config.sample_rate,
        audio_samples=audio_samples_for(
            config.num_frames, config.stride, config.fps, config.sample_rate
        ),
        audio_tolerance=int(round(config.audio_tolerance_seconds * config.sample_rate)),
        training=False,
    )
    tokenizer = text_lib.Tokenizer(config.vocab_path, config.tokenizer, config.max_tokens)
    files = list_files(config.file_pattern)
    ds = decoded_clips(
        files,
        spec,
        errors,
        cycle_length=config.cycle_length,
        shuffle_buffer=0,
        repeat=False,
        seed=(0, 0),
    )
    ds = ds.map(
        functools.partial(
            _finish,
            spec=spec,
            tokenizer=tokenizer,
            num_captions=config.num_captions,
            color=None,
            keep_strings=True,
        ),
        num_parallel_calls=AUTOTUNE,
        deterministic=True,
    )
    return ds.batch(batch_size, drop_remainder=False).prefetch(AUTOTUNE)
