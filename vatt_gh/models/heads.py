"""The FAC (fine-and-coarse) head of VATT: per-modality projections into the common spaces.

Layer by layer as VATT's FACHead (its modeling/heads/bridge.py and mlp_lib.ReluDenseBN):

    video_va = BN(Dense_512(ReLU(BN(Dense_512(video)))))      Dense without bias
    video_vt = BN(Dense_256(ReLU(video_va)))                   Dense without bias
    audio_va = Dense_512(audio)                                with bias
    text_vt  = Dense_256(text)                                 with bias

Every BatchNorm is synchronised across replicas (momentum 0.9, epsilon 1e-5, with scale and
offset). The video-audio loss compares `video_va` with `audio_va`, the video-text loss
`video_vt` with `text_vt`.
"""

import tensorflow as tf


def _sync_batch_norm(momentum: float, epsilon: float, name: str):
    # synchronized=True: batch statistics over the global batch under tf.distribute.
    return tf.keras.layers.BatchNormalization(
        momentum=momentum, epsilon=epsilon, synchronized=True, name=name
    )


class ReluDenseBN(tf.keras.layers.Layer):
    """[BN ->] ReLU -> Dense (no bias) -> BN: (B, D_in) -> (B, D_out) (VATT's ReluDenseBN)."""

    def __init__(
        self,
        output_dim: int,
        pre_batch_norm: bool = False,
        bn_momentum: float = 0.9,
        bn_epsilon: float = 1e-5,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.pre_batch_norm = (
            _sync_batch_norm(bn_momentum, bn_epsilon, "pre_batch_norm") if pre_batch_norm else None
        )
        self.dense = tf.keras.layers.Dense(output_dim, use_bias=False, name="dense")
        self.batch_norm = _sync_batch_norm(bn_momentum, bn_epsilon, "batch_norm")

    def call(self, x: tf.Tensor, training=None) -> tf.Tensor:
        if self.pre_batch_norm is not None:
            x = self.pre_batch_norm(x, training=training)
        x = self.dense(tf.nn.relu(x))
        return self.batch_norm(x, training=training)


class FACHead(tf.keras.layers.Layer):
    """Maps pooled features {'video', 'audio', 'text'} (any subset) to the va / vt spaces.

    inputs: dict of (B, D_modality) pooled features. Returns 'video_va' (B, va_dim), 'video_vt'
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
        self.video_to_hidden = tf.keras.layers.Dense(va_dim, use_bias=False, name="video_to_hidden")
        self.hidden_to_va = ReluDenseBN(
            va_dim, pre_batch_norm=True, bn_momentum=bn_momentum, bn_epsilon=bn_epsilon,
            name="hidden_to_va",
        )  # fmt: skip
        self.va_to_vt = ReluDenseBN(
            vt_dim, bn_momentum=bn_momentum, bn_epsilon=bn_epsilon, name="va_to_vt"
        )
        self.audio_to_va = tf.keras.layers.Dense(va_dim, name="audio_to_va")
        self.text_to_vt = tf.keras.layers.Dense(vt_dim, name="text_to_vt")

    def call(self, pooled: dict, training=None) -> dict:
        outputs = {}
        if "video" in pooled:
            hidden = self.video_to_hidden(pooled["video"])  # (B, va)
            outputs["video_va"] = self.hidden_to_va(hidden, training=training)  # (B, va)
            outputs["video_vt"] = self.va_to_vt(outputs["video_va"], training=training)  # (B, vt)
        if "audio" in pooled:
            outputs["audio_va"] = self.audio_to_va(pooled["audio"])
        if "text" in pooled:
            outputs["text_vt"] = self.text_to_vt(pooled["text"])
        return outputs
