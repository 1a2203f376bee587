"""Synthetic triplets: reproducible, exact misaligned count, and the stored ground truth agrees
with the content (tone pitch, frame colour, class words) as the pipeline delivers it."""

import colorsys
import json

import numpy as np
import pytest

from vatt_gh.data import synthetic
from vatt_gh.data.configs import EvalConfig
from vatt_gh.data.eval_input import eval_dataset

KW = dict(
    num_clips=24,
    num_classes=4,
    misaligned_fraction=0.5,
    num_frames=8,
    frame_size=24,
    num_captions=3,
    words_per_caption=4,
    num_shards=2,
)


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    return synthetic.write_synthetic(str(tmp_path_factory.mktemp("syn")), seed=3, **KW)


def test_same_seed_same_bytes(syn, tmp_path):
    again = synthetic.write_synthetic(str(tmp_path), seed=3, **KW)
    for a, b in zip(syn["files"], again["files"]):
        assert open(a, "rb").read() == open(b, "rb").read()
    other = synthetic.write_synthetic(str(tmp_path / "o"), seed=4, **KW)
    assert open(syn["files"][0], "rb").read() != open(other["files"][0], "rb").read()


def test_misaligned_count_and_metadata(syn):
    clips = json.load(open(syn["metadata_path"]))["clips"]
    bad = [c for c in clips if not (c["aligned_va"] and c["aligned_vt"])]
    assert len(bad) == 12
    kinds = {(c["aligned_va"], c["aligned_vt"]) for c in bad}
    assert kinds == {(0, 1), (1, 0), (0, 0)}
    for c in clips:
        assert c["aligned_va"] == int(c["audio_class"] == c["label"])
        assert c["aligned_vt"] == int(c["text_class"] == c["label"])


def test_pipeline_output_matches_ground_truth(syn):
    truth = {c["clip_id"]: c for c in syn["clips"]}
    cfg = EvalConfig(
        file_pattern=syn["file_pattern"],
        num_frames=8,
        num_windows=1,
        crop_size=24,
        min_resize=24,
        num_captions=3,
        max_tokens=4,
        vocab_path=syn["vocab_path"],
    )
    vocab = [l.rstrip("\n") for l in open(syn["vocab_path"])]
    seen = 0
    for b in eval_dataset(cfg, 8):
        for i, clip_id in enumerate(b["clip_id"].numpy()):
            t = truth[clip_id.decode()]
            seen += 1
            assert b["label"].numpy()[i] == t["label"]
            assert b["aligned_va"].numpy()[i] == t["aligned_va"]
            assert b["aligned_vt"].numpy()[i] == t["aligned_vt"]
            audio = b["audio"].numpy()[i, 0]
            peak = np.argmax(np.abs(np.fft.rfft(audio))) * 48000 / len(audio)
            assert abs(peak - synthetic.class_frequency(t["audio_class"])) < 2
            words = {vocab[j] for j in b["text"].numpy()[i].reshape(-1) if j}
            assert words & set(synthetic.class_words(t["text_class"]))
            for c in range(KW["num_classes"]):
                if c != t["text_class"]:
                    assert not words & set(synthetic.class_words(c))
            video = (b["video"].numpy()[i, 0] + 1) / 2  # (T, H, W, 3) in [0, 1]
            bright = video.max(axis=-1) > 0.6  # the shape's pixels
            hue = colorsys.rgb_to_hsv(*video[bright].mean(axis=0))[0]
            expected = t["label"] / KW["num_classes"]
            assert min(abs(hue - expected), 1 - abs(hue - expected)) < 0.05
    assert seen == KW["num_clips"]


# ------------------------------------------------------- HowTo100M-like misalignment kinds
def _records(file_pattern):
    import tensorflow as tf

    from vatt_gh.data import schema

    out = {}
    for path in sorted(tf.io.gfile.glob(file_pattern)):
        for record in tf.data.TFRecordDataset(path):
            parsed = schema.parse_sequence_example(record)
            out[parsed["clip_id"].numpy().decode()] = {
                "captions": [c.decode() for c in parsed["captions"].numpy()],
                "audio": parsed["audio"].numpy().reshape(-1),
            }
    return out


def test_howto_kinds_ground_truth_matches_content(tmp_path):
    n_kinds = len(synthetic.HOWTO_KINDS)
    kw = dict(KW, num_clips=2 * n_kinds, misaligned_fraction=1.0)
    syn = synthetic.write_synthetic(
        str(tmp_path), seed=5, misalign_kinds=synthetic.HOWTO_KINDS, **kw
    )
    truth = synthetic.read_truth(syn["file_pattern"])  # from the records, not the metadata
    meta = {c["clip_id"]: c for c in json.load(open(syn["metadata_path"]))["clips"]}
    assert truth.keys() == meta.keys()
    kinds = [t["misalign_kind"] for t in truth.values()]
    assert sorted(kinds) == sorted(2 * list(synthetic.HOWTO_KINDS))  # every kind, twice
    records = _records(syn["file_pattern"])
    clip_ids = sorted(records)
    for clip_id, t in truth.items():
        assert t["misalign_kind"] == meta[clip_id]["misalign_kind"]
        audio_wrong, text_wrong = synthetic.MISALIGN_KINDS[t["misalign_kind"]]
        assert t["aligned_va"] == int(not audio_wrong) and t["aligned_vt"] == int(not text_wrong)
        words = {w for c in records[clip_id]["captions"] for w in c.split()}
        audio = records[clip_id]["audio"]
        spectrum = np.abs(np.fft.rfft(audio))
        peak = np.argmax(spectrum) * 48000 / len(audio)
        kind = t["misalign_kind"]
        if kind == "offscreen_text":
            assert t["text_class"] == -1 and words & set(synthetic.OFFSCREEN_WORDS)
            assert not any(words & set(synthetic.class_words(c)) for c in range(4))
        if "shift_text" in kind:  # the next clip (file order) of another class, its narration
            i = clip_ids.index(clip_id)
            j = next(
                clip_ids[(i + s) % len(clip_ids)]
                for s in range(1, len(clip_ids))
                if meta[clip_ids[(i + s) % len(clip_ids)]]["label"] != t["label"]
            )
            assert t["text_class"] == meta[j]["label"] != t["label"]
            if meta[j]["misalign_kind"] in ("aligned", "swap_audio", "silent_audio"):
                assert records[clip_id]["captions"] == records[j]["captions"]
            assert words & set(synthetic.class_words(t["text_class"]))
        if kind == "silent_audio":
            assert t["audio_class"] == -1 and np.sqrt(np.mean(audio**2)) < 0.02
        if "unrelated_audio" in kind:  # noise: no tone carries a tenth of the energy
            assert t["audio_class"] == -1
            assert spectrum.max() ** 2 < 0.01 * np.sum(spectrum**2)
        if kind in ("swap_audio", "swap_both"):
            assert abs(peak - synthetic.class_frequency(t["audio_class"])) < 2
            assert t["audio_class"] != t["label"]


def test_bad_kinds_and_codes_are_one_line_errors(tmp_path):
    with pytest.raises(ValueError, match="misalign kind 'typo'"):
        synthetic.write_synthetic(str(tmp_path / "a"), misalign_kinds=("typo",), **KW)
    with pytest.raises(ValueError, match="misaligned_fraction"):
        synthetic.write_synthetic(str(tmp_path / "b"), **dict(KW, misaligned_fraction=1.5))
    import tensorflow as tf

    from vatt_gh.data import schema

    path = str(tmp_path / "bad.tfrecord")
    example = schema.make_sequence_example(
        "clip_x",
        [tf.io.encode_jpeg(np.zeros((8, 8, 3), np.uint8)).numpy()],
        extra_int_context={
            k: [v]
            for k, v in (
                (schema.LABEL, 0),
                (schema.ALIGNED_VA, 1),
                (schema.ALIGNED_VT, 1),
                (schema.AUDIO_CLASS, 0),
                (schema.TEXT_CLASS, 0),
                (synthetic.MISALIGN_KIND_KEY, 99),
            )
        },
    )
    schema.write_records(path, [example])
    with pytest.raises(ValueError, match=r"bad.tfrecord: clip 'clip_x' has synthetic/misalign"):
        synthetic.read_truth(path)
