"""Size presets of VATT (docs/model.md; sizes from VATT code) and the frozen model config.

`get_config('medium', hidden_size=...)` returns a preset with keyword overrides applied. Every
field is immutable (tuples, not lists), so a config can be shared and hashed safely.
"""

import dataclasses
from typing import Optional, Tuple


@dataclasses.dataclass(frozen=True)
class VattConfig:
    """Everything that fixes the weights of a VATT model. Input sizes come from the input."""

    # Transformer encoder (pre-norm).
    num_layers: int = 12
    hidden_size: int = 1024
    num_heads: int = 16
    mlp_dim: int = 4096
    dropout_rate: float = 0.1
    attention_dropout_rate: float = 0.0
    norm_epsilon: float = 1e-6
    # Video tokenizer: Conv3D patches (t, h, w), kernel = stride, on RGB pixels in [-1, 1].
    video_patch_size: Tuple[int, int, int] = (4, 16, 16)
    # Token grid the video positional tables are sized for: 32 x 224 x 224 -> 8 x 14 x 14.
    video_grid: Tuple[int, int, int] = (8, 14, 14)
    # Audio tokenizer: Conv1D patches of `audio_patch_size` waveform samples (48 kHz).
    audio_patch_size: int = 128
    audio_grid: int = 1200  # 153,600 samples / 128
    # Width of the video / audio patch embedding before the per-modality projection;
    # None means `hidden_size`.
    patch_dim: Optional[int] = None
    # Text tokenizer: word embedding (pad id 0), optionally loaded frozen from a .npy file.
    vocab_size: int = 2**16
    word_dim: int = 300
    text_grid: int = 16  # tokens per narration the positional table is sized for
    word_vectors_path: Optional[str] = None
    # DropToken (video and audio tokens, training only).
    drop_token_rate: float = 0.5
    # FAC head: video -> va (MLP with synchronised BatchNorm) -> vt; audio -> va; text -> vt.
    va_dim: int = 512
    vt_dim: int = 256
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5
    # Seed of the model's tf.random.Generator (DropToken).
    seed: int = 0

    @property
    def patch_embedding_dim(self) -> int:
        return self.hidden_size if self.patch_dim is None else self.patch_dim


# The four sizes of docs/model.md share every field except the encoder's shape.
PRESETS = {
    "small": VattConfig(num_layers=6, hidden_size=512, num_heads=8, mlp_dim=2048),
    "base": VattConfig(num_layers=12, hidden_size=768, num_heads=12, mlp_dim=3072),
    "medium": VattConfig(num_layers=12, hidden_size=1024, num_heads=16, mlp_dim=4096),
    "large": VattConfig(num_layers=24, hidden_size=1024, num_heads=16, mlp_dim=4096),
    # Tests and the demo: 8 x 32 x 32 video -> 4 x 4 x 4 tokens; 1,024 audio samples -> 16 tokens.
    "tiny": VattConfig(
        num_layers=2,
        hidden_size=64,
        num_heads=4,
        mlp_dim=128,
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
