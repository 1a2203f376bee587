"""PyAV decoding for the dataset builder (tensorflow-io's FFmpeg ops do not load on Debian 12).

`decode_video(path, fps, short_side)` returns frames resampled to `fps` (for each output time
`k / fps`, the last source frame shown at or before it) with the short side resized to
`short_side`, and the mono waveform resampled to 48 kHz with `tfio.audio.resample`.
"""

from typing import Optional, Tuple

import av
import numpy as np
import tensorflow as tf

from vatt_gh.data import schema


def _resize_dims(width: int, height: int, short_side: int) -> Tuple[int, int]:
    if short_side <= 0:
        return width, height
    scale = short_side / min(width, height)
    # even dimensions keep swscale and JPEG chroma subsampling happy
    return max(2, int(round(width * scale / 2)) * 2), max(2, int(round(height * scale / 2)) * 2)


def _decode_frames(path: str, fps: float, short_side: int) -> np.ndarray:
    with av.open(path) as container:
        if not container.streams.video:
            raise ValueError(f"{path}: no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        times, images = [], []
        for frame in container.decode(stream):
            if frame.time is None:
                continue
            width, height = _resize_dims(frame.width, frame.height, short_side)
            times.append(float(frame.time))
            images.append(frame.to_ndarray(width=width, height=height, format="rgb24"))
    if not images:
        raise ValueError(f"{path}: no decodable video frames")
    times = np.asarray(times) - times[0]
    duration = times[-1] + (np.median(np.diff(times)) if len(times) > 1 else 1.0 / fps)
    targets = np.arange(int(np.floor(duration * fps + 1e-6))) / fps
    pick = np.clip(np.searchsorted(times, targets + 1e-6, side="right") - 1, 0, len(images) - 1)
    return np.stack([images[i] for i in pick])


def _decode_audio(path: str, sample_rate: int) -> Optional[np.ndarray]:
    with av.open(path) as container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        native_rate = stream.codec_context.sample_rate or stream.rate
        # PyAV only converts the sample format and mixes down to mono; tfio does the rate change.
        resampler = av.AudioResampler(format="flt", layout="mono", rate=native_rate)
        pieces, first_time = [], None
        for frame in container.decode(stream):
            if first_time is None and frame.time is not None:
                first_time = float(frame.time)
            for out in resampler.resample(frame):
                pieces.append(out.to_ndarray().reshape(-1))
        for out in resampler.resample(None):
            pieces.append(out.to_ndarray().reshape(-1))
    if not pieces:
        return None
    audio = np.concatenate(pieces).astype(np.float32)
    lead = int(round(max(first_time or 0.0, 0.0) * native_rate))  # stream starting after 0 s
    audio = np.concatenate([np.zeros(lead, np.float32), audio])
    if native_rate != sample_rate:
        import tensorflow_io as tfio

        audio = tfio.audio.resample(
            tf.constant(audio[:, None]), rate_in=native_rate, rate_out=sample_rate
        ).numpy()[:, 0]
    return audio


def decode_video(
    path: str, fps: float = 10.0, short_side: int = 256, sample_rate: int = schema.SAMPLE_RATE
):
    """Returns (frames uint8 (N, H, W, 3) at `fps`, mono float32 audio at `sample_rate` or None)."""
    return _decode_frames(path, fps, short_side), _decode_audio(path, sample_rate)


def write_mp4(path: str, frames, fps: int, audio: Optional[np.ndarray] = None, rate=44100):
    """Writes an MPEG-4 (video) + AAC (mono audio) .mp4 with PyAV: tests' and benchmarks' media.

    frames: an iterable of uint8 (H, W, 3) images of one size (even sides); audio: float32 mono.
    """
    with av.open(path, "w") as container:
        video = container.add_stream("mpeg4", rate=fps)
        video.pix_fmt = "yuv420p"
        sound = container.add_stream("aac", rate=rate) if audio is not None else None
        for i, image in enumerate(frames):
            if i == 0:
                video.height, video.width = image.shape[:2]
            for packet in video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        if sound is None:
            return
        audio = np.asarray(audio, np.float32)
        for start in range(0, len(audio), 1024):
            frame = av.AudioFrame.from_ndarray(
                audio[None, start : start + 1024], format="flt", layout="mono"
            )
            frame.sample_rate, frame.pts = rate, start
            for packet in sound.encode(frame):
                container.mux(packet)
        for packet in sound.encode():
            container.mux(packet)
