"""PyAV decoding for the dataset builders (tensorflow-io's FFmpeg ops do not load on Debian 12).

`decode_video(path, fps, short_side)` returns frames resampled to `fps` (for each output time
`k / fps`, the last source frame shown at or before it) with the short side resized to
`short_side`, and the mono waveform resampled to 48 kHz with `tfio.audio.resample`. With
`start` / `end` (seconds) only that segment is kept (the decoder seeks to it: a YouCook2 segment
of a long video is not decoded from the beginning); times then count from the video's first
frame. `decode_audio(path)` reads a file's audio alone (.wav included). `encode_jpegs` turns
frames into the records' JPEG bytes; `write_mp4` writes an .mp4 (tests and benchmarks).
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


def _seek(container, stream, start: float) -> None:
    """Seeks `stream` to the key frame at or before `start` seconds (no-op at 0)."""
    if start > 0 and stream.time_base:
        container.seek(int(start / stream.time_base), stream=stream, backward=True)


def _first_time(path: str) -> float:
    """Presentation time of the first video frame (the origin of segment times)."""
    with av.open(path) as container:
        for frame in container.decode(container.streams.video[0]):
            if frame.time is not None:
                return float(frame.time)
    return 0.0


def _decode_frames(
    path: str,
    fps: float,
    short_side: int,
    start: float = 0.0,
    end: Optional[float] = None,
    origin: Optional[float] = None,
) -> np.ndarray:
    """origin None: the whole video, times from its first frame; else the segment [start, end)
    of the time line that starts at `origin` (the first frame's presentation time)."""
    with av.open(path) as container:
        if not container.streams.video:
            raise ValueError(f"{path}: no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if origin is not None:
            _seek(container, stream, origin + start)
        times, images = [], []
        for frame in container.decode(stream):
            if frame.time is None:
                continue
            t = float(frame.time) - (origin or 0.0)
            if end is not None and t >= end:
                break
            width, height = _resize_dims(frame.width, frame.height, short_side)
            if times and t <= start:  # only the last frame at or before `start` is needed
                times, images = [], []
            times.append(t)
            images.append(frame.to_ndarray(width=width, height=height, format="rgb24"))
    if not images:
        where = f" in [{start:g}, {end}) s" if origin is not None else ""
        raise ValueError(f"{path}: no decodable video frames{where}")
    times = np.asarray(times)
    if origin is None:
        times, start = times - times[0], 0.0
    last = times[-1] + (np.median(np.diff(times)) if len(times) > 1 else 1.0 / fps)
    stop = last if end is None else min(end, last)
    targets = start + np.arange(int(np.floor((stop - start) * fps + 1e-6))) / fps
    pick = np.clip(np.searchsorted(times, targets + 1e-6, side="right") - 1, 0, len(images) - 1)
    return np.stack([images[i] for i in pick])


def _decode_audio(  # noqa: C901  (PyAV's packet loop with its resample and error cases)
    path: str,
    sample_rate: int,
    start: float = 0.0,
    end: Optional[float] = None,
    origin: float = 0.0,
) -> Optional[np.ndarray]:
    with av.open(path) as container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        native_rate = stream.codec_context.sample_rate or stream.rate
        # PyAV only converts the sample format and mixes down to mono; tfio does the rate change.
        resampler = av.AudioResampler(format="flt", layout="mono", rate=native_rate)
        _seek(container, stream, origin + start)
        pieces, first_time = [], None
        for frame in container.decode(stream):
            if first_time is None and frame.time is not None:
                first_time = float(frame.time)
            if end is not None and frame.time is not None and frame.time - origin >= end:
                break
            for out in resampler.resample(frame):
                pieces.append(out.to_ndarray().reshape(-1))
        for out in resampler.resample(None):
            pieces.append(out.to_ndarray().reshape(-1))
    if not pieces:
        return None
    audio = np.concatenate(pieces).astype(np.float32)
    # sample 0 of `audio` is at `first_time`; keep [start, end) of the video's time line
    lead = int(round(((first_time or 0.0) - origin - start) * native_rate))
    if start == 0 and end is None:
        lead = max(lead, 0)  # the whole file: a stream starting before 0 s is kept whole
    if lead >= 0:  # stream starting after the window's start: pad
        audio = np.concatenate([np.zeros(lead, np.float32), audio])
    else:
        audio = audio[-lead:]
    if end is not None:
        audio = audio[: int(round((end - start) * native_rate))]
    if native_rate != sample_rate:
        import tensorflow_io as tfio

        audio = tfio.audio.resample(
            tf.constant(audio[:, None]), rate_in=native_rate, rate_out=sample_rate
        ).numpy()[:, 0]
    return audio


def decode_video(
    path: str,
    fps: float = 10.0,
    short_side: int = 256,
    sample_rate: int = schema.SAMPLE_RATE,
    start: float = 0.0,
    end: Optional[float] = None,
):
    """Returns (frames uint8 (N, H, W, 3) at `fps`, mono float32 audio at `sample_rate` or None)
    of the segment [start, end) seconds (end None: to the end of the video)."""
    if start < 0 or (end is not None and not end > start):
        raise ValueError(f"{path}: bad segment [{start}, {end}) s")
    if start == 0 and end is None:
        return _decode_frames(path, fps, short_side), _decode_audio(path, sample_rate)
    origin = _first_time(path)
    frames = _decode_frames(path, fps, short_side, start, end, origin)
    return frames, _decode_audio(path, sample_rate, start, end, origin)


def decode_audio(path: str, sample_rate: int = schema.SAMPLE_RATE) -> np.ndarray:
    """The mono float32 waveform of an audio file (e.g. ESC50's .wav) at `sample_rate`."""
    audio = _decode_audio(path, sample_rate)
    if audio is None or not len(audio):
        raise ValueError(f"{path}: no audio stream")
    return audio


def encode_jpegs(frames: np.ndarray, quality: int = 90) -> list:
    """uint8 (N, H, W, 3) frames -> N JPEG byte strings (the records' `image/encoded`)."""
    return [tf.io.encode_jpeg(f, quality=quality).numpy() for f in frames]


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
