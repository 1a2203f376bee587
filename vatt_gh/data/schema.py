"""TFRecord triplet layout (docs/data.md): feature keys, the writer and the parser.

One clip per record, a DMVR-style `tf.train.SequenceExample`:

| key                       | where         | content                                           |
| ------------------------- | ------------- | ------------------------------------------------- |
| `clip/id`                 | context bytes | clip identifier (video id + start time)           |
| `caption/string`          | context bytes | the clip's narration and neighbours, time order   |
| `clip/label/index`        | context int64 | class labels (optional)                           |
| `image/encoded`           | feature list  | one JPEG per frame (stored at the source's fps)   |
| `WAVEFORM/feature/floats` | feature list  | mono 48 kHz float chunks (one chunk per frame)    |
| `synthetic/aligned_va`    | context int64 | synthetic data only: 1 if audio matches the video |
| `synthetic/aligned_vt`    | context int64 | synthetic data only: 1 if text matches the video  |

A pre-training record may lack audio or text (the pipeline masks them), never video. An
evaluation record may be audio-only (ESC50: no `image/encoded`, its audio and label), written with
`make_sequence_example(..., audio_only=True)` and read by `EvalConfig(audio_only=True)`. Both the writer
(`make_sequence_example`) and the parser (`parse_sequence_example`) use the constants below, so the
two cannot drift apart.
"""

from typing import Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf

CLIP_ID = "clip/id"
CAPTION = "caption/string"
LABEL = "clip/label/index"
IMAGE = "image/encoded"
WAVEFORM = "WAVEFORM/feature/floats"
ALIGNED_VA = "synthetic/aligned_va"
ALIGNED_VT = "synthetic/aligned_vt"
# Extra synthetic ground truth: the class the audio / the text was generated from.
AUDIO_CLASS = "synthetic/audio_class"
TEXT_CLASS = "synthetic/text_class"

SAMPLE_RATE = 48000  # Hz, every stored waveform


def _bytes(values: Sequence[bytes]) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=list(values)))


def _ints(values: Sequence[int]) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))


def _floats(values: np.ndarray) -> tf.train.Feature:
    return tf.train.Feature(float_list=tf.train.FloatList(value=values))


def make_sequence_example(
    clip_id: str,
    jpeg_frames: Sequence[bytes],
    audio: Optional[np.ndarray] = None,
    captions: Sequence[str] = (),
    labels: Sequence[int] = (),
    audio_chunk: int = 4800,
    extra_int_context: Optional[Mapping[str, Sequence[int]]] = None,
    audio_only: bool = False,
) -> tf.train.SequenceExample:
    """Serialisable record of one clip.

    Args:
      clip_id: identifier, e.g. "<video id>_<start seconds>".
      jpeg_frames: encoded JPEG bytes, one per frame (at least one).
      audio: mono float waveform at 48 kHz (any length), or None when the clip has no audio.
      captions: narrations in time order (may be empty: a clip without text).
      labels: class indices (may be empty).
      audio_chunk: samples per stored chunk (48000 / fps keeps one chunk per frame).
      extra_int_context: further int64 context features, e.g. the synthetic ground truth.
      audio_only: an evaluation record of audio without frames (ESC50); needs audio.
    """
    if audio_only:
        if jpeg_frames or audio is None or not len(audio):
            raise ValueError(f"clip {clip_id!r}: an audio-only record has audio and no frames")
    elif not jpeg_frames:
        raise ValueError(f"clip {clip_id!r}: a record needs at least one video frame")
    seq = tf.train.SequenceExample()
    ctx = seq.context.feature
    ctx[CLIP_ID].CopyFrom(_bytes([clip_id.encode("utf-8")]))
    if captions:
        ctx[CAPTION].CopyFrom(_bytes([c.encode("utf-8") for c in captions]))
    if len(labels):
        ctx[LABEL].CopyFrom(_ints(labels))
    for key, values in (extra_int_context or {}).items():
        ctx[key].CopyFrom(_ints(values))
    images = seq.feature_lists.feature_list[IMAGE].feature
    for jpeg in jpeg_frames:
        images.add().bytes_list.value.append(jpeg)
    if audio is not None and len(audio):
        audio = np.asarray(audio, np.float32).reshape(-1)
        chunks = seq.feature_lists.feature_list[WAVEFORM].feature
        for start in range(0, len(audio), audio_chunk):
            chunks.add().float_list.value.extend(audio[start : start + audio_chunk].tolist())
    return seq


def parse_sequence_example(serialized: tf.Tensor) -> dict:
    """Parses one serialized record into dense tensors (missing optional fields become empty).

    Returns a dict with:
      'clip_id': string scalar ('' when absent)
      'captions': string (C,)        'labels': int64 (N,)
      'frames': string (F,) JPEGs    'audio': float32 (A,) 48 kHz waveform (A = 0 without audio)
      'aligned_va', 'aligned_vt': int64 scalars (1 when absent, i.e. real data)
    """
    context_features = {
        CLIP_ID: tf.io.FixedLenFeature([], tf.string, default_value=""),
        CAPTION: tf.io.VarLenFeature(tf.string),
        LABEL: tf.io.VarLenFeature(tf.int64),
        ALIGNED_VA: tf.io.FixedLenFeature([], tf.int64, default_value=1),
        ALIGNED_VT: tf.io.FixedLenFeature([], tf.int64, default_value=1),
    }
    sequence_features = {
        IMAGE: tf.io.VarLenFeature(tf.string),
        WAVEFORM: tf.io.VarLenFeature(tf.float32),
    }
    context, sequence = tf.io.parse_single_sequence_example(
        serialized, context_features=context_features, sequence_features=sequence_features
    )
    return {
        "clip_id": context[CLIP_ID],
        "captions": context[CAPTION].values,
        "labels": context[LABEL].values,
        "frames": sequence[IMAGE].values,
        "audio": sequence[WAVEFORM].values,  # chunks concatenated in order
        "aligned_va": context[ALIGNED_VA],
        "aligned_vt": context[ALIGNED_VT],
    }


def write_records(path: str, examples) -> int:
    """Writes an iterable of SequenceExamples to one TFRecord file; returns the count."""
    n = 0
    with tf.io.TFRecordWriter(path) as writer:
        for example in examples:
            writer.write(example.SerializeToString())
            n += 1
    return n
