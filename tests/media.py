"""Real media files for the benchmark tests, encoded here with PyAV and the stdlib `wave`.

`write_video(path, ...)` writes .avi (MPEG-4 Part 2 video, PCM audio) or .mp4 (MPEG-4 Part 2,
AAC) whose frame `k` is a flat grey of level `grey(k / fps)` (a ramp over time, so a test can
tell which source time a decoded frame came from) and whose audio is a sine tone.
`write_wav(path, ...)` writes 16-bit mono PCM (ESC50's format: 44.1 kHz).
"""

import wave

import av
import numpy as np


def grey(seconds: float) -> float:
    """The grey level of the frame shown at `seconds` (20 levels per second, from 20)."""
    return 20.0 + 20.0 * seconds


def write_video(path, seconds=2.0, fps=10, size=(48, 32), tone_hz=440.0, rate=44100, audio=True):
    width, height = size
    audio_codec = "pcm_s16le" if str(path).endswith(".avi") else "aac"
    with av.open(str(path), "w") as c:
        v = c.add_stream("mpeg4", rate=fps)
        v.width, v.height, v.pix_fmt = width, height, "yuv420p"
        a = c.add_stream(audio_codec, rate=rate) if audio else None
        for k in range(int(round(seconds * fps))):
            image = np.full((height, width, 3), grey(k / fps), np.uint8)
            for packet in v.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                c.mux(packet)
        for packet in v.encode():
            c.mux(packet)
        if a is not None:
            t = np.arange(int(seconds * rate)) / rate
            wave_ = (0.5 * np.sin(2 * np.pi * tone_hz * t)).astype(np.float32)
            fmt = "s16" if audio_codec == "pcm_s16le" else "flt"
            for start in range(0, len(wave_), 1024):
                chunk = wave_[None, start : start + 1024]
                if fmt == "s16":
                    chunk = (chunk * 32767).astype(np.int16)
                frame = av.AudioFrame.from_ndarray(chunk, format=fmt, layout="mono")
                frame.sample_rate, frame.pts = rate, start
                for packet in a.encode(frame):
                    c.mux(packet)
            for packet in a.encode():
                c.mux(packet)


def write_wav(path, seconds=5.0, rate=44100, tone_hz=440.0):
    t = np.arange(int(seconds * rate)) / rate
    samples = (0.5 * np.sin(2 * np.pi * tone_hz * t) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())
