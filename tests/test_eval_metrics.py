"""Evaluation maths against hand-computed values: retrieval ranks (ties), top-k, linear probe,
histogram percentiles, extreme selection, AUC, summaries, and the cosine / clip-id matching of
the conflict inspection (with a fake model). No checkpoint needed."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from vatt_gh.evaluation import (
    accuracy,
    classifier,
    conflicts,
    features,
    histories,
    probe,
    results,
    retrieval,
)


# ------------------------------------------------------------------------------ retrieval
def test_pessimistic_ranks_hand_computed_with_ties():
    scores = np.array(
        [
            [0.9, 0.1, 0.9, 0.0],  # tie with column 2 -> rank 2
            [0.5, 0.4, 0.3, 0.6],  # two higher -> rank 3
            [0.1, 0.2, 0.3, 0.0],  # best -> rank 1
            [0.7, 0.7, 0.7, 0.7],
        ]
    )  # all tied -> last, rank 4
    np.testing.assert_array_equal(retrieval.pessimistic_ranks(scores), [2, 3, 1, 4])
    np.testing.assert_array_equal(retrieval.pessimistic_ranks(scores.T), [1, 2, 4, 1])
    metrics = retrieval.recall_metrics([2, 3, 1, 4], recall_at=(1, 2, 5))
    assert metrics == {"R@1": 25.0, "R@2": 50.0, "R@5": 100.0, "median_rank": 2.5, "mean_rank": 2.5}


def test_retrieval_metrics_from_embeddings():
    video = np.eye(3)  # clips 0, 1, 2
    text = np.array(
        [
            [2.0, 0, 0],  # = video 0: rank 1
            [1.0, 0, 0],  # scores 0 with its video: rank 3
            [0.0, 3, 3],
        ]
    )  # ties videos 1 and 2: rank 2
    m = retrieval.retrieval_metrics(video, text)
    assert m["num_clips"] == 3
    assert m["t2v/R@1"] == pytest.approx(100 / 3)
    assert m["t2v/R@5"] == 100.0
    assert m["t2v/median_rank"] == 2.0
    assert m["t2v/mean_rank"] == pytest.approx(2.0)  # ranks 1, 3, 2
    # video -> text: video 0 ties texts 0 and 1 (rank 2); video 1 scores 0 against all (rank 3)
    assert m["v2t/R@1"] == pytest.approx(100 / 3)
    assert m["v2t/median_rank"] == 2.0
    assert m["v2t/mean_rank"] == pytest.approx(2.0)


def test_collapsed_embeddings_rank_last():
    m = retrieval.retrieval_metrics(np.ones((5, 4)), np.ones((5, 4)))
    assert m["t2v/R@1"] == 0.0 and m["t2v/median_rank"] == 5.0


def test_retrieval_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="same shape"):
        retrieval.retrieval_metrics(np.ones((3, 4)), np.ones((2, 4)))


# ------------------------------------------------------------------------------ accuracy
def test_topk_accuracy_ties_count_against_the_label():
    scores = np.array(
        [
            [0.5, 0.5, 0.0],  # label 0 tied with class 1 -> rank 2
            [0.1, 0.8, 0.1],  # label 1 best -> rank 1
            [0.3, 0.3, 0.4],
        ]
    )  # label 0: class 2 above, class 1 tied -> 3
    labels = np.array([0, 1, 0])
    np.testing.assert_array_equal(accuracy.label_ranks(scores, labels), [2, 1, 3])
    out = accuracy.topk_accuracy(scores, labels, top_k=(1, 2, 5))
    assert out == {"top1": pytest.approx(100 / 3), "top2": pytest.approx(200 / 3), "top5": 100.0}


def test_average_views_and_label_range():
    probs = np.array([[[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]])
    np.testing.assert_allclose(accuracy.average_views(probs), [[1 / 3, 2 / 3]])
    with pytest.raises(ValueError, match="labels"):
        accuracy.topk_accuracy(np.ones((1, 2)), np.array([2]))


# ------------------------------------------------------------------------------ probe
def _blobs(rng, num_classes, per_class, views, dim=16, spread=0.3):
    centres = rng.normal(size=(num_classes, dim)) * 2.0
    labels = np.repeat(np.arange(num_classes), per_class)
    x = centres[labels][:, None, :] + spread * rng.normal(size=(len(labels), views, dim))
    return x, labels


def test_probe_separable_features_and_shuffled_labels():
    rng = np.random.default_rng(0)
    train_x, train_y = _blobs(rng, 5, 40, 3)
    test_x, test_y = train_x + 0.3 * rng.normal(size=train_x.shape), train_y
    good = probe.linear_probe_metrics(train_x, train_y, test_x, test_y)
    assert good["top1"] >= 95.0 and good["top5"] == 100.0 and good["chance"] == 20.0
    shuffled = probe.linear_probe_metrics(train_x, rng.permutation(train_y), test_x, test_y)
    assert shuffled["top1"] < 40.0, shuffled  # chance is 20% (200 test clips)


def test_probe_vatt_head_learns_separable_features_not_shuffled_labels():
    rng = np.random.default_rng(0)
    train_x, train_y = _blobs(rng, 5, 40, 3)
    test_x, test_y = train_x + 0.3 * rng.normal(size=train_x.shape), train_y
    kw = dict(classifier_kind="vatt", epochs=60)
    good = probe.linear_probe_metrics(train_x, train_y, test_x, test_y, **kw)
    assert good["top1"] >= 95.0 and good["top5"] == 100.0
    shuffled = probe.linear_probe_metrics(train_x, rng.permutation(train_y), test_x, test_y, **kw)
    assert shuffled["top1"] < 40.0, shuffled
    head = probe.LinearProbe(5, **kw).fit(train_x[:10], train_y[:10]).classifier.model
    kinds = [type(layer).__name__ for layer in head.layers]
    assert kinds == ["Dense", "Dropout", "Dense"] and head.layers[1].rate == 0.9
    assert head.layers[0].units == 128 and head.layers[2].units == 5


def test_probe_classes_missing_from_training_get_zero_probability():
    rng = np.random.default_rng(1)
    x, y = _blobs(rng, 3, 10, 1)
    fitted = probe.LinearProbe(num_classes=5).fit(x, y)
    p = fitted.predict_proba(x)
    assert p.shape == (30, 5)
    np.testing.assert_allclose(p[:, 3:], 0.0)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    with pytest.raises(ValueError, match="training labels"):
        probe.LinearProbe(num_classes=2).fit(x, y)


# ------------------------------------------------------------------------------ features
def test_window_and_caption_averaging():
    windows = np.array([[[3.0, 0.0], [0.0, 0.5]]])  # (1, 2 windows, 2)
    np.testing.assert_allclose(features.clip_embeddings(windows), [[2**-0.5, 2**-0.5]])
    captions = np.array([[[0.0, 2.0], [5.0, 0.0]]])  # second caption is padding
    np.testing.assert_allclose(features.text_embeddings(captions, [[1.0, 0.0]]), [[0.0, 1.0]])


# ------------------------------------------------------------------------------ fine-tuning
def test_smoothed_cross_entropy_and_optional_clipping():
    logits = np.array([[2.0, 0.0, -1.0]], np.float32)
    loss = classifier.smoothed_cross_entropy(tf.constant(logits), tf.constant([0]), 3, 0.1)
    targets = np.array([0.9 + 0.1 / 3, 0.1 / 3, 0.1 / 3])
    log_softmax = logits[0] - np.log(np.exp(logits[0]).sum())
    assert float(loss[0]) == pytest.approx(-(targets * log_softmax).sum(), rel=1e-5)
    grads = [tf.constant([3.0, 4.0])]
    assert classifier.clip_by_global_norm(grads, 0.0)[0] is grads[0]
    np.testing.assert_allclose(classifier.clip_by_global_norm(grads, 1.0)[0], [0.6, 0.8], rtol=1e-6)


# ------------------------------------------------------------------------------ histories
def test_histogram_percentiles_match_samples():
    rng = np.random.default_rng(0)
    samples = rng.uniform(-1, 1, 4000)
    counts, edges = np.histogram(samples, bins=50)
    buckets = np.stack([edges[:-1], edges[1:], counts], axis=1)
    got = histories.histogram_percentiles(buckets, (5, 25, 50, 75, 95))
    np.testing.assert_allclose(got, np.percentile(samples, [5, 25, 50, 75, 95]), atol=0.04)
    assert histories.fraction_below(buckets, 0.0) == pytest.approx(np.mean(samples < 0), abs=0.01)
    point = np.array([[0.3, 0.3, 1.0], [0.3, 0.3, 0.0]])  # one value (one replica)
    np.testing.assert_allclose(histories.histogram_percentiles(point, (5, 50, 95)), [0.3] * 3)
    assert histories.fraction_below(point, 0.0) == 0.0
    assert histories.fraction_below(np.array([[-0.5, 0.5, 4.0]]), 0.0) == 0.5


def test_read_histograms_from_event_files(tmp_path):
    writer = tf.summary.create_file_writer(str(tmp_path))
    with writer.as_default():
        tf.summary.histogram(histories.TAG, [0.5] * 10, step=20)
        tf.summary.histogram(histories.TAG, np.linspace(-1, 0, 101), step=10)
        tf.summary.histogram(histories.TAG, [-0.2] * 4, step=20)  # a resumed run: last wins
        tf.summary.scalar("train/loss", 1.0, step=10)
    writer.close()
    h = histories.read_histograms(str(tmp_path))
    np.testing.assert_array_equal(h.steps, [10, 20])
    np.testing.assert_array_equal(h.counts, [101, 4])
    median = h.percentiles[:, list(h.percentile_levels).index(50)]
    np.testing.assert_allclose(median, [-0.5, -0.2], atol=0.04)
    np.testing.assert_allclose(h.fraction_negative, [1.0, 1.0], atol=0.02)
    with pytest.raises(ValueError, match="no 'missing/tag' histogram"):
        histories.read_histograms(str(tmp_path), tag="missing/tag")
    with pytest.raises(FileNotFoundError, match="no TensorBoard event files"):
        histories.read_histograms(str(tmp_path / "nothing"))


def test_read_histograms_pools_steps_with_few_cosines(tmp_path):
    """One cosine per summary step (granularity 'replica', one device): pooled 3 steps a point,
    a remainder of one step joins the last point; percentiles of the pooled values. With
    min_points the pooling stops short of leaving fewer points."""
    values = [0.1, -0.3, 0.4, 0.2, 0.6, -0.1, 0.5]
    writer = tf.summary.create_file_writer(str(tmp_path))
    with writer.as_default():
        for i, value in enumerate(values):
            tf.summary.histogram(histories.TAG, [value], step=10 * (i + 1))
    writer.close()
    h = histories.read_histograms(str(tmp_path), levels=(25, 50, 75), min_count=3, min_points=2)
    np.testing.assert_array_equal(h.steps, [30, 70])
    np.testing.assert_array_equal(h.summaries_per_point, [3, 4])
    np.testing.assert_array_equal(h.counts, [3, 4])
    for point, pooled in enumerate((values[:3], values[3:])):  # point masses: the inverse CDF
        want = np.percentile(pooled, (25, 50, 75), method="inverted_cdf")
        np.testing.assert_allclose(h.percentiles[point], want, atol=0.05)
    assert h.percentiles[1, 0] < h.percentiles[1, 2]  # a band, not a line
    np.testing.assert_allclose(h.fraction_negative, [1 / 3, 1 / 4], atol=0.02)
    one = histories.read_histograms(str(tmp_path))  # min_count 1: every step its own point
    assert len(one.steps) == 7 and (one.summaries_per_point == 1).all()
    capped = histories.read_histograms(str(tmp_path), min_count=20, min_points=3)
    np.testing.assert_array_equal(capped.summaries_per_point, [2, 2, 3])


# ------------------------------------------------------------------------------ conflicts
def test_select_extremes_and_auc():
    cos = np.array([0.3, -0.1, 0.5, 0.0, -0.4, 0.2, 0.1, 0.05, -0.05, 0.6])
    top, bottom = conflicts.select_extremes(cos, 0.2)
    np.testing.assert_array_equal(top, [9, 2])
    np.testing.assert_array_equal(bottom, [4, 1])
    top, bottom = conflicts.select_extremes(cos, 0.01)  # at least one each
    assert list(top) == [9] and list(bottom) == [4]
    # aligned {0.3, 0.1} vs misaligned {0.2, 0.0}: 3 of 4 pairs ordered -> 0.75
    auc = conflicts.alignment_auc([0.3, 0.1, 0.2, 0.0], [1, 1, 0, 1], [1, 1, 1, 0])
    assert auc == pytest.approx(0.75)
    assert conflicts.alignment_auc([0.1, 0.2], [1, 1], [1, 1]) is None


class _FakeModel:
    """gradient_stats whose 'cosine' is each example's mean pixel: identifies the clip."""

    def __init__(self, batch_size):
        self.batch_size = batch_size
        self.granularities = set()

    def gradient_stats(self, data, granularity):
        self.granularities.add(granularity)
        assert data["video"].shape[0] == self.batch_size  # static, always full
        assert data["video"].shape.rank == 5 and data["text"].shape.rank == 3
        mean = tf.reduce_mean(data["video"], axis=[1, 2, 3, 4])
        return {
            "cosine": mean,
            "dot": 2 * mean,
            "norm_va": data["audio_mask"],
            "norm_vt": tf.reduce_sum(data["text_mask"], axis=1),
        }


def test_triplet_cosines_stay_with_their_clips(tmp_path):
    from vatt_gh.data import synthetic
    from vatt_gh.data.configs import EvalConfig
    from vatt_gh.data.eval_input import eval_dataset

    made = synthetic.write_synthetic(
        str(tmp_path),
        num_clips=11,
        num_classes=3,
        misaligned_fraction=0.5,
        num_frames=8,
        frame_size=40,
        num_shards=2,
    )
    config = EvalConfig(
        file_pattern=made["file_pattern"],
        vocab_path=made["vocab_path"],
        num_frames=8,
        num_windows=1,
        crop_size=32,
        min_resize=40,
        num_captions=2,
        max_tokens=8,
    )
    model = _FakeModel(batch_size=4)
    rows = conflicts.triplet_cosines(model, config, batch_size=4)  # 4 + 4 + 3 (filled up)
    assert model.granularities == {"example"}
    truth = {c["clip_id"]: c for c in made["clips"]}
    assert sorted(rows["clip_id"]) == sorted(truth)
    # Independent expectation: each clip's mean pixel, one clip at a time.
    expected = {}
    for batch in eval_dataset(config, 1):
        expected[batch["clip_id"].numpy()[0].decode()] = float(tf.reduce_mean(batch["video"]))
    for i, clip_id in enumerate(rows["clip_id"]):
        assert rows["cosine"][i] == pytest.approx(expected[clip_id], abs=1e-6), clip_id
        assert rows["aligned_va"][i] == truth[clip_id]["aligned_va"]
        assert rows["aligned_vt"][i] == truth[clip_id]["aligned_vt"]
        assert rows["label"][i] == truth[clip_id]["label"]
        assert rows["text_count"][i] == 2
    path = conflicts.write_csv(str(tmp_path / "c.csv"), rows)
    lines = open(path).read().splitlines()
    assert lines[0].startswith("clip_id,cosine") and len(lines) == 12
    with pytest.raises(ValueError, match="fewer than --batch_size"):
        conflicts.triplet_cosines(_FakeModel(16), config, batch_size=16)
    conflicts.triplet_cosines(model, config, batch_size=4, max_clips=4, granularity="group:1")
    assert model.granularities == {"example", "group:1"}
    with pytest.raises(ValueError, match="granularity 'replica'"):
        conflicts.triplet_cosines(model, config, batch_size=4, granularity="replica")


def test_html_names_every_selected_clip(tmp_path):
    rows = {
        "clip_id": np.array(["a<1>", "b", "c"]),
        "cosine": np.array([0.5, -0.2, 0.1]),
        "aligned_va": np.array([1, 0, 1]),
        "aligned_vt": np.array([1, 1, 1]),
        "label": np.array([0, 1, 2]),
    }
    jpeg = tf.io.encode_jpeg(tf.zeros([4, 4, 3], tf.uint8)).numpy()
    clips = {
        "a<1>": {"frames": [jpeg, jpeg], "captions": ["hello there"]},
        "b": {"frames": [jpeg], "captions": ["x & y"]},
    }
    path = conflicts.write_html(
        str(tmp_path / "p.html"),
        rows,
        {"top": np.array([0]), "bottom": np.array([1])},
        clips,
        "t",
        synthetic=True,
        auc=0.75,
    )
    page = open(path).read()
    assert "a&lt;1&gt;" in page and "<code>b</code>" in page and "<code>c</code>" not in page
    assert page.count("<img ") == 3 and "x &amp; y" in page and "0.750" in page
    assert "misaligned audio" in page and "cos = -0.2000" in page


# ------------------------------------------------------------------------------ summaries
def test_json_and_tensorboard_scalars(tmp_path):
    metrics = {
        "youcook2": {"t2v/R@1": np.float32(12.5), "num_clips": np.int64(8), "bad": float("nan")},
        "probe": {"video": {"top1": 50.0}},
    }
    path = results.write_json(str(tmp_path / "m" / "metrics.json"), metrics)
    loaded = json.load(open(path))
    assert loaded == {
        "youcook2": {"t2v/R@1": 12.5, "num_clips": 8, "bad": None},
        "probe": {"video": {"top1": 50.0}},
    }
    results.write_scalars(str(tmp_path / "eval"), 7, metrics)
    seen = {}
    for name in os.listdir(tmp_path / "eval"):
        for event in tf.compat.v1.train.summary_iterator(str(tmp_path / "eval" / name)):
            for value in event.summary.value:
                seen[value.tag] = (event.step, float(tf.make_ndarray(value.tensor)))
    assert seen == {
        "eval/youcook2/t2v/R@1": (7, 12.5),
        "eval/youcook2/num_clips": (7, 8.0),
        "eval/probe/video/top1": (7, 50.0),
    }
