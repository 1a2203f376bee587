"""Modality-specific tokenizers of VATT: raw signal -> token grid of the encoder's width.

Each tokenizer cuts its modality into non-overlapping patches (video, audio) or words (text) and
embeds them; a per-modality pre-projection Dense(hidden, GELU) follows where VATT has one
(VATT-MA: every modality; VATT-MS: text only, without bias). The output keeps the token grid
((B, t, h, w, D) for video, (B, n, D) for audio and text) so the factorised positional embedding
can be added per axis.
"""

from typing import Optional, Tuple

import numpy as np
import tensorflow as tf
from absl import logging

from vatt_gh.models.backbone import AggregationToken

# VATT's pre- and post-projection activation (exact GELU, Keras' default).
PROJECTION_ACTIVATION = "gelu"


class Projection(tf.keras.layers.Layer):
    """GELU(x W [+ b]): VATT's Dense(width, activation='gelu'), kept as a linear Dense followed
    by an Activation layer so the Dense stays a plain linear map (per-example statistics)."""

    def __init__(self, width: int, use_bias: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.dense = tf.keras.layers.Dense(width, use_bias=use_bias, name="dense")
        self.activation = tf.keras.layers.Activation(PROJECTION_ACTIVATION, name="gelu")

    def call(self, x: tf.Tensor) -> tf.Tensor:
        return self.activation(self.dense(x))


def _pre_projection(hidden_size: Optional[int], use_bias: bool = True):
    """GELU(Dense(hidden_size)) or None (no pre-projection: VATT-MS video and audio)."""
    if hidden_size is None:
        return None
    return Projection(hidden_size, use_bias=use_bias, name="projection")


class VideoTokenizer(tf.keras.layers.Layer):
    """(B, T, H, W, 3) pixels -> (B, T/pt, H/ph, W/pw, D): Conv3D patches [, Dense + GELU]."""

    def __init__(
        self,
        patch_size: Tuple[int, int, int],
        patch_dim: int,
        projection_size: Optional[int],
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.patch_size = tuple(patch_size)
        self.voxel_to_patch = tf.keras.layers.Conv3D(
            patch_dim,
            kernel_size=self.patch_size,
            strides=self.patch_size,
            padding="valid",
            name="voxel_to_patch",
        )
        self.projection = _pre_projection(projection_size)

    def call(self, video: tf.Tensor) -> tf.Tensor:
        patches = self.voxel_to_patch(video)  # (B, t, h, w, patch_dim)
        return patches if self.projection is None else self.projection(patches)  # (..., D)


class AudioTokenizer(tf.keras.layers.Layer):
    """(B, S) waveform -> (B, S/p, D): Conv1D patches of p samples [, Dense + GELU]."""

    def __init__(self, patch_size: int, patch_dim: int, projection_size: Optional[int], **kwargs):
        super().__init__(**kwargs)
        self.patch_size = int(patch_size)
        self.wave_to_patch = tf.keras.layers.Conv1D(
            patch_dim,
            kernel_size=self.patch_size,
            strides=self.patch_size,
            padding="valid",
            name="wave_to_patch",
        )
        self.projection = _pre_projection(projection_size)

    def call(self, audio: tf.Tensor) -> tf.Tensor:
        patches = self.wave_to_patch(audio[..., None])  # (B, n, patch_dim)
        return patches if self.projection is None else self.projection(patches)  # (B, n, D)


def load_word_vectors(path: str, vocab_size: int, word_dim: int) -> np.ndarray:
    """Loads a (vocab_size, word_dim) float array aligned with the vocabulary from a .npy file
    (local or any tf.io.gfile path). One-line ValueError naming the file on bad content."""
    try:
        with tf.io.gfile.GFile(path, "rb") as f:
            vectors = np.load(f, allow_pickle=False)
    except (OSError, ValueError, tf.errors.OpError) as e:
        raise ValueError(f"Word vectors {path!r} cannot be read as a .npy array: {e}") from None
    if vectors.shape != (vocab_size, word_dim):
        raise ValueError(
            f"Word vectors in {path!r} have shape {vectors.shape}, but the model expects "
            f"(vocab_size, word_dim) = {(vocab_size, word_dim)}."
        )
    if not np.issubdtype(vectors.dtype, np.floating) or not np.all(np.isfinite(vectors)):
        raise ValueError(f"Word vectors in {path!r} must be finite floats (dtype {vectors.dtype}).")
    return vectors.astype(np.float32)


class TextTokenizer(tf.keras.layers.Layer):
    """(N, L) int token ids (0 = pad) -> (N, L, D): word embedding, then Dense + GELU.

    With `aggregation_token` (VATT's T5 text model) a learned aggregation token of the word
    width is prepended to the word vectors before the projection: (N, L) -> (N, 1 + L, D).

    The embedding table is FROZEN unless `trainable_word_vectors` (VATT keeps its pretrained
    word2vec table frozen). With `word_vectors_path` it is loaded from that .npy file (made by
    tools/build_word_vectors.py); without, it is Keras' random-uniform initialisation, which is
    meant for tests only and logged as a warning when frozen.
    """

    def __init__(
        self,
        vocab_size: int,
        word_dim: int,
        projection_size: int,
        word_vectors_path: Optional[str] = None,
        trainable_word_vectors: bool = False,
        projection_bias: bool = True,
        aggregation_token: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.aggregation = AggregationToken(name="aggregation_token") if aggregation_token else None
        self.random_frozen_table = word_vectors_path is None and not trainable_word_vectors
        if word_vectors_path is None:
            initializer = "uniform"
        else:
            vectors = load_word_vectors(word_vectors_path, vocab_size, word_dim)
            initializer = tf.keras.initializers.Constant(vectors)
        self.word_embedding = tf.keras.layers.Embedding(
            vocab_size,
            word_dim,
            embeddings_initializer=initializer,
            trainable=trainable_word_vectors,
            name="word_embedding",
        )
        self.projection = _pre_projection(projection_size, use_bias=projection_bias)

    def build(self, input_shape):
        if self.random_frozen_table:  # when the weights are made, not for an unbuilt model
            logging.warning(
                "%s: no word_vectors_path, the frozen word table is random (tests only); "
                "build one with tools/build_word_vectors.py",
                self.name,
            )
        super().build(input_shape)

    def call(self, text_ids: tf.Tensor) -> tf.Tensor:
        words = self.word_embedding(text_ids)  # (N, L, word_dim)
        if self.aggregation is not None:
            words = self.aggregation(words)  # (N, 1 + L, word_dim)
        return self.projection(words)  # (N, [1 +] L, D)
