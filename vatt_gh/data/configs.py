"""The input configs (frozen dataclasses, every field bindable from gin) and the clip specs.

    PretrainConfig(sources=(SourceConfig("gs://.../train-*", fps=10, stride=2),), num_frames=16)
    EvalConfig(file_pattern="/data/test-*", num_windows=4)
    source_specs(pretrain_config)   # one ClipSpec per source (raises if their windows differ)
    eval_spec(eval_config)          # the ClipSpec of the evaluation path

A `ClipSpec` is what the decode phase needs of a config for one source. Every field is checked
when the config is built (`fields.check_fields`): a bad value is a one-line ValueError naming it.
"""

import dataclasses
import math
import numbers
from typing import List, Optional, Tuple, Union

import gin
from vatt_gh.data import schema
from vatt_gh.data.fields import INT, REAL, check_fields
from vatt_gh.data.rejects import ON_ERROR

Patterns = Union[str, Tuple[str, ...]]

# Limits against hostile input (bindable from gin like every other field).
MAX_FRAME_PIXELS = 1920 * 1088  # a stored frame's JPEG header may claim at most this (1080p)
MAX_AUDIO_AMPLITUDE = 10.0  # stored waveforms are in [-1, 1]; larger values are rejected
MAX_BAD_IN_A_ROW = 1000  # under 'skip': stop when this many records in a row were rejected


def check_on_error(config):
    """Raises ValueError unless `config.on_error` is one of ON_ERROR."""
    if config.on_error not in ON_ERROR:
        raise ValueError(
            f"{type(config).__name__}.on_error must be one of {ON_ERROR}, got {config.on_error!r}"
        )


CLIP_RULES = (
    ("num_frames", INT, 1, None, False),
    ("crop_size", INT, 1, None, False),
    ("min_resize", INT, 1, None, False),
    ("sample_rate", INT, 1, None, False),
    ("audio_tolerance_seconds", REAL, 0, None, False),
    ("num_captions", INT, 1, None, False),
    ("max_tokens", INT, 1, None, False),
    ("cycle_length", INT, 1, None, False),
    ("max_frame_pixels", INT, 1, None, False),
    ("max_audio_amplitude", REAL, 0, None, True),
    ("max_bad_in_a_row", INT, 1, None, False),
)


@gin.configurable
@dataclasses.dataclass(frozen=True)
class SourceConfig:
    """One pre-training source: its shards, stored frame rate, temporal stride and mixture weight."""

    file_pattern: Patterns = ""
    fps: float = 10.0
    stride: int = 1
    weight: float = 1.0
    name: str = ""

    def __post_init__(self):
        if isinstance(self.file_pattern, list):
            object.__setattr__(self, "file_pattern", tuple(self.file_pattern))
        check_fields(
            self,
            [("fps", REAL, 0, None, True), ("stride", INT, 1, None, False)]
            + [("weight", REAL, 0, None, True)],
        )


@gin.configurable
@dataclasses.dataclass(frozen=True)
class PretrainConfig:
    """Pre-training input (paper Section 4.2 defaults)."""

    sources: Tuple[SourceConfig, ...] = ()
    num_frames: int = 32
    crop_size: int = 224
    # VATT's recipe (docs/data.md): short side to min_resize, crop crop_size; with probability
    # scale_jitter_prob the height and width scaled by independent factors ~ U(scale_jitter)
    # before the short side is resized; colour jitter with probability color_prob; audio noise
    # of std audio_noise x the clip's peak.
    min_resize: int = 224
    scale_jitter: Tuple[float, float] = (0.8, 1.2)
    scale_jitter_prob: float = 0.8
    flip: bool = True
    brightness: float = 32.0 / 255.0  # colour jitter: additive, in [0, 1] pixel units
    contrast: float = 0.4  # multiplicative factor in [1 - c, 1 + c]
    saturation: float = 0.4  # multiplicative factor in [1 - s, 1 + s]
    hue: float = 0.2  # additive, in turns of the colour circle
    color_prob: float = 0.8
    audio_noise: float = 0.01
    sample_rate: int = schema.SAMPLE_RATE
    audio_seconds: Optional[float] = None  # None: the frames' window (sources must agree)
    audio_tolerance_seconds: float = 0.1  # shortfall zero-padded before a record counts as bad
    num_captions: int = 5  # K neighbouring narrations
    max_tokens: int = 16  # L
    vocab_path: str = ""
    tokenizer: str = "word"  # 'word' | 'wordpiece'
    shuffle_buffer: int = 1024
    cycle_length: int = 8  # shards read in parallel
    repeat: bool = True
    seed: int = 0
    on_error: str = "raise"  # 'raise' | 'skip'
    max_frame_pixels: int = MAX_FRAME_PIXELS
    max_audio_amplitude: float = MAX_AUDIO_AMPLITUDE
    max_bad_in_a_row: int = MAX_BAD_IN_A_ROW

    def __post_init__(self):
        if isinstance(self.sources, SourceConfig):
            object.__setattr__(self, "sources", (self.sources,))
        object.__setattr__(self, "sources", tuple(self.sources))
        object.__setattr__(self, "scale_jitter", tuple(self.scale_jitter))
        check_on_error(self)
        check_fields(
            self,
            CLIP_RULES
            + (
                ("brightness", REAL, 0, 1, False),
                ("contrast", REAL, 0, 1, False),
                ("saturation", REAL, 0, 1, False),
                ("hue", REAL, 0, 0.5, False),
                ("color_prob", REAL, 0, 1, False),
                ("scale_jitter_prob", REAL, 0, 1, False),
                ("audio_noise", REAL, 0, None, False),
                ("shuffle_buffer", INT, 0, None, False),
                ("seed", INT, 0, None, False),
            ),
        )
        if self.audio_seconds is not None:
            check_fields(self, [("audio_seconds", REAL, 0, None, True)])
        jitter = self.scale_jitter
        if not (
            len(jitter) == 2
            and all(isinstance(z, numbers.Real) and math.isfinite(z) for z in jitter)
            and 0 < jitter[0] <= jitter[1]
        ):
            raise ValueError(
                f"PretrainConfig.scale_jitter = {jitter!r}: must be (low, high), 0 < low <= high"
            )


@gin.configurable
@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Evaluation input: `num_windows` evenly spaced windows x `num_crops` crops, no shuffling.

    num_crops: 1, the central crop; 3, VATT's three crops along the frame's long side (its
    Kinetics fine-tuning test). The views are stacked window-major on axis 1 (NW * NC).

    audio_only: read the audio alone (ESC50's records have no frames): the windows are spaced
    over the waveform's length, 'video' is an empty placeholder (B, NW, 0, H, W, 3), and a record
    without audio is rejected (no_audio). Pre-training always needs frames.
    """

    file_pattern: Patterns = ""
    fps: float = 10.0
    stride: int = 1
    num_frames: int = 32
    num_windows: int = 4
    num_crops: int = 1
    crop_size: int = 224
    min_resize: int = 224  # VATT: the frame size (the central crop spans the short side)
    sample_rate: int = schema.SAMPLE_RATE
    audio_tolerance_seconds: float = 0.1
    num_captions: int = 1  # central narration(s); 1 = one caption per clip
    max_tokens: int = 16
    vocab_path: str = ""
    tokenizer: str = "word"
    cycle_length: int = 4
    on_error: str = "raise"
    max_frame_pixels: int = MAX_FRAME_PIXELS
    max_audio_amplitude: float = MAX_AUDIO_AMPLITUDE
    max_bad_in_a_row: int = MAX_BAD_IN_A_ROW
    audio_only: bool = False

    def __post_init__(self):
        if isinstance(self.file_pattern, list):
            object.__setattr__(self, "file_pattern", tuple(self.file_pattern))
        check_on_error(self)
        check_fields(
            self,
            CLIP_RULES
            + (
                ("fps", REAL, 0, None, True),
                ("stride", INT, 1, None, False),
                ("num_windows", INT, 1, None, False),
            ),
        )
        check_num_crops(self.num_crops, "EvalConfig.num_crops")


def check_num_crops(value, name: str) -> None:
    """Crops per evaluation window: 1 (the central crop) or 3 (VATT's three-crop testing)."""
    if value not in (1, 3) or isinstance(value, bool):
        raise ValueError(
            f"{name} = {value!r}: must be 1 (the central crop) or 3 (VATT's three crops "
            "along the long side)"
        )


@dataclasses.dataclass(frozen=True)
class ClipSpec:
    """What the decode phase needs for one source."""

    fps: float
    stride: int
    num_frames: int
    num_windows: int
    crop_size: int
    min_resize: int
    scale_jitter: Optional[Tuple[float, float]]
    sample_rate: int
    audio_samples: int
    audio_tolerance: int
    training: bool
    max_frame_pixels: int = MAX_FRAME_PIXELS
    max_audio_amplitude: float = MAX_AUDIO_AMPLITUDE
    scale_jitter_prob: float = 1.0
    audio_only: bool = False  # evaluation only: the time line is the waveform's
    num_crops: int = 1  # evaluation only: crops per window (EvalConfig.num_crops)

    @property
    def num_views(self) -> int:
        """Windows x crops: the clips one record yields (1 in training)."""
        return self.num_windows * self.num_crops


def audio_samples_for(num_frames: int, stride: int, fps: float, sample_rate: int) -> int:
    """S: the samples in the time window of `num_frames` frames at `stride` (fps = stored rate)."""
    return int(round(num_frames * stride / fps * sample_rate))


def source_specs(config: PretrainConfig) -> List[ClipSpec]:
    """One ClipSpec per source; raises when the sources cover different time windows."""
    if not config.sources:
        raise ValueError("PretrainConfig.sources is empty: give at least one SourceConfig")
    specs = []
    for source in config.sources:
        if config.audio_seconds is None:
            samples = audio_samples_for(
                config.num_frames, source.stride, source.fps, config.sample_rate
            )
        else:
            samples = int(round(config.audio_seconds * config.sample_rate))
        specs.append(
            ClipSpec(
                fps=source.fps,
                stride=source.stride,
                num_frames=config.num_frames,
                num_windows=1,
                crop_size=config.crop_size,
                min_resize=config.min_resize,
                scale_jitter=config.scale_jitter,
                scale_jitter_prob=config.scale_jitter_prob,
                sample_rate=config.sample_rate,
                audio_samples=samples,
                audio_tolerance=int(round(config.audio_tolerance_seconds * config.sample_rate)),
                training=True,
                max_frame_pixels=config.max_frame_pixels,
                max_audio_amplitude=config.max_audio_amplitude,
            )
        )
    lengths = {s.audio_samples for s in specs}
    if len(lengths) > 1:
        windows = ", ".join(
            f"{source.name or source.file_pattern} {spec.audio_samples}"
            for source, spec in zip(config.sources, specs)
        )
        raise ValueError(
            f"sources cover different time windows (audio samples: {windows}): set "
            "PretrainConfig.audio_seconds (one audio window for all sources, e.g. 3.2) or make "
            "num_frames * stride / fps equal"
        )
    return specs


def eval_spec(config: EvalConfig) -> ClipSpec:
    """The ClipSpec of the evaluation path: `num_windows` windows x `num_crops` crops, no
    jitter; one crop when the audio is read alone (there are no frames to crop)."""
    return ClipSpec(
        fps=config.fps,
        stride=config.stride,
        num_frames=config.num_frames,
        num_windows=config.num_windows,
        crop_size=config.crop_size,
        min_resize=config.min_resize,
        scale_jitter=None,
        sample_rate=config.sample_rate,
        audio_samples=audio_samples_for(
            config.num_frames, config.stride, config.fps, config.sample_rate
        ),
        audio_tolerance=int(round(config.audio_tolerance_seconds * config.sample_rate)),
        training=False,
        max_frame_pixels=config.max_frame_pixels,
        max_audio_amplitude=config.max_audio_amplitude,
        audio_only=config.audio_only,
        num_crops=1 if config.audio_only else config.num_crops,
    )
