"""Size presets of VATT (docs/model.md; sizes from VATT's code) and the frozen model config.

`get_config('medium', hidden_size=...)` returns a preset with keyword overrides applied. Every
field is immutable (tuples, not lists), so a config can be shared and hashed safely.
"""

import dataclasses
from typing import Optional, Tuple


@dataclasses.dataclass(frozen=True)
class EncoderSize:
    """The shape of one Transformer encoder (VATT's d_model, d_ff, num_layers, num_heads)."""

    num_layers: int
    hidden_size: int
    num_heads: int
    mlp_dim: int


# VATT's backbone sizes by name (its configs/unified.py, video.py, audio.py, text.py).
VIT_MEDIUM = EncoderSize(num_layers=12, hidden_size=1024, num_heads=16, mlp_dim=4096)
WAT_BASE = EncoderSize(num_layers=12, hidden_size=768, num_heads=12, mlp_dim=3072)
T5_SMALL = EncoderSize(num_layers=6, hidden_size=512, num_heads=8, mlp_dim=2048)


@dataclasses.dataclass(frozen=True)
class VattConfig:
    """Everything that fixes the weights of a VATT model. Input sizes come from the input."""

    # Transformer encoder (pre-norm): the shared one (VATT-MA) or the video one (VATT-MS).
    num_layers: int = 12
    hidden_size: int = 1024
    num_heads: int = 16
    mlp_dim: int = 4096
    # VATT-MS only: the audio and text encoders' shapes (None: the same as the video encoder).
    audio_encoder: Optional[EncoderSize] = None
    text_encoder: Optional[EncoderSize] = None
    # VATT-MS only, VATT's TxBackboneConfig.text_backbone: 't5' (VATT's T5 encoder stack at the
    # text encoder's size: relative position bias, RMS norm, no biases; models/t5_text.py) or
    # 'transformer' (the pre-norm block of the video and audio encoders, with a positional
    # table). None: the variant's own (VATT-MA: the shared encoder; VATT-MS: 't5').
    text_backbone: Optional[str] = None
    # Dropout as VATT's configs: one rate after the attention probabilities, the attention
    # output, the MLP hidden layer and the MLP output, after the encoder's final norm, and after
    # adding the positional embeddings. attention_dropout_rate None: the same as dropout_rate.
    dropout_rate: float = 0.1
    attention_dropout_rate: Optional[float] = None
    norm_epsilon: float = 1e-6
    # VATT-MA (VATT's UniversalVATT): a Dense(hidden, GELU) pre-projection after the patch /
    # word embedding and a Dense(post_projection_dim, GELU) post-projection of the encoder's
    # output, per modality. VATT-MS (VATT's ViT / WaT / T5 backbones): neither for video and
    # audio; text has a Dense(hidden, GELU, no bias) pre-projection (T5's d_pre_proj).
    post_projection_dim: int = 1024
    # Video tokenizer: Conv3D patches (t, h, w), kernel = stride, on RGB pixels in [-1, 1].
    video_patch_size: Tuple[int, int, int] = (4, 16, 16)
    # Token grid the video positional tables are sized for: 32 x 224 x 224 -> 8 x 14 x 14.
    video_grid: Tuple[int, int, int] = (8, 14, 14)
    # Audio tokenizer: Conv1D patches of `audio_patch_size` waveform samples (48 kHz).
    audio_patch_size: int = 128
    audio_grid: int = 1200  # 153,600 samples / 128
    # Width of the video / audio patch embedding; None means the encoder's hidden size (VATT).
    patch_dim: Optional[int] = None
    # Text tokenizer: word embedding (pad id 0) loaded from a .npy file of word vectors
    # (tools/build_word_vectors.py) and FROZEN, as VATT's pretrained word2vec table.
    vocab_size: int = 2**16
    word_dim: int = 300
    text_grid: int = 16  # tokens per narration the positional table is sized for
    word_vectors_path: Optional[str] = None
    trainable_word_vectors: bool = False  # the explicit switch for a trainable table
    # DropToken (video and audio tokens, training only).
    drop_token_rate: float = 0.5
    # FAC head: video -> va (MLP with synchronised BatchNorm) -> vt; audio -> va; text -> vt.
    va_dim: int = 512
    vt_dim: int = 256
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5
    # Seed of the model's tf.random.Generator (DropToken).
    seed: int = 0

    def encoder_size(self, modality: str = "video") -> EncoderSize:
        """The encoder shape of `modality` (VATT-MA: the shared one for every modality)."""
        own = {"audio": self.audio_encoder, "text": self.text_encoder}.get(modality)
        if own is not None:
            return own
        return EncoderSize(self.num_layers, self.hidden_size, self.num_heads, self.mlp_dim)

    @property
    def attention_dropout(self) -> float:
        if self.attention_dropout_rate is None:
            return self.dropout_rate
        return self.attention_dropout_rate

    def patch_embedding_dim(self, modality: str = "video") -> int:
        if self.patch_dim is not None:
            return self.patch_dim
        return self.encoder_size(modality).hidden_size


# VATT-MA sizes (docs/model.md): VATT's ut_base / ut_medium / ut_large; 'small' has the shape of
# VATT's t5_small (VATT has no small unified model). They share every other field.
PRESETS = {
    "small": VattConfig(num_layers=6, hidden_size=512, num_heads=8, mlp_dim=2048),
    "base": VattConfig(num_layers=12, hidden_size=768, num_heads=12, mlp_dim=3072),
    "medium": VattConfig(num_layers=12, hidden_size=1024, num_heads=16, mlp_dim=4096),
    "large": VattConfig(num_layers=24, hidden_size=1024, num_heads=16, mlp_dim=4096),
    # VATT-MS (the paper's Table 3), VATT's TxBackboneConfig: video vit_medium, audio wat_base,
    # text t5_small ("Medium-Base-Small"). Use with variant='specific' (gin/model/specific.gin).
    "medium_base_small": VattConfig(
        num_layers=VIT_MEDIUM.num_layers,
        hidden_size=VIT_MEDIUM.hidden_size,
        num_heads=VIT_MEDIUM.num_heads,
        mlp_dim=VIT_MEDIUM.mlp_dim,
        audio_encoder=WAT_BASE,
        text_encoder=T5_SMALL,
    ),
    # Tests and the demo: 8 x 32 x 32 video -> 4 x 4 x 4 tokens; 1,024 audio samples -> 16 tokens.
    "tiny": VattConfig(
        num_layers=2,
        hidden_size=64,
        num_heads=4,
        mlp_dim=128,
        post_projection_dim=64,
        video_patch_size=(2, 8, 8),
        video_grid=(4, 4, 4),
        audio_patch_size=64,
        audio_grid=16,
        vocab_size=1000,
        word_dim=32,
        text_grid=8,
    ),
    # Unit tests of the wiring only: 1 layer, width 32.
    "micro": VattConfig(
        num_layers=1,
        hidden_size=32,
        num_heads=2,
        mlp_dim=64,
        post_projection_dim=32,
        video_patch_size=(2, 8, 8),
        video_grid=(2, 2, 2),
        audio_patch_size=32,
        audio_grid=8,
        vocab_size=100,
        word_dim=16,
        text_grid=6,
        va_dim=64,
        vt_dim=32,
    ),
}


def get_config(preset: str = "medium", **overrides) -> VattConfig:
    """Returns the named preset with `overrides` (any VattConfig field) applied."""
    if preset not in PRESETS:
        raise ValueError(f"Unknown VATT preset {preset!r}; choose one of {sorted(PRESETS)}.")
    fields = {f.name for f in dataclasses.fields(VattConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"Unknown VATT config fields {unknown}; known fields: {sorted(fields)}.")
    return dataclasses.replace(PRESETS[preset], **overrides)
