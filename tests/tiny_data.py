"""Tiny input-pipeline data for the data tests: shards of records and a small PretrainConfig.

path = write_shard(tmp_path / "a.tfrecord", records)   # SequenceExamples or raw bytes
config = tiny_pretrain_config(vocab, path, on_error="skip")
"""

import numpy as np
import tensorflow as tf

from vatt_gh.data.configs import PretrainConfig, SourceConfig


def grey_jpeg(value, size=8, quality=95) -> bytes:
    """A `size` x `size` JPEG of one grey `value` (quality 95: tf.io.encode_jpeg's default)."""
    image = np.full((size, size, 3), value, np.uint8)
    return tf.io.encode_jpeg(image, quality=quality).numpy()


def write_shard(path, records) -> str:
    """One TFRecord shard of `records`, in order: SequenceExamples (serialized here) or bytes
    written as they are (a test's damaged or hostile records). Returns the path."""
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record if isinstance(record, bytes) else record.SerializeToString())
    return str(path)


def tiny_pretrain_config(vocab, *sources, **settings) -> PretrainConfig:
    """A PretrainConfig of tiny clips: 4 frames of 8 x 8 (resized to 8, cropped to 8), one
    caption of at most 2 tokens from `vocab`, each record read once in file order (no shuffle,
    one shard at a time, no repeat). `sources`: file patterns or SourceConfigs; `settings`
    replace any field (e.g. `repeat=True`, `on_error="skip"`)."""
    fields = dict(
        sources=tuple(SourceConfig(s) if isinstance(s, str) else s for s in sources),
        num_frames=4,
        crop_size=8,
        min_resize=8,
        num_captions=1,
        max_tokens=2,
        vocab_path=vocab,
        shuffle_buffer=1,
        cycle_length=1,
        repeat=False,
    )
    fields.update(settings)
    return PretrainConfig(**fields)
