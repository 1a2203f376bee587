"""VATT-MS's text encoder: the T5 encoder stack as VATT builds it (its `t5_small` text backbone).

Compared with the pre-norm block of the other encoders (`vatt_gh.models.backbone`):
- no biases anywhere: the attention projections q, k, v, o and the feed-forward wi, wo;
- attention logits are q . k, NOT divided by sqrt(d_kv) (T5 folds that scale into the weights);
- the position signal is a learned bias on the attention logits, looked up by the bucket of the
  relative distance key - query (`relative_position_buckets`). ONE (buckets x heads) table, owned
  by the first layer in VATT's code and used by every layer (the bias is computed once);
- the attention sub-layer and the end of the stack normalise with T5's RMS norm (a scale, no
  offset, no mean subtraction); the feed-forward sub-layer normalises with a Keras LayerNorm
  (mean, scale AND offset), as VATT's code does;
- the feed-forward is Dense(d_ff) -> GELU -> dropout -> Dense(d_model) (VATT's t5 configs use
  'gelu', not T5's ReLU nor a gated GELU);
- dropout (one rate) on the input embeddings, the attention probabilities, each sub-layer's
  output before the residual sum, the feed-forward's hidden layer, and after the final norm.

Padding is a key mask: a padded key gets -1e9 added to its logits (every query still attends to
the aggregation token, never to a pad). Attention is written out here (a few einsums) because
Keras' MultiHeadAttention scales the logits and takes only a boolean mask; its parameterised
parts are plain Keras Dense layers, so the per-group statistics handle them as any Dense.
"""

import math

import tensorflow as tf

# VATT's t5 configs (configs/text.py): 32 buckets, distances >= 64 share the last bucket.
NUM_BUCKETS = 32
MAX_DISTANCE = 64
MASKED_LOGIT = -1e9  # added to the logits of padded keys, as VATT


def relative_position_buckets(
    length: int, num_buckets: int = NUM_BUCKETS, max_distance: int = MAX_DISTANCE
) -> tf.Tensor:
    """(length, length) int32: the bucket of key - query for every (query, key), bidirectional.

    Half the buckets are for keys before the query, half for keys at or after it (n = query -
    key < 0 goes to the upper half). Within a half of h = num_buckets / 2 buckets: |n| < h / 2
    has a bucket of its own; larger |n| are spread logarithmically up to max_distance, beyond
    which they share the half's last bucket."""
    positions = tf.range(length)
    n = positions[:, None] - positions[None, :]  # query - key
    half = num_buckets // 2
    exact = half // 2
    upper = tf.cast(n < 0, tf.int32) * half
    n = tf.abs(n)
    scaled = tf.math.log(tf.cast(tf.maximum(n, exact), tf.float32) / exact) / math.log(
        max_distance / exact
    )
    large = exact + tf.cast(scaled * (half - exact), tf.int32)  # truncation, as T5
    large = tf.minimum(large, half - 1)
    return upper + tf.where(n < exact, n, large)


class RMSNorm(tf.keras.layers.Layer):
    """T5's layer norm: y = scale * x / sqrt(mean(x^2) + epsilon) over the last axis; no offset,
    no mean subtraction. Statistics in float32 under a mixed policy."""

    def __init__(self, epsilon: float = 1e-6, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def build(self, input_shape):
        self.scale = self.add_weight(
            name="scale", shape=(int(input_shape[-1]),), initializer="ones"
        )
        super().build(input_shape)

    def normalise(self, x: tf.Tensor) -> tf.Tensor:
        """x / sqrt(mean(x^2) + epsilon) in float32."""
        x = tf.cast(x, tf.float32)
        return x * tf.math.rsqrt(tf.reduce_mean(tf.square(x), -1, keepdims=True) + self.epsilon)

    def call(self, x: tf.Tensor) -> tf.Tensor:
        y = tf.cast(self.scale, tf.float32) * self.normalise(x)
        return tf.cast(y, self.compute_dtype)


class RelativePositionBias(tf.keras.layers.Layer):
    """(N, L) key mask (1 = attend) -> (N, heads, L, L) float32 logit bias:
    table[bucket(key - query), head], plus MASKED_LOGIT where the key is masked.

    The table (buckets, heads) is initialised as a Keras Embedding (uniform +-0.05), as VATT's.
    The output has the batch axis (the mask's), so each clip's logit gradients stay its own."""

    def __init__(
        self,
        num_heads: int,
        num_buckets: int = NUM_BUCKETS,
        max_distance: int = MAX_DISTANCE,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.num_buckets = num_buckets
        self.max_distance = max_distance

    def build(self, input_shape):
        self.table = self.add_weight(
            name="table",
            shape=(self.num_buckets, self.num_heads),
            initializer=tf.keras.initializers.RandomUniform(-0.05, 0.05),
        )
        super().build(input_shape)

    def buckets(self, length: int) -> tf.Tensor:
        return relative_position_buckets(length, self.num_buckets, self.max_distance)

    def call(self, key_mask: tf.Tensor) -> tf.Tensor:
        length = tf.shape(key_mask)[1]
        table = tf.cast(self.table, tf.float32)
        bias = tf.transpose(tf.gather(table, self.buckets(length)), [2, 0, 1])  # (H, L, L)
        masked = (1.0 - tf.cast(key_mask, tf.float32)) * MASKED_LOGIT  # (N, L)
        return bias[None] + masked[:, None, None, :]  # (N, H, L, L)


class T5Layer(tf.keras.layers.Layer):
    """One encoder layer: x + drop(attention(RMS(x))), then x + drop(FF(LayerNorm(x)))."""

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        mlp_dim: int,
        dropout_rate: float,
        norm_epsilon: float,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        dense = lambda width, name: tf.keras.layers.Dense(width, use_bias=False, name=name)
        self.attention_norm = RMSNorm(norm_epsilon, name="attention_norm")
        self.q, self.k, self.v = (dense(hidden_size, n) for n in ("q", "k", "v"))
        self.o = dense(hidden_size, "o")
        self.mlp_norm = tf.keras.layers.LayerNormalization(epsilon=norm_epsilon, name="mlp_norm")
        self.wi = dense(mlp_dim, "wi")
        self.wo = dense(hidden_size, "wo")
        self.dropout = tf.keras.layers.Dropout(dropout_rate)

    def _heads(self, x):
        """(N, L, D) -> (N, H, L, D / H)."""
        n, length = tf.shape(x)[0], tf.shape(x)[1]
        return tf.transpose(tf.reshape(x, [n, length, self.num_heads, self.head_dim]), [0, 2, 1, 3])

    def attention(self, x, bias, training=None):
        """(N, L, D), (N, H, L, L) float32 bias -> (N, L, D). Softmax in float32."""
        q, k, v = self._heads(self.q(x)), self._heads(self.k(x)), self._heads(self.v(x))
        logits = tf.cast(tf.einsum("nhqd,nhkd->nhqk", q, k), tf.float32) + bias  # no 1/sqrt(d)
        probs = self.dropout(tf.cast(tf.nn.softmax(logits, -1), x.dtype), training=training)
        out = tf.einsum("nhqk,nhkd->nqhd", probs, v)  # (N, L, H, D / H)
        return self.o(tf.reshape(out, tf.shape(x)))

    def call(self, x, bias, training=None):
        x = x + self.dropout(
            self.attention(self.attention_norm(x), bias, training), training=training
        )
        hidden = self.dropout(tf.nn.gelu(self.wi(self.mlp_norm(x))), training=training)
        return x + self.dropout(self.wo(hidden), training=training)


class T5Encoder(tf.keras.layers.Layer):
    """(N, L, D) embedded tokens + (N, L) key mask -> (N, L, D), RMS-normalised.

    `relative_bias` is the one position table every layer uses (VATT: held by layer 0)."""

    def __init__(
        self,
        num_layers: int,
        hidden_size: int,
        num_heads: int,
        mlp_dim: int,
        dropout_rate: float = 0.1,
        norm_epsilon: float = 1e-6,
        num_buckets: int = NUM_BUCKETS,
        max_distance: int = MAX_DISTANCE,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if hidden_size % num_heads:
            raise ValueError(
                f"hidden_size {hidden_size} is not divisible by num_heads {num_heads}."
            )
        self.input_dropout = tf.keras.layers.Dropout(dropout_rate, name="input_dropout")
        self.relative_bias = RelativePositionBias(
            num_heads, num_buckets, max_distance, name="relative_position_bias"
        )
        self.blocks = [
            T5Layer(hidden_size, num_heads, mlp_dim, dropout_rate, norm_epsilon, name=f"layer_{i}")
            for i in range(num_layers)
        ]
        self.final_norm = RMSNorm(norm_epsilon, name="final_norm")
        self.final_dropout = tf.keras.layers.Dropout(dropout_rate, name="final_dropout")

    def call(self, tokens: tf.Tensor, key_mask: tf.Tensor, training=None) -> tf.Tensor:
        bias = self.relative_bias(key_mask)  # (N, H, L, L), computed once for every layer
        x = self.input_dropout(tokens, training=training)
        for block in self.blocks:
            x = block(x, bias, training=training)
        return self.final_dropout(self.final_norm(x), training=training)
