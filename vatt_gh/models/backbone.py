"""The Transformer backbone of VATT: aggregation token, DropToken and the pre-norm encoder.

The encoder is a stack of tf-models-official `TransformerEncoderBlock`s with `norm_first=True`
(pre-norm, as ViT/VATT) followed by a final LayerNorm and dropout (VATT's TransformerEncoder);
attention is not written by hand. One dropout rate, as VATT: on the attention probabilities and
output, the MLP's hidden layer and output, and after the final norm.
"""

import tensorflow as tf
from official.nlp.modeling import layers as nlp_layers

from vatt_gh.models.precision import Float32SoftmaxAttention, policy_scope


class EncoderBlock(nlp_layers.TransformerEncoderBlock):
    """tf-models-official's pre-norm block, its attention softmax in float32 under a mixed
    policy (its LayerNorms and GELU already are): same variables, same maths in float32.

    Its sub-layers are made when it is first called and take the global policy then: they
    are made under the block's own policy instead (the one it was constructed with)."""

    def build(self, input_shape):
        with policy_scope(self.dtype_policy.name):
            super().build(input_shape)
        config = self._attention_layer.get_config()
        for unbuilt in ("query_shape", "key_shape", "value_shape"):
            config.pop(unbuilt, None)  # not built yet: nothing to restore
        self._attention_layer = Float32SoftmaxAttention(**config)


class TransformerEncoder(tf.keras.layers.Layer):
    """(B, N, D) tokens [+ (B, N, N) attention mask] -> (B, N, D), final-normalised."""

    def __init__(
        self,
        num_layers: int,
        hidden_size: int,
        num_heads: int,
        mlp_dim: int,
        dropout_rate: float = 0.1,
        attention_dropout_rate: float = 0.1,
        norm_epsilon: float = 1e-6,
        use_bias: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if hidden_size % num_heads:
            raise ValueError(
                f"hidden_size {hidden_size} is not divisible by num_heads {num_heads}."
            )
        # VATT's q, k, v, o are Dense(d, d) kernels, Glorot-uniform: limit sqrt(6 / (d + d)).
        # Keras' MultiHeadAttention keeps them as (d, heads, d / heads) EinsumDense kernels, whose
        # Glorot fans would count the heads (a limit 3-6x smaller): give the limit explicitly.
        limit = (6.0 / (2 * hidden_size)) ** 0.5
        self.blocks = [
            EncoderBlock(
                num_attention_heads=num_heads,
                inner_dim=mlp_dim,
                inner_activation="gelu",
                norm_first=True,
                norm_epsilon=norm_epsilon,
                output_dropout=dropout_rate,
                attention_dropout=attention_dropout_rate,
                inner_dropout=dropout_rate,
                use_bias=use_bias,  # the attention projections' biases (T5: none)
                attention_initializer=tf.keras.initializers.RandomUniform(-limit, limit),
                name=f"layer_{i}",
            )
            for i in range(num_layers)
        ]
        self.final_norm = tf.keras.layers.LayerNormalization(
            epsilon=norm_epsilon, name="final_norm"
        )
        self.final_dropout = tf.keras.layers.Dropout(dropout_rate, name="final_dropout")

    def call(self, tokens: tf.Tensor, attention_mask=None, training=None) -> tf.Tensor:
        x = tokens  # (B, N, D)
        for block in self.blocks:
            inputs = x if attention_mask is None else [x, attention_mask]
            x = block(inputs, training=training)
        return self.final_dropout(self.final_norm(x), training=training)  # (B, N, D)


class AggregationToken(tf.keras.layers.Layer):
    """Prepends a learned aggregation token: (B, N, D) -> (B, 1 + N, D).

    Its output after the encoder (and the post-projection) is the modality's pooled feature.
    A (D,) vector initialised Glorot-normal, as VATT's aggregation embeddings.
    """

    def build(self, input_shape):
        self.token = self.add_weight(
            name="token",
            shape=(int(input_shape[-1]),),
            initializer=tf.keras.initializers.GlorotNormal(),
        )
        super().build(input_shape)

    def call(self, tokens: tf.Tensor) -> tf.Tensor:
        batch = tf.shape(tokens)[0]
        token = tf.tile(tf.cast(self.token, tokens.dtype)[None, None], [batch, 1, 1])  # (B, 1, D)
        return tf.concat([token, tokens], axis=1)  # (B, 1 + N, D)


def num_kept_tokens(num_tokens: int, rate: float) -> int:
    """Static number of tokens DropToken keeps (at least one)."""
    return max(1, int(num_tokens * (1.0 - rate)))


def drop_tokens(tokens: tf.Tensor, rate: float, generator: tf.random.Generator) -> tf.Tensor:
    """DropToken (VATT): keep a random subset of tokens per example, in their original order.

    tokens: (B, N, D) -> (B, num_kept_tokens(N, rate), D). The kept count is static, so shapes
    stay static under XLA; the subset comes from `generator` (checkpointable, XLA-compatible).
    """
    num_tokens = tokens.shape[1]
    keep = num_kept_tokens(num_tokens, rate)
    if keep >= num_tokens:
        return tokens
    scores = generator.uniform(tf.stack([tf.shape(tokens)[0], num_tokens]))  # (B, N)
    kept = tf.sort(tf.math.top_k(scores, k=keep).indices, axis=-1)  # (B, keep)
    return tf.gather(tokens, kept, batch_dims=1)  # (B, keep, D)
