"""The FAC (fine-and-coarse) head of VATT: per-modality projections into the common spaces.

video pooled -> va space (MLP with synchronised BatchNorm) -> vt space (same kind of MLP from the
va embedding); audio pooled -> va (linear); text pooled -> vt (linear). The video-audio loss
compares `video_va` with `audio_va`, the video-text loss `video_vt` with `text_vt`.
"""

import tensorflow as tf


class ProjectionMLP(tf.keras.layers.Layer):
    """Dense (no bias) -> synchronised BatchNorm -> ReLU -> Dense: (B, D_in) -> (B, D_out)."""

    def __init__(
        self,
        hidden_dim: int,
        output_dim: int,
        bn_momentum: float = 0.9,
        bn_epsilon: float = 1e-5,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.dense_in = tf.keras.layers.Dense(hidden_dim, use_bias=False, name="dense_in")
        # synchronized=True: batch statistics over the global batch under tf.distribute.
        self.batch_norm = tf.keras.layers.BatchNormalization(
            momentum=bn_momentum, epsilon=bn_epsilon, synchronized=True, name="batch_norm"
        )
        self.dense_out = tf.keras.layers.Dense(output_dim, name="dense_out")

    def call(self, x: tf.Tensor, training=None) -> tf.Tensor:
        x = self.dense_in(x)
        x = tf.nn.relu(self.batch_norm(x, training=training))
        return self.dense_out(x)


class FACHead(tf.keras.layers.Layer):
    """Maps pooled features {'video', 'audio', 'text'} (any subset) to the va / vt spaces.

    inputs: dict of (B, D) pooled features. Returns 'video_va' (B, va_dim), 'video_vt'
    (B, vt_dim), 'audio_va' (B, va_dim), 'text_vt' (B, vt_dim) for the modalities present.
    """

    def __init__(
        self,
        va_dim: int = 512,
        vt_dim: int = 256,
        bn_momentum: float = 0.9,
        bn_epsilon: float = 1e-5,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.video_to_va = ProjectionMLP(
            va_dim, va_dim, bn_momentum, bn_epsilon, name="video_to_va"
        )
        self.va_to_vt = ProjectionMLP(va_dim, vt_dim, bn_momentum, bn_epsilon, name="va_to_vt")
        self.audio_to_va = tf.keras.layers.Dense(va_dim, name="audio_to_va")
        self.text_to_vt = tf.keras.layers.Dense(vt_dim, name="text_to_vt")

    def call(self, pooled: dict, training=None) -> dict:
        outputs = {}
        if "video" in pooled:
            outputs["video_va"] = self.video_to_va(pooled["video"], training=training)
            outputs["video_vt"] = self.va_to_vt(outputs["video_va"], training=training)
        if "audio" in pooled:
            outputs["audio_va"] = self.audio_to_va(pooled["audio"])
        if "text" in pooled:
            outputs["text_vt"] = self.text_to_vt(pooled["text"])
        return outputs
