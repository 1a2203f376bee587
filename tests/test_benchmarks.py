"""Benchmark converters (vatt_gh/data/benchmarks.py, benchmark_build.py, tools/build_benchmark.py)
on tiny copies of the six published layouts (tests/benchmark_layouts.py): what each list says
comes out (splits, folds, labels, segments, sentences), missing and undecodable files are listed
and never fatal, records are written once per file, and a re-run skips finished shards."""

import glob
import json
import os

import benchmark_layouts as layouts
import media
import numpy as np
import pytest
import tensorflow as tf
from eval_fixtures import run_tool

from vatt_gh.data import benchmark_build, benchmarks, schema


def _records(out_dir, pattern="*.tfrecord"):
    """{clip_id: parsed record as NumPy} of every shard in out_dir."""
    out = {}
    for path in sorted(glob.glob(os.path.join(out_dir, pattern))):
        for serialized in tf.data.TFRecordDataset(path):
            parsed = schema.parse_sequence_example(serialized)
            clip_id = parsed["clip_id"].numpy().decode()
            assert clip_id not in out, f"{clip_id} written twice"
            out[clip_id] = {k: v.numpy() for k, v in parsed.items()}
    return out


def _build(listing, out_dir, **kw):
    config = benchmark_build.EncodeConfig(fps=10.0, short_side=0, videos_per_shard=2, **kw)
    return benchmark_build.build_benchmark(listing, str(out_dir), config)


# --------------------------------------------------------------------------------------------
# listings: the lists as written, exactly
# --------------------------------------------------------------------------------------------
def test_ucf101_crlf_lists_quirk_and_missing_file(tmp_path):
    want = layouts.write_ucf101(str(tmp_path), missing=("v_YoYo_g02_c01",))
    listing = benchmarks.list_ucf101(str(tmp_path))
    assert listing.classes == want["classes"]  # CRLF stripped, 1-based -> 0-based
    assert {k: {p: sorted(v) for p, v in s.items()} for k, s in listing.splits.items()} == want[
        "splits"
    ]
    found = {t.clips[0].clip_id: t.clips[0].labels for t in listing.tasks}
    assert found["v_HandStandPushups_g01_c01"] == (1,)  # folder HandstandPushups
    assert "v_YoYo_g02_c01" not in found and len(found) == 5
    assert [os.path.basename(m) for m in listing.missing] == ["v_YoYo_g02_c01.avi"]
    assert all(t.path.endswith(".avi") for t in listing.tasks)
    assert any("1 listed file(s) missing" in line for line in listing.summary())


def test_hmdb51_tags_with_trailing_spaces(tmp_path):
    want = layouts.write_hmdb51(str(tmp_path))
    text = open(tmp_path / "testTrainMulti_7030_splits" / "cartwheel_test_split1.txt").read()
    assert text.endswith(" \n")  # the published trailing space
    listing = benchmarks.list_hmdb51(str(tmp_path))
    assert listing.classes == ["brush_hair", "cartwheel"]
    assert {k: {p: sorted(v) for p, v in s.items()} for k, s in listing.splits.items()} == want[
        "splits"
    ]
    for split in listing.splits.values():  # tag 0: in neither part
        assert len(split["train"]) == 2 and len(split["test"]) == 2
    assert {t.clips[0].clip_id: t.clips[0].labels[0] for t in listing.tasks} == want["labels"]
    assert not listing.missing


def test_esc50_five_folds_leave_one_out(tmp_path):
    want = layouts.write_esc50(str(tmp_path), missing=("3-101-A-1",))
    listing = benchmarks.list_esc50(str(tmp_path))
    assert listing.kind == "audio_classification" and listing.classes == want["classes"]
    assert sorted(listing.splits) == [f"fold{k}" for k in range(1, 6)]
    for k in range(1, 6):
        split = listing.splits[f"fold{k}"]
        assert sorted(split["test"]) == sorted(c for c, f in want["folds"].items() if f == k)
        assert sorted(split["train"]) == sorted(c for c, f in want["folds"].items() if f != k)
    assert all(t.audio_only for t in listing.tasks) and len(listing.tasks) == 9
    assert [os.path.basename(m) for m in listing.missing] == ["3-101-A-1.wav"]


def test_youcook2_validation_segments_only(tmp_path):
    want = layouts.write_youcook2(str(tmp_path))
    listing = benchmarks.list_youcook2(str(tmp_path))
    clips = {c.clip_id: (c.start, c.end, c.captions[0]) for t in listing.tasks for c in t.clips}
    assert clips == want["segments"]  # training video vidT not converted
    assert listing.splits == {"validation": {"test": sorted(want["segments"])}}
    assert len(listing.tasks) == 2  # one task (one decode per segment) per video


def test_msrvtt_1ka_and_kinetics_file_names(tmp_path):
    want = layouts.write_msrvtt(str(tmp_path / "msrvtt"), missing=("video7011",))
    listing = benchmarks.list_msrvtt(str(tmp_path / "msrvtt"))
    assert {t.clips[0].clip_id: t.clips[0].captions[0] for t in listing.tasks} == {
        k: v for k, v in want["sentences"].items() if k != "video7011"
    }
    assert listing.splits["1k-A"]["test"] == sorted(want["sentences"])
    assert len(listing.missing) == 1
    want = layouts.write_kinetics400(str(tmp_path / "k400"))
    listing = benchmarks.list_kinetics400(str(tmp_path / "k400"))
    assert listing.classes == ["abseiling", "air drumming"]
    got = {t.clips[0].clip_id: (t.clips[0].labels[0], t.group) for t in listing.tasks}
    assert {k: v[0] for k, v in got.items()} == want["labels"]
    assert sorted(k for k, v in got.items() if v[1] == "val") == sorted(want["splits"]["val"])
    assert benchmarks.kinetics_file_name("abc", 7, 17) == "abc_000007_000017.mp4"


@pytest.mark.parametrize(
    "name,write,breaker,needle",
    [
        ("ucf101", layouts.write_ucf101, "ucfTrainTestlist/classInd.txt", "classInd.txt:1"),
        ("esc50", layouts.write_esc50, "meta/esc50.csv", "esc50.csv"),
        (
            "hmdb51",
            layouts.write_hmdb51,
            "testTrainMulti_7030_splits/cartwheel_test_split2.txt",
            "cartwheel_test_split2.txt:1",
        ),
        (
            "youcook2",
            layouts.write_youcook2,
            "youcookii_annotations_trainval.json",
            "youcookii_annotations_trainval.json: not the YouCook2",
        ),
        ("msrvtt", layouts.write_msrvtt, "MSRVTT_JSFUSION_test.csv", "MSRVTT_JSFUSION_test.csv"),
    ],
)
def test_malformed_list_is_one_line_naming_the_file(tmp_path, name, write, breaker, needle):
    write(str(tmp_path))
    with open(tmp_path / breaker, "w") as f:
        f.write("garbage without the columns\n")
    with pytest.raises(benchmarks.LayoutError, match=needle.replace(".", r"\.")) as e:
        benchmarks.list_benchmark(name, str(tmp_path))
    assert "\n" not in str(e.value)


def test_nothing_on_disk_is_an_error(tmp_path):
    layouts.write_msrvtt(str(tmp_path), num_videos=2, missing=("video7010", "video7011"))
    with pytest.raises(benchmarks.LayoutError, match="none of the listed files"):
        benchmarks.list_msrvtt(str(tmp_path))


# --------------------------------------------------------------------------------------------
# records
# --------------------------------------------------------------------------------------------
def test_ucf101_avi_records_once_per_video_and_broken_file_listed(tmp_path):
    want = layouts.write_ucf101(str(tmp_path / "ucf"), broken=("v_YoYo_g01_c01",))
    listing = benchmarks.list_ucf101(str(tmp_path / "ucf"))
    index = _build(listing, tmp_path / "out")
    records = _records(tmp_path / "out")
    assert sorted(records) == sorted(s for s in want["labels"] if s != "v_YoYo_g01_c01")
    for clip_id, record in records.items():
        assert record["labels"].tolist() == [want["labels"][clip_id]]
        assert len(record["frames"]) == round(layouts.SECONDS * 10)  # .avi decoded at 10 fps
        assert abs(len(record["audio"]) - layouts.SECONDS * schema.SAMPLE_RATE) < 2400
    assert [os.path.basename(f[0]) for f in index["failed"]] == ["v_YoYo_g01_c01.avi"]
    assert benchmark_build.read_index(str(tmp_path / "out"))["splits"] == listing.splits
    again = _build(listing, tmp_path / "out")  # the shard with the failed file is retried
    assert again["skipped"] == 2 and again["written"] == 1 and again["num_clips"] == 5
    # the file replaced by a good one since: its shard is rebuilt, the others are kept
    layouts.write_ucf101(str(tmp_path / "ucf2"))
    os.replace(
        tmp_path / "ucf2/UCF-101/YoYo/v_YoYo_g01_c01.avi",
        tmp_path / "ucf/UCF-101/YoYo/v_YoYo_g01_c01.avi",
    )
    index = _build(benchmarks.list_ucf101(str(tmp_path / "ucf")), tmp_path / "out")
    assert index["written"] == 1 and index["skipped"] == 2 and not index["failed"]
    assert sorted(_records(tmp_path / "out")) == sorted(want["labels"])


def test_youcook2_segment_records_cut_at_the_annotations(tmp_path):
    want = layouts.write_youcook2(str(tmp_path / "yc"))
    _build(benchmarks.list_youcook2(str(tmp_path / "yc")), tmp_path / "out")
    records = _records(tmp_path / "out")
    assert sorted(records) == sorted(want["segments"])
    for clip_id, (start, end, sentence) in want["segments"].items():
        record = records[clip_id]
        assert record["captions"].tolist() == [sentence.encode()]
        assert len(record["frames"]) == int(
            np.floor((min(end, layouts.SECONDS) - start) * 10 + 1e-6)
        )
        first = tf.io.decode_jpeg(record["frames"][0]).numpy().mean()
        assert abs(first - media.grey(start)) < 4, (clip_id, first, media.grey(start))
        assert abs(len(record["audio"]) - (min(end, layouts.SECONDS) - start) * 48000) < 2400


def test_esc50_audio_only_records_resampled_to_48k(tmp_path):
    want = layouts.write_esc50(str(tmp_path / "esc"), per_fold=1, seconds=0.5)
    _build(benchmarks.list_esc50(str(tmp_path / "esc")), tmp_path / "out")
    records = _records(tmp_path / "out")
    assert sorted(records) == sorted(want["labels"])
    for clip_id, record in records.items():
        assert len(record["frames"]) == 0
        assert record["labels"].tolist() == [want["labels"][clip_id]]
        assert abs(len(record["audio"]) - 0.5 * 48000) <= 48  # 44.1 kHz -> 48 kHz
        hz = 300 + 700 * want["labels"][clip_id]
        spectrum = np.abs(np.fft.rfft(record["audio"]))
        assert abs(np.argmax(spectrum) * 48000 / len(record["audio"]) - hz) < 10


def test_pretraining_record_still_needs_frames():
    with pytest.raises(ValueError, match="at least one video frame"):
        schema.make_sequence_example("x", [], np.zeros(10, np.float32))
    with pytest.raises(ValueError, match="audio-only record"):
        schema.make_sequence_example("x", [], None, audio_only=True)


def test_tool_prints_counts_resumes_and_kinetics_shards_per_split(tmp_path):
    layouts.write_kinetics400(str(tmp_path / "k400"), missing=("va0" + "0xxxxxxx_000000_000010",))
    out = str(tmp_path / "out")
    args = [
        "tools/build_benchmark.py",
        "--benchmark=kinetics400",
        f"--root={tmp_path / 'k400'}",
        f"--out_dir={out}",
        "--videos_per_shard=2",
        "--short_side=0",
        "--num_workers=1",
    ]
    first = run_tool(args[:-1] + ["--num_workers=2"]).stdout  # shards in 2 worker processes
    assert "kinetics400: 5 file(s), 5 clip(s), 2 classes" in first
    assert "train/val: 4 train, 2 test" in first
    assert "1 listed file(s) missing" in first and "files/s" in first
    assert "(3 written, 0 already finished)" in first
    shards = sorted(os.path.basename(p) for p in glob.glob(os.path.join(out, "*.tfrecord")))
    assert shards == [
        "train-00000-of-00002.tfrecord",
        "train-00001-of-00002.tfrecord",
        "val-00000-of-00001.tfrecord",
    ]
    assert len(_records(out, "val-*.tfrecord")) == 1
    second = run_tool(args).stdout
    assert "(0 written, 3 already finished)" in second
    with open(os.path.join(out, "index.json")) as f:
        assert json.load(f)["classes"] == ["abseiling", "air drumming"]
    bad = run_tool(args[:2] + [f"--root={tmp_path / 'nowhere'}", f"--out_dir={out}"], check=False)
    assert bad.returncode != 0 and bad.stderr.strip().splitlines()[-1].startswith("error: --root")


# --------------------------------------------------------------------------------------------
# audio-only records through the evaluation input; pre-training rejects them
# --------------------------------------------------------------------------------------------
def _vocab(tmp_path):
    from vatt_gh.data import text as text_lib

    path = str(tmp_path / "vocab.txt")
    text_lib.write_word_vocab(path, ["w"])
    return path


def _audio_only_shard(path, seconds=(1.0, 0.5)):
    """Records a0, a1: audio only, a ramp (value = time in s) so windows are recognisable."""
    records = [
        schema.make_sequence_example(
            f"a{i}",
            [],
            np.arange(int(s * 48000), dtype=np.float32) / 48000,
            labels=[i],
            audio_only=True,
        )
        for i, s in enumerate(seconds)
    ]
    schema.write_records(str(path), records)
    return str(path)


def test_eval_audio_only_windows_over_the_waveform(tmp_path):
    from vatt_gh.data.configs import EvalConfig
    from vatt_gh.data.eval_input import eval_dataset

    shard = _audio_only_shard(tmp_path / "esc.tfrecord")
    config = EvalConfig(
        file_pattern=shard,
        fps=10.0,
        num_frames=4,
        num_windows=3,
        crop_size=8,
        min_resize=8,
        audio_only=True,
        vocab_path=_vocab(tmp_path),
    )
    batch = next(iter(eval_dataset(config, batch_size=2)))
    assert batch["video"].shape == (2, 3, 0, 8, 8, 3)
    assert batch["audio"].shape == (2, 3, 19200)  # 4 frames / 10 fps = 0.4 s at 48 kHz
    assert batch["label"].numpy().tolist() == [0, 1]
    assert batch["audio_mask"].numpy().tolist() == [1.0, 1.0]
    # windows evenly spaced over 1.0 s (10 "frames"): starts 0, 0.3, 0.6 s (reference: the
    # window offsets of a 10-frame clip, span 4); the 0.5 s clip: 0, 0.05 -> 0.0/0.1, 0.1 s
    first = batch["audio"].numpy()[0, :, 0]
    np.testing.assert_allclose(first, [0.0, 0.3, 0.6], atol=1e-4)
    assert batch["audio"].numpy()[1, -1, 0] == pytest.approx(0.1, abs=1e-4)
    assert batch["audio"].numpy()[1, 0, -1] == pytest.approx(19199 / 48000, abs=1e-4)


def test_audio_only_rejected_by_video_input_and_silent_record_by_audio_input(tmp_path):
    from vatt_gh.data.configs import EvalConfig
    from vatt_gh.data.eval_input import eval_dataset
    from vatt_gh.data.rejects import BadRecordError

    shard = _audio_only_shard(tmp_path / "esc.tfrecord", seconds=(1.0,))
    vocab = _vocab(tmp_path)
    config = EvalConfig(
        file_pattern=shard, num_frames=4, crop_size=8, min_resize=8, vocab_path=vocab
    )
    with pytest.raises((BadRecordError, tf.errors.InvalidArgumentError), match="no video frames"):
        list(eval_dataset(config, batch_size=1))
    video_only = tmp_path / "video.tfrecord"
    jpeg = tf.io.encode_jpeg(np.zeros((8, 8, 3), np.uint8)).numpy()
    schema.write_records(str(video_only), [schema.make_sequence_example("v", [jpeg] * 4)])
    config = EvalConfig(
        file_pattern=str(video_only),
        num_frames=4,
        crop_size=8,
        min_resize=8,
        audio_only=True,
        vocab_path=vocab,
    )
    with pytest.raises(
        (BadRecordError, tf.errors.InvalidArgumentError), match="record 0: no audio"
    ):
        list(eval_dataset(config, batch_size=1))


def test_rerun_after_a_missing_file_arrives_rebuilds_with_it(tmp_path):
    layouts.write_msrvtt(str(tmp_path / "msr"), num_videos=3, missing=("video7012",))
    first = _build(benchmarks.list_msrvtt(str(tmp_path / "msr")), tmp_path / "out")
    assert first["num_clips"] == 2 and len(first["missing"]) == 1
    layouts._video(str(tmp_path / "msr" / "videos" / "all" / "video7012.mp4"))
    foreign = tmp_path / "out" / "other-00000-of-00001.tfrecord"  # not this builder's
    foreign.write_bytes(b"")
    second = _build(benchmarks.list_msrvtt(str(tmp_path / "msr")), tmp_path / "out")
    assert second["num_clips"] == 3 and not second["missing"] and second["skipped"] == 0
    assert foreign.exists()
    foreign.unlink()
    assert len(glob.glob(str(tmp_path / "out" / "*.tfrecord*"))) == 4  # old shard removed
    assert sorted(_records(tmp_path / "out")) == [
        "video7010",
        "video7011",
        "video7012",
    ]


def test_segment_past_the_video_end_fails_alone(tmp_path):
    want = layouts.write_youcook2(str(tmp_path / "yc"))
    path = tmp_path / "yc" / "youcookii_annotations_trainval.json"
    data = json.loads(path.read_text())
    data["database"]["vidA"]["annotations"].append(
        {"segment": [5.0, 6.0], "id": 2, "sentence": "after the end"}
    )
    path.write_text(json.dumps(data))
    index = _build(benchmarks.list_youcook2(str(tmp_path / "yc")), tmp_path / "out")
    assert [f[0].rsplit(os.sep, 1)[-1] for f in index["failed"]] == ["vidA.mp4 [vidA_2]"]
    assert sorted(_records(tmp_path / "out")) == sorted(want["segments"])
