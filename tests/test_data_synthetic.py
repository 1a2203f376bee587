"""Synthetic triplets: reproducible, exact misaligned count, and the stored ground truth agrees
with the content (tone pitch, frame colour, class words) as the pipeline delivers it."""

import colorsys
import json

import numpy as np
import pytest

from vatt_gh.data import pipeline as P
from vatt_gh.data import synthetic

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
    cfg = P.EvalConfig(
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
    for b in P.eval_dataset(cfg, 8):
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
