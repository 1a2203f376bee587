"""Rejected records: the reasons, their accounting (`DataErrors`) and the errors that stop a run.

    errors = DataErrors("skip"); ds = pretrain_dataset(config, 8, errors=errors); ...
    errors.summary()   # "skipped 3 record(s): 2 x bad_audio_values, 1 x empty_caption"

Reason codes are ints so that they travel through the graph; `REASON_NAMES` gives the short
name (the key of `DataErrors.counts` and of the `data/skipped/<name>` summaries) and `REASONS`
the sentence of the log line. `fail_in_graph` is the op through which a rejection's one-line
message stops a tf.data pipeline.
"""

import threading
from typing import Callable, Dict, List, Optional, Tuple, Union

import tensorflow as tf
from absl import logging

from vatt_gh.data import schema

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
    NO_AUDIO,
) = range(11)
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
    NO_AUDIO: "no_audio",
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
    NO_AUDIO: f"no audio (missing {schema.WAVEFORM!r}) in an audio-only evaluation",
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


def fail_in_graph(message: tf.Tensor) -> tf.Tensor:
    """An op that fails with `message` unless it is empty.

    Raising inside a py_function would log its Python traceback from every op that sees the
    error; an assertion carries the one-line message only (kept in `DataErrors.failure`).
    """
    return tf.debugging.Assert(tf.equal(message, ""), [message], summarize=1)
