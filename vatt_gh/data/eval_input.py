"""Evaluation input: every clip once, in file order, central windows stacked on axis 1.

    for batch in eval_dataset(EvalConfig(file_pattern="/data/test-*"), batch_size=16): ...

The positioned reader of pre-training at position 0, unshuffled (files in sorted order, read
round-robin `cycle_length` at a time, no shuffle block, no repeat). Batches:
  'video' (B, NW, T, H, W, 3), 'audio' (B, NW, S), 'text' (B, K, L) central narration(s) (K = 1 by
  default: one caption per clip for retrieval), 'audio_mask', 'text_mask', 'label', the aligned
  flags and 'clip_id' (string); the last batch may be smaller (no clip is dropped).
"""

from typing import Optional

import tensorflow as tf

from vatt_gh.data import text as text_lib
from vatt_gh.data.clips import finished, source_clips
from vatt_gh.data.configs import EvalConfig, eval_spec
from vatt_gh.data.position import SourcePosition
from vatt_gh.data.read import ShardCounts, list_files
from vatt_gh.data.rejects import DataErrors


def eval_dataset(
    config: EvalConfig, batch_size: int, errors: Optional[DataErrors] = None
) -> tf.data.Dataset:
    """Every clip once, in file order; the last batch may be smaller (no clip is dropped)."""
    errors = errors if errors is not None else DataErrors(config.on_error)
    spec = eval_spec(config)
    tokenizer = text_lib.Tokenizer(config.vocab_path, config.tokenizer, config.max_tokens)
    clips = source_clips(
        list_files(config.file_pattern),
        spec,
        errors,
        cycle_length=config.cycle_length,
        shuffle_buffer=0,
        repeat=False,
        seed=(0, 0),
        start=SourcePosition(),
        counts=ShardCounts(),
        source=f"EvalConfig.file_pattern {config.file_pattern!r}",
        max_bad_in_a_row=config.max_bad_in_a_row,
        shuffle_files=False,
    )
    ds = finished(clips, spec, tokenizer, config.num_captions, keep_strings=True)
    return ds.batch(batch_size, drop_remainder=False).prefetch(tf.data.AUTOTUNE)
