"""The dataset builder on real container files written here with PyAV (known colours and tones),
read back through the evaluation pipeline; resumability and the failure summary."""

import csv
import os

import av
import numpy as np
import pytest
import tensorflow as tf

from vatt_gh.data import builder, schema
from vatt_gh.data import pipeline as P
from vatt_gh.data import text as text_lib

VIDEOS = {"red": ((220, 30, 30), 440.0), "blue": ((30, 30, 220), 1000.0)}


def _make_mp4(path, rgb, tone_hz, seconds=2.0, fps=25, rate=44100):
    with av.open(path, "w") as c:
        v = c.add_stream("mpeg4", rate=fps)
        v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
        a = c.add_stream("aac", rate=rate)
        image = np.zeros((48, 64, 3), np.uint8) + np.array(rgb, np.uint8)
        for _ in range(int(seconds * fps)):
            for packet in v.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                c.mux(packet)
        for packet in v.encode():
            c.mux(packet)
        wave = 0.5 * np.sin(2 * np.pi * tone_hz * np.arange(int(seconds * rate)) / rate)
        wave = wave.astype(np.float32)
        for start in range(0, len(wave), 1024):
            frame = av.AudioFrame.from_ndarray(
                wave[None, start : start + 1024], format="flt", layout="mono"
            )
            frame.sample_rate, frame.pts = rate, start
            for packet in a.encode(frame):
                c.mux(packet)
        for packet in a.encode():
            c.mux(packet)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("build")
    video_dir = root / "videos"
    video_dir.mkdir()
    for name, (rgb, hz) in VIDEOS.items():
        _make_mp4(str(video_dir / f"{name}.mp4"), rgb, hz)
    (video_dir / "broken.mp4").write_bytes(b"this is not a video")
    captions = str(root / "captions.csv")
    with open(captions, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["video_id", "start", "end", "text"])
        for name in VIDEOS:
            w.writerow([name, 0.1, 0.9, f"{name} first"])
            w.writerow([name, 1.2, 1.8, f"{name} second"])
    config = builder.BuildConfig(
        fps=10.0, short_side=32, clip_seconds=1.0, neighbours=1, videos_per_shard=2, prefix="t"
    )
    out = str(root / "out")
    videos = builder.find_videos([str(video_dir)])
    summary = builder.build_dataset(videos, captions, out, config, progress=False)
    return dict(out=out, videos=videos, captions=captions, config=config, summary=summary)


def test_summary_names_the_broken_file_and_counts_clips(built):
    s = built["summary"]
    assert len(s["shards"]) == 2 and s["written"] == 2 and s["skipped"] == 0
    assert s["num_clips"] == 4  # 2 videos x 2 clips of 1 s
    assert [os.path.basename(p) for p, _ in s["failed"]] == ["broken.mp4"]
    assert "broken.mp4" in builder.format_summary(s)


def test_rerun_skips_finished_shards(built):
    again = builder.build_dataset(
        built["videos"], built["captions"], built["out"], built["config"], progress=False
    )
    assert again["written"] == 0 and again["skipped"] == 2
    assert again["failed"] == built["summary"]["failed"] and again["num_clips"] == 4
    assert not tf.io.gfile.glob(os.path.join(built["out"], "*.tmp"))


def test_clips_carry_colour_pitch_and_captions(built, tmp_path):
    vocab = str(tmp_path / "vocab.txt")
    text_lib.write_word_vocab(vocab, ["red", "blue", "first", "second"])  # ids 2, 3, 4, 5
    cfg = P.EvalConfig(
        file_pattern=os.path.join(built["out"], "t-*.tfrecord"),
        num_frames=8,
        num_windows=1,
        crop_size=16,
        min_resize=32,
        num_captions=2,
        max_tokens=2,
        vocab_path=vocab,
    )
    clips = {}
    for b in P.eval_dataset(cfg, 8):
        for i, clip_id in enumerate(b["clip_id"].numpy()):
            clips[clip_id.decode()] = {k: v.numpy()[i] for k, v in b.items()}
    assert sorted(clips) == ["blue_0.00", "blue_1.00", "red_0.00", "red_1.00"]
    names = {"red": 2, "blue": 3}
    for clip_id, ex in clips.items():
        name = clip_id.split("_")[0]
        rgb = (ex["video"][0].mean(axis=(0, 1, 2)) + 1) / 2 * 255
        np.testing.assert_allclose(rgb, VIDEOS[name][0], atol=12)
        audio = ex["audio"][0]
        assert audio.shape == (8 * 4800,) and ex["audio_mask"] == 1
        spectrum = np.abs(np.fft.rfft(audio[4800:]))  # skip the AAC start-up
        peak = np.argmax(spectrum) * schema.SAMPLE_RATE / len(audio[4800:])
        assert abs(peak - VIDEOS[name][1]) < 10
        # both clips see both narrations: the overlapping one plus one neighbour
        np.testing.assert_array_equal(ex["text"], [[names[name], 4], [names[name], 5]])
        np.testing.assert_array_equal(ex["text_mask"], [1, 1])


def test_build_vocab_counts_words(built, tmp_path):
    from vatt_gh.data import vocab

    words = vocab.word_vocab(os.path.join(built["out"], "t-*.tfrecord"), 100)
    # each caption appears in 2 clips: red/blue 4 times each, first/second 4 each
    assert sorted(words) == ["blue", "first", "red", "second"]


def test_captions_json_and_clip_captions():
    narrations = [(0.0, 1.0, "a"), (2.0, 3.0, "b"), (4.0, 5.0, "c"), (6.0, 7.0, "d")]
    assert builder.clip_captions(narrations, 2.5, 4.5, 1) == ["a", "b", "c", "d"]
    assert builder.clip_captions(narrations, 2.5, 3.5, 0) == ["b"]
    assert builder.clip_captions(narrations, 1.2, 1.8, 2) == []


def test_load_captions_json_layouts(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(
        '{"v1": {"start": [2.0, 0.0], "end": [3.0, 1.0], "text": ["b", "a"]},'
        ' "v2": [{"start": 1, "end": 2, "text": "x"}]}'
    )
    assert builder.load_captions(str(path)) == {
        "v1": [(0.0, 1.0, "a"), (2.0, 3.0, "b")],
        "v2": [(1.0, 2.0, "x")],
    }
