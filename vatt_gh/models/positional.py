"""Learned factorised positional embeddings (VATT): one table per token-grid axis, summed.

Video uses three tables (t, h, w) whose broadcast sum gives every (t, h, w) token its own
embedding; audio and text use one temporal table. When the input's token grid differs from the
configured one, each table is resampled along its axis with `tfa.image.interpolate_spline`
(as VATT does, on VATT's bucket positions i / n; it compiles under XLA). At the configured size
the tables are used unchanged.

`PositionalEncoding` is VATT's whole step: tokens + LayerNorm(sum of tables), then dropout.
"""

from typing import Sequence

import tensorflow as tf
import tensorflow_addons as tfa

# Polyharmonic spline order used to resample a table (3: cubic radial basis).
SPLINE_ORDER = 3


def interpolate_table(table: tf.Tensor, length: int) -> tf.Tensor:
    """Resamples a (n, D) positional table to (length, D) with a spline: row i of the table sits
    at i / n and output row j is read at j / length (VATT's bucket positions)."""
    n = table.shape[0]
    if n == length:
        return table
    if n == 1:
        return tf.tile(table, [length, 1])
    train_points = (tf.range(n, dtype=tf.float32) / n)[None, :, None]  # (1, n, 1)
    query_points = (tf.range(length, dtype=tf.float32) / length)[None, :, None]  # (1, length, 1)
    resampled = tfa.image.interpolate_spline(
        train_points, table[None], query_points, order=SPLINE_ORDER
    )
    return resampled[0]  # (length, D)


class FactorisedPositionalEmbedding(tf.keras.layers.Layer):
    """Adds sum_i table_i[position_i] to tokens shaped (B, n_1, ..., n_k, D).

    Tables are initialised truncated-normal with stddev D^-0.5, as VATT's."""

    def __init__(self, grid_size: Sequence[int], axis_names: Sequence[str], **kwargs):
        super().__init__(**kwargs)
        if len(grid_size) != len(axis_names):
            raise ValueError(f"grid_size {grid_size} and axis_names {axis_names} differ in length.")
        self.grid_size = tuple(int(n) for n in grid_size)
        self.axis_names = tuple(axis_names)

    def build(self, input_shape):
        hidden_size = int(input_shape[-1])
        self.tables = [
            self.add_weight(
                name=f"{name}_embedding",
                shape=(n, hidden_size),
                initializer=tf.keras.initializers.TruncatedNormal(stddev=hidden_size**-0.5),
            )
            for name, n in zip(self.axis_names, self.grid_size)
        ]
        super().build(input_shape)

    def call(self, tokens: tf.Tensor) -> tf.Tensor:
        rank = len(self.grid_size)  # tokens: (B, n_1, ..., n_rank, D)
        input_grid = tokens.shape[1 : 1 + rank]
        if None in input_grid:
            raise ValueError(f"{self.name} needs a static token grid, got {tokens.shape}.")
        for axis, (table, length) in enumerate(zip(self.tables, input_grid)):
            table = interpolate_table(tf.cast(table, tf.float32), length)  # (n_axis, D)
            shape = [1] * (rank + 1) + [table.shape[-1]]
            shape[1 + axis] = length
            tokens = tokens + tf.reshape(tf.cast(table, tokens.dtype), shape)
        return tokens


class PositionalEncoding(tf.keras.layers.Layer):
    """VATT's positional step: dropout(tokens + LayerNorm(sum_i table_i[position_i])).

    tokens (B, n_1, ..., n_k, D) -> same shape. Built from standard layers: the tables
    (`FactorisedPositionalEmbedding`, applied to zeros shaped like the tokens so every layer's
    input and output keep the batch axis), a LayerNormalization and a Dropout.
    """

    def __init__(
        self,
        grid_size: Sequence[int],
        axis_names: Sequence[str],
        norm_epsilon: float = 1e-6,
        dropout_rate: float = 0.1,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.embedding = FactorisedPositionalEmbedding(grid_size, axis_names, name="embedding")
        self.layer_norm = tf.keras.layers.LayerNormalization(
            epsilon=norm_epsilon, name="layer_norm"
        )
        self.dropout = tf.keras.layers.Dropout(dropout_rate, name="dropout")

    def call(self, tokens: tf.Tensor, training=None) -> tf.Tensor:
        positions = self.embedding(tf.zeros_like(tokens))  # (B, n_1, ..., n_k, D)
        return self.dropout(tokens + self.layer_norm(positions), training=training)
