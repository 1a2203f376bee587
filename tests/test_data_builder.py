"""The dataset builder on real container files written here with PyAV (known colours and tones),
read back through the evaluation pipeline; resumability and the failure summary; YouTube-8M-style
videos with auto-generated WebVTT / SRT captions and a label file, built with the command line."""

import csv
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from vatt_gh.data import builder, schema, video_io
from vatt_gh.data import text as text_lib
from vatt_gh.data.configs import EvalConfig
from vatt_gh.data.eval_input import eval_dataset

VIDEOS = {"red": ((220, 30, 30), 440.0), "blue": ((30, 30, 220), 1000.0)}


def _make_mp4(path, rgb, tone_hz, seconds=2.0, fps=25, rate=44100):
    """A 64 x 48 video of one colour with a pure tone."""
    image = np.zeros((48, 64, 3), np.uint8) + np.array(rgb, np.uint8)
    wave = 0.5 * np.sin(2 * np.pi * tone_hz * np.arange(int(seconds * rate)) / rate)
    video_io.write_mp4(path, [image] * int(seconds * fps), fps, wave.astype(np.float32), rate)


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
    summary = builder.build_dataset(videos, captions, out, config, ["--direct_num_workers=1"])
    return dict(out=out, videos=videos, captions=captions, config=config, summary=summary)


def test_summary_names_the_broken_file_and_counts_clips(built):
    s = built["summary"]
    assert len(s["shards"]) == 2 and s["written"] == 2 and s["skipped"] == 0
    assert s["num_clips"] == 4  # 2 videos x 2 clips of 1 s
    assert [os.path.basename(p) for p, _ in s["failed"]] == ["broken.mp4"]
    assert "broken.mp4" in builder.format_summary(s)


def test_rerun_skips_finished_shards(built):
    again = builder.build_dataset(
        built["videos"],
        built["captions"],
        built["out"],
        built["config"],
        ["--direct_num_workers=1"],
    )
    assert again["written"] == 0 and again["skipped"] == 2
    assert again["failed"] == built["summary"]["failed"] and again["num_clips"] == 4
    assert not tf.io.gfile.glob(os.path.join(built["out"], "*.tmp*"))


def test_clips_carry_colour_pitch_and_captions(built, tmp_path):
    vocab = str(tmp_path / "vocab.txt")
    text_lib.write_word_vocab(vocab, ["red", "blue", "first", "second"])  # ids 2, 3, 4, 5
    cfg = EvalConfig(
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
    for b in eval_dataset(cfg, 8):
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


# ---------------------------------------------------------------------------------------------
# YouTube-8M: 5 s clips, ASR captions next to the videos (rolling auto-caption style), labels
# ---------------------------------------------------------------------------------------------
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What was spoken: (start, end, line). Clip [0, 5) overlaps all four; clip [5, 6.5) overlaps the
# last and takes one neighbour.
SPOKEN = [
    (0.0, 1.49, "alpha bravo"),
    (1.5, 2.99, "charlie delta"),
    (3.0, 3.99, "echo foxtrot"),
    (4.0, 5.5, "golf hotel"),
]


def auto_caption_cues(tags=True):
    """YouTube's rolling automatic captions as (start, end, lines): each cue shows the previous
    line above the new one (word timing tags on the new one in WebVTT), with a 10 ms cue between
    that repeats it alone."""
    cues, previous = [], " "
    for start, end, line in SPOKEN:
        first, *rest = line.split()
        timed = first + "".join(f"<{stamp(start + 0.2)}><c> {w}</c>" for w in rest)
        cues.append((start, end, [previous, timed if tags else line]))
        cues.append((end, end + 0.01, [line, " "]))
        previous = line
    return cues


def stamp(seconds, sep="."):
    ms = int(round(seconds * 1000))
    return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d}{sep}{ms % 1000:03d}"


def write_vtt(path, cues):
    blocks = ["WEBVTT\nKind: captions\nLanguage: en\n"]
    for start, end, lines in cues:
        timing = f"{stamp(start)} --> {stamp(end)} align:start position:0%"
        blocks.append("\n".join([timing, *lines]) + "\n")
    path.write_text("\n".join(blocks))


def write_srt(path, cues):
    blocks = []
    for i, (start, end, lines) in enumerate(cues, start=1):
        timing = f"{stamp(start, ',')} --> {stamp(end, ',')}"
        blocks.append("\n".join([str(i), timing, *lines]) + "\n")
    path.write_text("\n".join(blocks))


@pytest.fixture(scope="module")
def yt8m(tmp_path_factory):
    root = tmp_path_factory.mktemp("yt8m")
    videos = root / "videos"
    videos.mkdir()
    _make_mp4(str(videos / "ytA.mp4"), (220, 30, 30), 440.0, seconds=6.5)
    _make_mp4(str(videos / "ytB.mp4"), (30, 30, 220), 1000.0, seconds=6.5)
    write_vtt(videos / "ytA.en.vtt", auto_caption_cues())  # yt-dlp's name for English
    write_srt(videos / "ytB.srt", auto_caption_cues(tags=False))
    labels = root / "labels.csv"
    labels.write_text("video_id,labels\nytA,3 17\n")
    out = root / "out"
    cmd = [
        sys.executable,
        os.path.join(REPO, "tools", "build_dataset.py"),
        f"--videos={videos}",
        f"--labels={labels}",
        f"--out_dir={out}",
        "--fps=10",
        "--clip_seconds=5",
        "--short_side=32",
        "--neighbours=1",
        "--prefix=yt8m",
        "--direct_num_workers=1",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(out=str(out), stdout=proc.stdout)


def test_yt8m_build_summary(yt8m):
    assert "4 clips in 1 shard(s)" in yt8m["stdout"]
    assert "2 of 2 video(s) had narrations" in yt8m["stdout"]


def test_yt8m_records_carry_deduplicated_captions_and_labels(yt8m):
    got = {}
    for path in tf.io.gfile.glob(os.path.join(yt8m["out"], "yt8m-*.tfrecord")):
        for record in tf.data.TFRecordDataset(path):
            ex = schema.parse_sequence_example(record)
            got[ex["clip_id"].numpy().decode()] = (
                [c.decode() for c in ex["captions"].numpy()],
                ex["labels"].numpy().tolist(),
                int(tf.size(ex["frames"])),
                int(tf.size(ex["audio"])),
            )
    words = [line for _, _, line in SPOKEN]
    for vid, labels in (("ytA", [3, 17]), ("ytB", [])):
        assert got[f"{vid}_0.00"] == (words, labels, 50, 5 * 48000)  # 5 s at 10 fps
        captions, clip_labels, frames, samples = got[f"{vid}_5.00"]  # the last 1.5 s
        assert (captions, clip_labels) == (words[2:], labels)
        assert 13 <= frames <= 15 and samples == frames * 4800


def test_yt8m_records_read_back_by_the_pipeline(yt8m, tmp_path):
    vocab = str(tmp_path / "vocab.txt")
    words = "alpha bravo charlie delta echo foxtrot golf hotel".split()
    text_lib.write_word_vocab(vocab, words)  # ids 2..9
    cfg = EvalConfig(
        file_pattern=os.path.join(yt8m["out"], "yt8m-*.tfrecord"),
        fps=10.0,
        num_frames=32,  # 3.2 s: the mixture's audio window
        num_windows=1,
        crop_size=16,
        min_resize=32,
        num_captions=4,
        max_tokens=2,
        vocab_path=vocab,
    )
    clips = {}
    for b in eval_dataset(cfg, 8):
        for i, clip_id in enumerate(b["clip_id"].numpy()):
            clips[clip_id.decode()] = {k: v.numpy()[i] for k, v in b.items()}
    assert sorted(clips) == ["ytA_0.00", "ytA_5.00", "ytB_0.00", "ytB_5.00"]
    ids = np.arange(2, 10).reshape(4, 2)  # one row per spoken line
    for clip_id, ex in clips.items():
        assert ex["audio"].shape == (1, 153_600) and ex["audio_mask"] == 1
        assert ex["label"] == (3 if clip_id.startswith("ytA") else -1)
        if clip_id.endswith("_0.00"):
            np.testing.assert_array_equal(ex["text"], ids)
            np.testing.assert_array_equal(ex["text_mask"], [1, 1, 1, 1])
        else:
            np.testing.assert_array_equal(ex["text"][:2], ids[2:])
            np.testing.assert_array_equal(ex["text_mask"], [1, 1, 0, 0])


def test_missing_table_or_label_file_is_named(tmp_path):
    video = str(tmp_path / "v.mp4")
    for kwargs, flag in (
        (dict(captions_path=str(tmp_path / "no.csv")), "--captions"),
        (dict(captions_path=None, labels_path=str(tmp_path / "no.json")), "--labels"),
    ):
        with pytest.raises(ValueError, match=f"{flag} file .*no.* does not exist"):
            builder.build_dataset([video], out_dir=str(tmp_path / "out"), **kwargs)
    with pytest.raises(ValueError, match="BuildConfig.clip_seconds must be a positive number"):
        builder.BuildConfig(clip_seconds=0.0)
