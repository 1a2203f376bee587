"""bench/reproduce_lib's statistics against independent references: the t-interval against the
formula with a tabulated quantile, the AUC against sklearn, the retrieval ceiling against a
simulated class oracle, the variable filters against a loop, and the plan's run counts."""

import os

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import reproduce_lib as lib  # noqa: E402


def test_interval_is_the_student_t_interval():
    values = [1.0, 2.0, 4.0, 7.0, 11.0]
    out = lib.interval(values)
    half = 2.7764451 * np.std(values, ddof=1) / np.sqrt(5)  # t_{0.975, 4} from a table
    assert out["n"] == 5 and abs(out["mean"] - 5.0) < 1e-12
    assert abs(out["lo"] - (5.0 - half)) < 1e-5 and abs(out["hi"] - (5.0 + half)) < 1e-5
    assert lib.interval([3.0])["lo"] is None and lib.interval([None, float("nan")]) is None


def test_auc_matches_sklearn_with_ties():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    aligned = np.round(rng.normal(0.3, 0.5, 40), 1)  # rounded: ties
    misaligned = np.round(rng.normal(0.0, 0.5, 25), 1)
    labels = np.r_[np.ones(40), np.zeros(25)]
    expected = roc_auc_score(labels, np.r_[aligned, misaligned])
    assert abs(lib.auc(aligned, misaligned) - expected) < 1e-12
    assert lib.auc(aligned, []) is None


def test_retrieval_ceiling_against_a_simulated_oracle():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 5, 60)
    hits = {1: [], 5: [], 10: []}
    for _ in range(150):  # the oracle ranks the clip's class first, in random order
        for q, c in enumerate(labels):
            same = np.flatnonzero(labels == c)
            rank = 1 + int(np.flatnonzero(rng.permutation(same) == q)[0])
            for k in hits:
                hits[k].append(rank <= k)
    ceiling = lib.retrieval_ceiling(labels)
    for k in hits:
        assert abs(ceiling[f"t2v/R@{k}"] - 100 * np.mean(hits[k])) < 1.5


def test_filters_sum_the_named_parts():
    rng = np.random.default_rng(2)
    parts = np.abs(rng.normal(size=(7, len(lib.PARTS), 3)))
    parts[..., 0] = rng.normal(size=(7, len(lib.PARTS)))
    for name, chosen in lib.FILTER_PARTS.items():
        dot = sum(parts[:, lib.PARTS.index(p), 0] for p in chosen)
        nva = sum(parts[:, lib.PARTS.index(p), 1] for p in chosen)
        nvt = sum(parts[:, lib.PARTS.index(p), 2] for p in chosen)
        np.testing.assert_allclose(lib.filter_cosines(parts, name), dot / np.sqrt(nva * nvt))
    assert lib.part_of("vatt_agnostic/fac_head/video_va/kernel:0") == "head"
    assert lib.part_of("vatt_agnostic/text_tokenizer/word_embedding/embeddings:0") == "word_table"
    assert lib.part_of("vatt_agnostic/encoder/layer_0/attention/kernel:0") == "encoder"


def test_plan_counts_and_sum_runs_once_per_level_and_seed():
    setting = lib.Setting(granularities=("group:8", "group:1"))
    runs = lib.plan(setting)
    signal = [r for r in runs if r.study == "signal"]
    effect = [r for r in runs if r.study == "effect"]
    assert len(signal) == 2 * 2 * 3  # variants x word tables x seeds
    # (1 sum + 3 methods x 2 granularities) x 2 levels x 5 seeds + 3 extra gamma starts x 5
    assert len(effect) == (1 + 3 * 2) * 2 * 5 + 3 * 5
    assert len({r.name for r in runs}) == len(runs)
    assert {r.granularity for r in effect if r.method == "sum"} == {"group:8"}
