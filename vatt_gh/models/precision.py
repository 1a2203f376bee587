"""Numeric precision of VATT's layers: 'float32' or Keras' 'mixed_bfloat16' policy.

Under 'mixed_bfloat16' (TPU; gin/tpu.gin) the layers compute in bfloat16 and keep float32
variables; these stay float32 whatever the policy: the variables and the optimizer's slots, the
losses (`vatt_gh.losses` casts the embeddings before normalising them), the attention softmax
(`Float32SoftmaxAttention`), the LayerNorm and BatchNorm statistics (Keras and tf-models-official
normalise in float32) and every harmonization statistic (`vatt_gh.group_stats` casts each
layer's inputs and output gradients to float32 before any product or reduction). bfloat16 has
float32's exponent range, so no loss scaling is needed (unlike float16, not offered).
"""

import contextlib

import tensorflow as tf

PRECISIONS = ("float32", "mixed_bfloat16")


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: choose one of {PRECISIONS}")
    return precision


@contextlib.contextmanager
def policy_scope(precision: str):
    """Layers constructed inside the block take the `precision` policy; the global policy is
    restored on exit (a layer keeps the policy it was constructed with)."""
    check_precision(precision)
    previous = tf.keras.mixed_precision.global_policy()
    tf.keras.mixed_precision.set_global_policy(precision)
    try:
        yield
    finally:
        tf.keras.mixed_precision.set_global_policy(previous)


class Float32SoftmaxAttention(tf.keras.layers.MultiHeadAttention):
    """Keras' MultiHeadAttention whose softmax runs in float32 under a mixed policy (the scores
    are cast up, the probabilities back to the compute dtype by the dropout that follows)."""

    def _build_attention(self, rank):
        super()._build_attention(rank)
        self._softmax = tf.keras.layers.Softmax(axis=self._softmax.axis, dtype="float32")
