"""Modality-specific tokenizers of VATT: raw signal -> token grid of width `hidden_size`.

Each tokenizer cuts its modality into non-overlapping patches (video, audio) or words (text),
embeds them, and applies a per-modality Dense projection to the Transformer's hidden size. The
output keeps the token grid ((B, t, h, w, D) for video, (B, n, D) for audio and text) so the
factorised positional embedding can be added per axis.
"""

from typing import Optional, Tuple

import numpy as np
import tensorflow as tf


class VideoTokenizer(tf.keras.layers.Layer):
    """(B, T, H, W, 3) pixels -> (B, T/pt, H/ph, W/pw, D) tokens: Conv3D patches, then Dense."""

    def __init__(
        self, patch_size: Tuple[int, int, int], patch_dim: int, hidden_size: int, **kwargs
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
        self.projection = tf.keras.layers.Dense(hidden_size, name="projection")

    def call(self, video: tf.Tensor) -> tf.Tensor:
        patches = self.voxel_to_patch(video)  # (B, t, h, w, patch_dim)
        return self.projection(patches)  # (B, t, h, w, D)


class AudioTokenizer(tf.keras.layers.Layer):
    """(B, S) waveform -> (B, S/p, D) tokens: Conv1D patches of p samples, then Dense."""

    def __init__(self, patch_size: int, patch_dim: int, hidden_size: int, **kwargs):
        super().__init__(**kwargs)
        self.patch_size = int(patch_size)
        self.wave_to_patch = tf.keras.layers.Conv1D(
            patch_dim,
            kernel_size=self.patch_size,
            strides=self.patch_size,
            padding="valid",
            name="wave_to_patch",
        )
        self.projection = tf.keras.layers.Dense(hidden_size, name="projection")

    def call(self, audio: tf.Tensor) -> tf.Tensor:
        patches = self.wave_to_patch(audio[..., None])  # (B, n, patch_dim)
        return self.projection(patches)  # (B, n, D)


def load_word_vectors(path: str, vocab_size: int, word_dim: int) -> np.ndarray:
    """Loads a (vocab_size, word_dim) float array aligned with the vocabulary from a .npy file."""
    vectors = np.load(path)
    if vectors.shape != (vocab_size, word_dim):
        raise ValueError(
            f"Word vectors in {path!r} have shape {vectors.shape}, but the model expects "
            f"(vocab_size, word_dim) = {(vocab_size, word_dim)}."
        )
    return vectors.astype(np.float32)


class TextTokenizer(tf.keras.layers.Layer):
    """(N, L) int token ids (0 = pad) -> (N, L, D) tokens: word embedding, then Dense.

    With `word_vectors_path`, the embedding table is loaded from that .npy file and frozen (it is
    not among the trainable variables), as VATT does with its pretrained word2vec table.
    """

    def __init__(
        self,
        vocab_size: int,
        word_dim: int,
        hidden_size: int,
        word_vectors_path: Optional[str] = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if word_vectors_path is None:
            initializer, trainable = "uniform", True
        else:
            vectors = load_word_vectors(word_vectors_path, vocab_size, word_dim)
            initializer, trainable = tf.keras.initializers.Constant(vectors), False
        self.word_embedding = tf.keras.layers.Embedding(
            vocab_size,
            word_dim,
            embeddings_initializer=initializer,
            trainable=trainable,
            name="word_embedding",
        )
        self.projection = tf.keras.layers.Dense(hidden_size, name="projection")

    def call(self, text_ids: tf.Tensor) -> tf.Tensor:
        words = self.word_embedding(text_ids)  # (N, L, word_dim)
        return self.projection(words)  # (N, L, D)
