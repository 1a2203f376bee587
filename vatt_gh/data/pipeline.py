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
import math
import numbers
import threading
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf
from absl import logging

import gin
from vatt_gh.data import augment, schema
from vatt_gh.data import text as text_lib

AUTOTUNE = tf.data.AUTOTUNE
ON_ERROR = ("raise", "skip")

# Reasons a record is rejected (int codes travel through the graph).
(
    OK,
    UNDECODABLE,
    NO_VIDEO,
    EMPTY_CAPTION,
    SHORT_AUDIO,
    CORRUPT_SHARD,
    FRAME_TOO_LARGE,
    BAD_AUDIO,
    BAD_FLAG,
    NOT_JPEG,
) = range(10)
# code -> short name: the key of `DataErrors.counts` and of the `data/skipped/<name>` summaries.
REASON_NAMES = {
    UNDECODABLE: "undecodable",
    NO_VIDEO: "no_video",
    EMPTY_CAPTION: "empty_caption",
    SHORT_AUDIO: "short_audio",
    CORRUPT_SHARD: "corrupt_shard",
    FRAME_TOO_LARGE: "frame_too_large",
    BAD_AUDIO: "bad_audio_values",
    BAD_FLAG: "bad_flag",
    NOT_JPEG: "not_jpeg",
}
REASONS = {
    UNDECODABLE: "undecodable record (proto parse, wrong feature type or JPEG decode error)",
    NO_VIDEO: f"no video frames (missing {schema.IMAGE!r})",
    EMPTY_CAPTION: f"empty narration string in {schema.CAPTION!r} (blank, NUL or control only)",
    SHORT_AUDIO: "audio shorter than the clip's time window",
    CORRUPT_SHARD: "corrupt or truncated shard (DataLossError); the rest of the shard is unread",
    FRAME_TOO_LARGE: "a JPEG header claims more pixels than max_frame_pixels (not decoded)",
    BAD_AUDIO: f"non-finite or out-of-range waveform values in {schema.WAVEFORM!r}",
    BAD_FLAG: (
        f"{schema.ALIGNED_VA!r} / {schema.ALIGNED_VT!r} not 0 or 1, or a negative {schema.LABEL!r}"
    ),
    NOT_JPEG: f"a frame in {schema.IMAGE!r} is not a JPEG (does not start with FF D8 FF)",
}
# Per (shard, reason), the occurrences that get a log line; the others are only counted.
_LOGGED_OCCURRENCES = frozenset([1] + [10**k for k in range(1, 13)])


class BadRecordError(ValueError):
    """Raised under on_error='raise'; the message names the shard and the record index."""


class NoValidRecordsError(ValueError):
    """Raised under on_error='skip' when `max_bad_in_a_row` records in a row were rejected."""


class DataErrors:
    """Counts (and, under on_error='raise', raises on) rejected records. Thread-safe.

    Pass one to a pipeline and read it after (or during) iteration:
      errors = DataErrors(); ds = pretrain_dataset(cfg, 8, errors=errors); ...; errors.summary()

    Under 'skip' the log is rate-limited: one line for the first rejected record of each shard
    and reason (with its detail), then one line at the 10th, 100th, 1000th... with the count.
    `counts` holds the totals per reason name (`REASON_NAMES`), `by_shard` per (shard, name).
    When the pipeline stops on a bad record (or on `max_bad_in_a_row`), `failure` holds the
    one-line message, for the caller to report without TensorFlow's traceback.
    """

    def __init__(self, on_error: str = "raise", max_examples: int = 100):
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        self.on_error = on_error
        self.max_examples = max_examples
        self._lock = threading.Lock()
        self.counts: Dict[str, int] = {}
        self.by_shard: Dict[Tuple[str, str], int] = {}
        self.examples: List[Tuple[str, int, str]] = []  # (shard, record index, reason name)
        self.failure: Optional[str] = None
        self._empty_shards: Dict[str, int] = {}  # per source: shards in a row without a record
        self._rejected: Dict[str, Tuple[int, int]] = {}  # per source: (last position, run)

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self.counts.values())

    def totals(self) -> Dict[str, int]:
        """A copy of the totals per reason name."""
        with self._lock:
            return dict(self.counts)

    def _fail(self, error_type, message: str):
        with self._lock:
            if self.failure is None:
                self.failure = message
        raise error_type(message)

    def report(
        self, shard: str, index: int, reason: int, detail: Union[str, Callable[[], str]] = ""
    ) -> None:
        """Counts one rejected record (or raises under 'raise'). `detail` may be a callable,
        evaluated only when a line is written."""

        def message():
            text = detail() if callable(detail) else detail
            return f"shard {shard} record {index}: {REASONS[reason]}{': ' + text if text else ''}"

        if self.on_error == "raise":
            self._fail(
                BadRecordError,
                message()
                + " (set on_error='skip' in PretrainConfig / EvalConfig to skip and count such records)",
            )
        name = REASON_NAMES[reason]
        with self._lock:
            self.counts[name] = self.counts.get(name, 0) + 1
            n = self.by_shard[(shard, name)] = self.by_shard.get((shard, name), 0) + 1
            if len(self.examples) < self.max_examples:
                self.examples.append((shard, index, name))
        if n == 1:
            logging.warning(
                "skipping %s (further %s records of this shard are counted, logged at 10, 100...)",
                message(),
                name,
            )
        elif n in _LOGGED_OCCURRENCES:
            logging.warning(
                "shard %s: %d %s records skipped so far (latest: record %d)", shard, n, name, index
            )

    def rejected_in_a_row(self, source: str, position: int) -> int:
        """Records of `source` rejected in a row, this one (at stream `position`) included: a
        valid record between two rejected ones breaks their positions' run."""
        with self._lock:
            last, run = self._rejected.get(source, (None, 0))
            run = run + 1 if last is not None and position == last + 1 else 1
            self._rejected[source] = (position, run)
        return run

    def give_up(self, source: str, bad_in_a_row: int, shard: str, index: int, reason: int):
        """Raises NoValidRecordsError: `bad_in_a_row` records of `source` in a row were bad."""
        self._fail(
            NoValidRecordsError,
            f"no valid record among the last {bad_in_a_row} read from {source} "
            f"(latest: shard {shard} record {index}: {REASON_NAMES[reason]}); {self.summary()}; "
            "fix the data, or raise max_bad_in_a_row in PretrainConfig / EvalConfig",
        )

    def shard_read(self, source: str, shard: str, count: int, num_files: int) -> None:
        """Raises NoValidRecordsError once `num_files` shards of `source` in a row held no
        readable record (empty files, or corrupt at their first record): with `repeat` the
        pipeline would read them forever."""
        with self._lock:
            empty = self._empty_shards[source] = (
                0 if count else self._empty_shards.get(source, 0) + 1
            )
        if empty >= num_files:
            self._fail(
                NoValidRecordsError,
                f"none of the {num_files} shard(s) of {source} holds a readable record "
                f"(empty, or corrupt at record 0; latest: {shard}); {self.summary()}",
            )

    def summary(self) -> str:
        with self._lock:
            if not self.counts:
                return "no records skipped"
            lines = [f"{n} x {name}" for name, n in sorted(self.counts.items())]
            return f"skipped {sum(self.counts.values())} record(s): " + ", ".join(lines)


# ---------------------------------------------------------------------------------------------
# Configs (frozen dataclasses, every field bindable from gin)
# ---------------------------------------------------------------------------------------------
Patterns = Union[str, Tuple[str, ...]]

# Limits against hostile input (bindable from gin like every other field).
MAX_FRAME_PIXELS = 1920 * 1088  # a stored frame's JPEG header may claim at most this (1080p)
MAX_AUDIO_AMPLITUDE = 10.0  # stored waveforms are in [-1, 1]; larger values are rejected
MAX_BAD_IN_A_ROW = 1000  # under 'skip': stop when this many records in a row were rejected

INT, REAL = "an integer", "a number"


def check_fields(
    config, rules: Sequence[Tuple[str, str, float, Optional[float], bool]], name: str = ""
) -> None:
    """Raises ValueError naming the first field of `config` outside its range.

    config: an object (its attributes) or a dict; `name` (default: the class name) prefixes
    the field in the message. rules: (field, INT or REAL, low, high or None, low exclusive).
    NaN, inf and bools are rejected as numbers.
    """
    name = name or type(config).__name__
    for field, kind, low, high, exclusive in rules:
        value = config[field] if isinstance(config, dict) else getattr(config, field)
        numeric = isinstance(value, numbers.Real) and not isinstance(value, bool)
        if kind == INT:
            numeric = numeric and isinstance(value, numbers.Integral)
        ok = numeric and math.isfinite(value)
        ok = ok and (value > low if exclusive else value >= low) and (high is None or value <= high)
        if not ok:
            bound = f"{'>' if exclusive else '>='} {low:g}" + (
                f" and <= {high:g}" if high is not None else ""
            )
            raise ValueError(f"{name}.{field} = {value!r}: must be {kind} {bound}")


def _check_on_error(config):
    if config.on_error not in ON_ERROR:
        raise ValueError(
            f"{type(config).__name__}.on_error must be one of {ON_ERROR}, got {config.on_error!r}"
        )


_CLIP_RULES = (
    ("num_frames", INT, 1, None, False),
    ("crop_size", INT, 1, None, False),
    ("min_resize", INT, 1, None, False),
    ("sample_rate", INT, 1, None, False),
    ("audio_tolerance_seconds", REAL, 0, None, False),
    ("num_captions", INT, 1, None, False),
    ("max_tokens", INT, 1, None, False),
    ("cycle_length", INT, 1, None, False),
    ("max_frame_pixels", INT, 1, None, False),
    ("max_audio_amplitude", REAL, 0, None, True),
    ("max_bad_in_a_row", INT, 1, None, False),
)


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
        check_fields(
            self,
            [("fps", REAL, 0, None, True), ("stride", INT, 1, None, False)]
            + [("weight", REAL, 0, None, True)],
        )


@gin.configurable
@dataclasses.dataclass(frozen=True)
class PretrainConfig:
    """Pre-training input (paper Section 4.2 defaults)."""

    sources: Tuple[SourceConfig, ...] = ()
    num_frames: int = 32
    crop_size: int = 224
    # VATT's recipe (docs/data.md): short side to min_resize, crop crop_size; with probability
    # scale_jitter_prob the height and width scaled by independent factors ~ U(scale_jitter)
    # before the short side is resized; colour jitter with probability color_prob; audio noise
    # of std audio_noise x the clip's peak.
    min_resize: int = 224
    scale_jitter: Tuple[float, float] = (0.8, 1.2)
    scale_jitter_prob: float = 0.8
    flip: bool = True
    brightness: float = 32.0 / 255.0  # colour jitter: additive, in [0, 1] pixel units
    contrast: float = 0.4  # multiplicative factor in [1 - c, 1 + c]
    saturation: float = 0.4  # multiplicative factor in [1 - s, 1 + s]
    hue: float = 0.2  # additive, in turns of the colour circle
    color_prob: float = 0.8
    audio_noise: float = 0.01
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
    max_frame_pixels: int = MAX_FRAME_PIXELS
    max_audio_amplitude: float = MAX_AUDIO_AMPLITUDE
    max_bad_in_a_row: int = MAX_BAD_IN_A_ROW

    def __post_init__(self):
        if isinstance(self.sources, SourceConfig):
            object.__setattr__(self, "sources", (self.sources,))
        object.__setattr__(self, "sources", tuple(self.sources))
        object.__setattr__(self, "scale_jitter", tuple(self.scale_jitter))
        _check_on_error(self)
        check_fields(
            self,
            _CLIP_RULES
            + (
                ("brightness", REAL, 0, 1, False),
                ("contrast", REAL, 0, 1, False),
                ("saturation", REAL, 0, 1, False),
                ("hue", REAL, 0, 0.5, False),
                ("color_prob", REAL, 0, 1, False),
                ("scale_jitter_prob", REAL, 0, 1, False),
                ("audio_noise", REAL, 0, None, False),
                ("shuffle_buffer", INT, 0, None, False),
                ("seed", INT, 0, None, False),
            ),
        )
        if self.audio_seconds is not None:
            check_fields(self, [("audio_seconds", REAL, 0, None, True)])
        jitter = self.scale_jitter
        if not (
            len(jitter) == 2
            and all(isinstance(z, numbers.Real) and math.isfinite(z) for z in jitter)
            and 0 < jitter[0] <= jitter[1]
        ):
            raise ValueError(
                f"PretrainConfig.scale_jitter = {jitter!r}: must be (low, high), 0 < low <= high"
            )


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
    min_resize: int = 224  # VATT: the frame size (the central crop spans the short side)
    sample_rate: int = schema.SAMPLE_RATE
    audio_tolerance_seconds: float = 0.1
    num_captions: int = 1  # central narration(s); 1 = one caption per clip
    max_tokens: int = 16
    vocab_path: str = ""
    tokenizer: str = "word"
    cycle_length: int = 4
    on_error: str = "raise"
    max_frame_pixels: int = MAX_FRAME_PIXELS
    max_audio_amplitude: float = MAX_AUDIO_AMPLITUDE
    max_bad_in_a_row: int = MAX_BAD_IN_A_ROW

    def __post_init__(self):
        if isinstance(self.file_pattern, list):
            object.__setattr__(self, "file_pattern", tuple(self.file_pattern))
        _check_on_error(self)
        check_fields(
            self,
            _CLIP_RULES
            + (
                ("fps", REAL, 0, None, True),
                ("stride", INT, 1, None, False),
                ("num_windows", INT, 1, None, False),
            ),
        )


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
    scale_jitter_prob: float = 1.0
    max_frame_pixels: int = MAX_FRAME_PIXELS
    max_audio_amplitude: float = MAX_AUDIO_AMPLITUDE


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


def _readable_records(path: bytes, errors: DataErrors, source: str = "", num_files: int = 0) -> int:
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


def read_records(
    files: Sequence[str],
    errors: DataErrors,
    cycle_length: int,
    shuffle_files: bool,
    repeat: bool,
    seed: int,
    source: str = "",
) -> tf.data.Dataset:
    """(serialized, shard, index) triples, shards interleaved in parallel, deterministic order."""
    ds = tf.data.Dataset.from_tensor_slices(list(files))
    if shuffle_files:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    source = source or f"{len(files)} shard(s) from {files[0]}"

    def readable(path):
        try:
            return _readable_records(path.numpy(), errors, source, len(files)), ""
        except (BadRecordError, NoValidRecordsError) as e:
            return 0, str(e)

    def shard_records(path):
        count, message = tf.py_function(readable, [path], (tf.int64, tf.string))
        with tf.control_dependencies([_fail_in_graph(message)]):
            count = tf.identity(count)
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
    source: str = "",
) -> tf.data.Dataset:
    """(serialized, shard, index) triples of the training stream from `start.block_start` on."""
    files_t = tf.constant(list(files))
    c = _group_size(cycle_length, len(files))
    per_epoch = -(-len(files) // c)

    def shard_records(path, skip):
        def count_fn(p):
            try:
                n = _readable_records(p.numpy(), errors, source, len(files))
            except (BadRecordError, NoValidRecordsError) as e:
                return 0, str(e)
            counts.record(p.numpy().decode("utf-8"), n)
            return n, ""

        count, message = tf.py_function(count_fn, [path], (tf.int64, tf.string))
        with tf.control_dependencies([_fail_in_graph(message)]):
            count = tf.identity(count)
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
    source: str = "",
    max_bad_in_a_row: int = MAX_BAD_IN_A_ROW,
) -> tf.data.Dataset:
    """read from `start` -> shuffle blocks -> number -> decode -> check, for one source.

    Stops with NoValidRecordsError when `max_bad_in_a_row` records in a row were rejected, or
    when every shard in a row came out empty or corrupt at its first record (`source` names it).
    """
    source = source or f"{len(files)} shard(s) from {files[0]}"
    check = functools.partial(
        _check, errors=errors, spec=spec, source=source, max_bad_in_a_row=max_bad_in_a_row
    )
    op_seed = _source_seed(seed)
    block = max(1, shuffle_buffer)
    fill = repeat and block > 1
    base_seed = tf.constant(seed, tf.int64)
    records = read_records_from(files, errors, cycle_length, repeat, op_seed, start, counts, source)

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
        checked = decoded.filter(check)
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


_BLANK = r"[\s\p{Z}\p{Cc}]*"  # whitespace (ASCII and Unicode), NUL and other control characters


def _frame_pixels(frames: tf.Tensor) -> tf.Tensor:
    """int64 (F,): height x width that each JPEG header claims (read without decoding)."""
    shapes = tf.map_fn(
        lambda jpeg: tf.image.extract_jpeg_shape(jpeg)[:2],
        frames,
        fn_output_signature=tf.TensorSpec([2], tf.int32),
    )
    shapes = tf.cast(tf.reshape(shapes, [-1, 2]), tf.int64)
    return shapes[:, 0] * shapes[:, 1]


def _decode(serialized: tf.Tensor, seed: tf.Tensor, spec: _ClipSpec) -> dict:
    """Parses and validates one record and decodes the frames and audio of its window(s).

    Nothing is decoded unless every check passes: a JPEG header claiming more than
    `max_frame_pixels` (a decompression bomb) is caught from the header alone.
    """
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
    empty_caption = tf.reduce_any(tf.strings.regex_full_match(parsed["captions"], _BLANK))
    bad_audio = tf.logical_not(
        tf.reduce_all(tf.abs(audio) <= spec.max_audio_amplitude)  # False for NaN as well
    )
    flags = tf.stack([parsed["aligned_va"], parsed["aligned_vt"]])
    bad_flag = tf.reduce_any((flags != 0) & (flags != 1)) | tf.reduce_any(parsed["labels"] < 0)
    # Headers are read only when every frame starts like a JPEG (libjpeg would print a line
    # for each one that does not).
    not_jpeg = tf.reduce_any(tf.strings.substr(parsed["frames"], 0, 3) != b"\xff\xd8\xff")
    too_large = tf.cond(
        not_jpeg,
        lambda: tf.constant(False),
        lambda: tf.reduce_any(_frame_pixels(parsed["frames"]) > spec.max_frame_pixels),
    )

    reason = tf.constant(OK, tf.int32)
    reason = tf.where(has_audio & (audio_len < needed - spec.audio_tolerance), SHORT_AUDIO, reason)
    reason = tf.where(bad_audio, BAD_AUDIO, reason)
    reason = tf.where(empty_caption, EMPTY_CAPTION, reason)
    reason = tf.where(bad_flag, BAD_FLAG, reason)
    reason = tf.where(too_large, FRAME_TOO_LARGE, reason)
    reason = tf.where(not_jpeg, NOT_JPEG, reason)
    reason = tf.where(num_stored == 0, NO_VIDEO, reason)

    def decode_branch():
        box = augment.crop_box(
            tf.image.extract_jpeg_shape(parsed["frames"][0]),
            spec.crop_size,
            spec.min_resize,
            spec.scale_jitter,
            crop_seed if spec.training else None,
            spec.scale_jitter_prob,
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


def _explain(serialized: bytes, seed, reason: int, spec: _ClipSpec) -> str:
    """The detail of a rejected record (re-read eagerly, only when a line is written)."""
    try:
        parsed = schema.parse_sequence_example(tf.constant(serialized))
        if reason == UNDECODABLE:
            _decode(tf.constant(serialized), tf.constant(seed, tf.int64), spec)
            return ""
        if reason == FRAME_TOO_LARGE:
            pixels = _frame_pixels(parsed["frames"]).numpy()
            i = int((pixels > spec.max_frame_pixels).argmax())
            h, w = tf.image.extract_jpeg_shape(parsed["frames"][i]).numpy()[:2]
            return f"frame {i} claims {h} x {w} (limit max_frame_pixels={spec.max_frame_pixels})"
        if reason == BAD_AUDIO:
            audio = parsed["audio"].numpy()
            i = int((~(np.abs(audio) <= spec.max_audio_amplitude)).argmax())
            return (
                f"sample {i} of {audio.size} is {audio[i]!r} "
                f"(limit |value| <= max_audio_amplitude={spec.max_audio_amplitude:g})"
            )
        if reason == BAD_FLAG:
            return (
                f"aligned_va={int(parsed['aligned_va'])}, aligned_vt={int(parsed['aligned_vt'])}, "
                f"labels={parsed['labels'].numpy().tolist()[:8]}"
            )
        if reason == EMPTY_CAPTION:
            captions = parsed["captions"].numpy()
            blank = tf.strings.regex_full_match(captions, _BLANK).numpy()
            return f"caption {int(blank.argmax())} is {captions[blank.argmax()][:20]!r}"
        if reason == NOT_JPEG:
            starts = tf.strings.substr(parsed["frames"], 0, 3).numpy()
            i = [s == b"\xff\xd8\xff" for s in starts].index(False)
            return f"frame {i} starts with {parsed['frames'][i].numpy()[:8]!r}"
        if reason == SHORT_AUDIO:
            return f"{int(tf.size(parsed['audio']))} samples stored"
    except tf.errors.OpError as e:
        return e.message.splitlines()[0][:300]
    return ""


def _guarded(element_index, record, shard, record_index, spec: _ClipSpec, base_seed):
    """Runs `_decode` on one record; an op error becomes a reason=UNDECODABLE element."""
    seed = tf.random.experimental.stateless_fold_in(base_seed, element_index)
    good = (
        tf.data.Dataset.from_tensors((record, seed))
        .map(lambda r, s: _decode(r, s, spec))
        .ignore_errors(log_warning=False)  # reported (and explained) by `_check`
    )
    bad = tf.data.Dataset.from_tensors(_empty_clip(spec, UNDECODABLE))
    extra = {
        "shard": shard,
        "record_index": record_index,
        "seed": seed,
        "record": record,
        "position": element_index,  # in the source's stream: rejected records in a row are
    }  # consecutive positions (DataErrors.rejected_in_a_row), across shuffle blocks too
    return good.concatenate(bad).take(1).map(lambda ex: {**ex, **extra})


def _fail_in_graph(message: tf.Tensor) -> tf.Tensor:
    """An op that fails with `message` unless it is empty.

    Raising inside a py_function would log its Python traceback from every op that sees the
    error; an assertion carries the one-line message only (kept in `DataErrors.failure`).
    """
    return tf.debugging.Assert(tf.equal(message, ""), [message], summarize=1)


def _check(
    example: dict, errors: DataErrors, spec: _ClipSpec, source: str, max_bad_in_a_row: int
) -> tf.Tensor:
    """Filter predicate: True for valid records; reports the others (may fail the pipeline)."""

    def report(shard, index, reason, record, seed, position):
        shard, index, reason = shard.numpy().decode("utf-8"), int(index), int(reason)
        try:
            errors.report(
                shard,
                index,
                reason,
                lambda: _explain(record.numpy(), seed.numpy(), reason, spec),
            )
            bad_in_a_row = errors.rejected_in_a_row(source, int(position))
            if bad_in_a_row >= max_bad_in_a_row:
                errors.give_up(source, bad_in_a_row, shard, index, reason)
        except (BadRecordError, NoValidRecordsError) as e:
            return str(e)
        return ""

    def rejected():
        args = ("shard", "record_index", "reason", "record", "seed", "position")
        message = tf.py_function(report, [example[k] for k in args], Tout=tf.string)
        with tf.control_dependencies([_fail_in_graph(message)]):
            return tf.constant(False)

    return tf.cond(example["reason"] == OK, lambda: tf.constant(True), rejected)


def decoded_clips(
    files: Sequence[str],
    spec: _ClipSpec,
    errors: DataErrors,
    *,
    cycle_length: int,
    shuffle_buffer: int,
    repeat: bool,
    seed: Tuple[int, int],
    source: str = "",
    max_bad_in_a_row: int = MAX_BAD_IN_A_ROW,
) -> tf.data.Dataset:
    """read -> shuffle -> number -> decode -> check, for one source.

    Stops with NoValidRecordsError when `max_bad_in_a_row` records in a row were rejected, or
    when every shard in a row came out empty or corrupt at its first record (`source` names it).
    """
    source = source or f"{len(files)} shard(s) from {files[0]}"
    op_seed = int(seed[0]) * 7919 + int(seed[1])
    ds = read_records(
        files,
        errors,
        cycle_length,
        shuffle_files=spec.training,
        repeat=repeat,
        seed=op_seed,
        source=source,
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
    return ds.filter(
        functools.partial(
            _check, errors=errors, spec=spec, source=source, max_bad_in_a_row=max_bad_in_a_row
        )
    )


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
    color: Optional[Tuple[bool, float, float, float, float, float]],
    keep_strings: bool,
    audio_noise: float = 0.0,
) -> dict:
    """augment: frames -> [-1, 1] clip(s), narrations -> token ids + mask; drops bookkeeping."""
    aug_seed, caption_seed = tf.unstack(tf.random.experimental.stateless_split(example["seed"], 2))
    video = augment.resize_frames(example["frames"], spec.crop_size)  # (W, T, H, W, 3)
    if spec.training:
        video = video[0]  # (T, H, W, 3)
        if color is not None:
            video = augment.flip_and_color(video, aug_seed, *color)
        audio = example["audio"][0]  # (S,)
        noise_seed = tf.random.experimental.stateless_fold_in(aug_seed, 1)
        audio = augment.add_audio_noise(audio, noise_seed, audio_noise)
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
                scale_jitter_prob=config.scale_jitter_prob,
                sample_rate=config.sample_rate,
                audio_samples=samples,
                audio_tolerance=int(round(config.audio_tolerance_seconds * config.sample_rate)),
                training=True,
                max_frame_pixels=config.max_frame_pixels,
                max_audio_amplitude=config.max_audio_amplitude,
            )
        )
    lengths = {s.audio_samples for s in specs}
    if len(lengths) > 1:
        windows = ", ".join(
            f"{source.name or source.file_pattern} {spec.audio_samples}"
            for source, spec in zip(config.sources, specs)
        )
        raise ValueError(
            f"sources cover different time windows (audio samples: {windows}): set "
            "PretrainConfig.audio_seconds (one audio window for all sources, e.g. 3.2) or make "
            "num_frames * stride / fps equal"
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
    color = (
        config.flip,
        config.brightness,
        config.contrast,
        config.saturation,
        config.hue,
        config.color_prob,
    )
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
            source=f"source {source.name or source.file_pattern!r}",
            max_bad_in_a_row=config.max_bad_in_a_row,
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
                    audio_noise=config.audio_noise,
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
        max_frame_pixels=config.max_frame_pixels,
        max_audio_amplitude=config.max_audio_amplitude,
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
        source=f"EvalConfig.file_pattern {config.file_pattern!r}",
        max_bad_in_a_row=config.max_bad_in_a_row,
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
