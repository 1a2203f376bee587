"""bench/reproduce_study, _run and _tables against independent references: the t-interval
against the formula with a tabulated quantile, the AUC against sklearn, the retrieval ceiling
against a simulated class oracle, the variable filters, the decisions of `both` and the
agreement rows against loops, Spearman against hand-computed ranks, the statistics of a top
part S against a step with Harmonization.statistics = S, and the plan's run counts."""

import os

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import reproduce_run as worker  # noqa: E402
import reproduce_study as study  # noqa: E402
import reproduce_tables as tables  # noqa: E402


def test_interval_is_the_student_t_interval():
    values = [1.0, 2.0, 4.0, 7.0, 11.0]
    out = tables.interval(values)
    half = 2.7764451 * np.std(values, ddof=1) / np.sqrt(5)  # t_{0.975, 4} from a table
    assert out["n"] == 5 and abs(out["mean"] - 5.0) < 1e-12
    assert abs(out["lo"] - (5.0 - half)) < 1e-5 and abs(out["hi"] - (5.0 + half)) < 1e-5
    assert tables.interval([3.0])["lo"] is None and tables.interval([None, float("nan")]) is None


def test_auc_matches_sklearn_with_ties():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    aligned = np.round(rng.normal(0.3, 0.5, 40), 1)  # rounded: ties
    misaligned = np.round(rng.normal(0.0, 0.5, 25), 1)
    labels = np.r_[np.ones(40), np.zeros(25)]
    expected = roc_auc_score(labels, np.r_[aligned, misaligned])
    assert abs(tables.auc(aligned, misaligned) - expected) < 1e-12
    assert tables.auc(aligned, []) is None


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
    ceiling = worker.retrieval_ceiling(labels)
    for k in hits:
        assert abs(ceiling[f"t2v/R@{k}"] - 100 * np.mean(hits[k])) < 1.5


def test_filters_sum_the_named_parts():
    rng = np.random.default_rng(2)
    parts = np.abs(rng.normal(size=(7, len(study.PARTS), 3)))
    parts[..., 0] = rng.normal(size=(7, len(study.PARTS)))
    for name, chosen in study.FILTER_PARTS.items():
        dot = sum(parts[:, study.PARTS.index(p), 0] for p in chosen)
        nva = sum(parts[:, study.PARTS.index(p), 1] for p in chosen)
        nvt = sum(parts[:, study.PARTS.index(p), 2] for p in chosen)
        np.testing.assert_allclose(tables.filter_cosines(parts, name), dot / np.sqrt(nva * nvt))
    assert worker.part_of("vatt_agnostic/fac_head/video_va/kernel:0") == "head"
    assert (
        worker.part_of("vatt_agnostic/text_tokenizer/word_embedding/embeddings:0") == "word_table"
    )
    assert worker.part_of("vatt_agnostic/encoder/layer_0/attention/kernel:0") == "encoder"


def test_plan_counts_and_sum_runs_once_per_level_and_seed():
    setting = study.Setting(granularities=("group:8", "group:1"))
    runs = study.plan(setting)
    signal = [r for r in runs if r.study == "signal"]
    effect = [r for r in runs if r.study == "effect"]
    assert len(signal) == 2 * 2 * 3  # variants x word tables x seeds
    # (1 sum + 3 methods x 2 granularities) x 2 levels x 5 seeds + 3 extra gamma starts x 5
    assert len(effect) == (1 + 3 * 2) * 2 * 5 + 3 * 5
    assert len({r.name for r in runs}) == len(runs)
    assert {r.granularity for r in effect if r.method == "sum"} == {"group:8"}


def test_spearman_against_hand_computed_ranks():
    # b's ranks with mid-ranks for the tie: 1, 2, 3.5, 5, 3.5; a's: 1..5. Pearson of the
    # ranks: sum of products of deviations 8, sums of squares 10 and 9.5.
    assert abs(tables.spearman([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]) - 8 / np.sqrt(95)) < 1e-12
    # No ties: 1 - 6 sum d^2 / (n (n^2 - 1)); d = (0, 2, -1, -1, 0) -> 1 - 36 / 120
    assert abs(tables.spearman([0.1, 0.2, 0.3, 0.4, 0.5], [1, 4, 2, 3, 9]) - 0.7) < 1e-12
    assert tables.spearman([1, 1, 1], [1, 2, 3]) is None and tables.spearman([1], [2]) is None


def decision_loop(stats, gamma):
    """`both` per triplet, written out: drop when cos <= gamma, project when cos < 0, else sum."""
    out = []
    for dot, nva, nvt in stats:
        cos = dot / np.sqrt(nva * nvt) if nva * nvt > 0 else 0.0
        out.append("drop" if cos <= gamma else "project" if cos < 0 else "sum")
    return out


def random_stats(rng, n):
    stats = np.abs(rng.normal(1.0, 0.5, size=(n, 3))) + 0.1
    stats[:, 0] = rng.uniform(-0.9, 0.6, n) * np.sqrt(stats[:, 1] * stats[:, 2])
    stats[0, 0] = 0.0  # cos exactly 0: sum below gamma 0, dropped at gamma 0
    return stats


def test_decisions_match_a_loop_over_triplets():
    stats = random_stats(np.random.default_rng(3), 200)
    for gamma in study.AGREEMENT_GAMMAS:
        got = [study.DECISIONS[i] for i in tables.decisions(stats, gamma)]
        assert got == decision_loop(stats, gamma)
    assert set(decision_loop(stats, -0.15)) == set(study.DECISIONS)  # every branch exercised


def test_agreement_rows_against_a_loop():
    """A made-up signal result: the rows' Spearman from NumPy ranks (no ties), the decision
    disagreement from the loop, the AUCs from sklearn."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(4)
    n = 40
    kinds = ["aligned" if i % 2 else "swap_text" for i in range(n)]
    parts = np.stack([random_stats(rng, n) / len(study.PARTS) for _ in study.PARTS], 1)
    top = np.stack([parts[:, 0], random_stats(rng, n)], 1)  # S1 = the head part; S2 made up
    result = {
        "clips": [{"kind": k} for k in kinds],
        "top_names": ["heads", "top:1"],
        "along_training": [
            {"step": 7, "parts": {"own_path": parts.tolist()}, "top": {"own_path": top.tolist()}}
        ],
    }
    rows = tables.agreement_rows(result)
    assert [(r["step"], r["statistics"]) for r in rows] == [(7, "heads"), (7, "top:1")]
    full = parts.sum(axis=1)
    cos = lambda s: s[:, 0] / np.sqrt(s[:, 1] * s[:, 2])
    aligned = np.array([k == "aligned" for k in kinds])
    ranks = lambda x: np.argsort(np.argsort(x)).astype(float)
    for j, row in enumerate(rows):
        s = top[:, j]
        assert abs(row["spearman"] - np.corrcoef(ranks(cos(s)), ranks(cos(full)))[0, 1]) < 1e-9
        for gamma in study.AGREEMENT_GAMMAS:
            differ = np.mean(
                [a != b for a, b in zip(decision_loop(s, gamma), decision_loop(full, gamma))]
            )
            assert abs(row[f"differ {gamma:g}"] - differ) < 1e-12
        assert abs(row["auc S"] - roc_auc_score(aligned, cos(s))) < 1e-12
        assert abs(row["auc all"] - roc_auc_score(aligned, cos(full))) < 1e-12
        assert abs(row["dropped S -0.15"] - np.mean(cos(s) <= -0.15)) < 1e-12
    assert 0 < rows[1]["differ -0.15"] < 1


def test_plan_with_statistics_pairs_each_harmonizing_run(tmp_path):
    setting = study.Setting(
        methods=("sum", "both"),
        granularities=("group:1",),
        statistics=("all", "heads"),
        seeds=(0, 1, 2),
        ablation=False,
        signal=False,
    )
    runs = study.plan(setting)
    # per level: sum, both over all weights, both over the heads; 3 seeds each
    assert len(runs) == 2 * 3 * 3 and len({r.name for r in runs}) == len(runs)
    assert {(r.method, r.statistics) for r in runs} == {
        ("sum", "all"),
        ("both", "all"),
        ("both", "heads"),
    }
    heads = next(r for r in runs if r.statistics == "heads")
    spec = study.run_spec(heads, setting, str(tmp_path))
    assert "Harmonization.statistics='heads'" in spec["gin_params"]
    full = next(r for r in runs if r.method == "both" and r.statistics == "all")
    params = study.run_spec(full, setting, str(tmp_path))["gin_params"]
    assert not any(p.startswith("Harmonization.statistics") for p in params)


def test_effect_summary_pairs_s_with_all_weights_by_seed():
    def result(method, statistics, seed, r5):
        run = dict(method=method, statistics=statistics, seed=seed, level=0.4)
        run.update(granularity="group:1", gamma_start=None)
        return {"run": run, "retrieval": {"t2v/R@5": r5}}

    r5 = {("sum", "all"): [10, 20, 30], ("both", "all"): [12, 25, 31]}
    r5[("both", "heads")] = [11, 27, 35]
    results = [result(m, s, i, v) for (m, s), vs in r5.items() for i, v in enumerate(vs)]
    summary = tables.effect_summary(results)
    cell = summary["0.4|group:1|both [heads]"]
    diffs = np.subtract(r5[("both", "heads")], r5[("both", "all")])  # -1, 2, 4
    assert abs(cell["vs all t2v R@5"]["mean"] - diffs.mean()) < 1e-12
    assert abs(cell["diff t2v R@5"]["mean"] - np.mean([1, 7, 5])) < 1e-12  # minus sum
    assert "vs all t2v R@5" not in summary["0.4|group:1|both"]
    assert "| 40% | `group:1` | both [heads] | 3 |" in tables.statistics_table(summary)


def test_top_statistics_are_the_ones_a_run_with_s_harmonizes_with():
    """make_part_stats' sums over S (own path) against the cosines of a step with
    Harmonization.statistics = S (vatt_gh.harmonized_update, group:1), on the two-layer micro
    VATT; S's variables against their names; 'top:3' is deeper than the model: left out."""
    import tensorflow as tf
    from toy import micro_vatt, random_batch

    from vatt_gh import trainer
    from vatt_gh.harmonize import Harmonization
    from vatt_gh.harmonized_update import harmonized_update

    tf.keras.utils.set_random_seed(0)
    model = trainer.PretrainModel(micro_vatt(num_layers=2), Harmonization())
    batch = random_batch(8, seed=1)
    model(batch, training=False)
    stats = worker.make_part_stats(model, ("heads", "top:1", "top:3"))
    assert stats.top_names == ["heads", "top:1"]
    tops = worker.top_parts(model.vatt, ("heads", "top:1"))
    named = {
        "heads": ("/fac_head/",),
        "top:1": ("/fac_head/", "_post_projection/", "/encoder/final_norm/", "/encoder/layer_1/"),
    }
    for name, variables in tops.items():
        want = [
            v.name for v in model.vatt.trainable_variables if any(p in v.name for p in named[name])
        ]
        assert [v.name for v in variables] == want
    out = stats(batch)
    for j, name in enumerate(stats.top_names):
        h = Harmonization("both", "group:1", statistics=name)
        _, step, _ = harmonized_update(
            model.loss_fn(batch), model.trainable_variables, model.vatt, h, gamma=-1.0
        )
        s = out["top"]["own_path"][:, j]
        np.testing.assert_allclose(s[:, 0] / np.sqrt(s[:, 1] * s[:, 2]), step["cosine"], atol=1e-5)
    heads = out["top"]["own_path"][:, 0]
    np.testing.assert_allclose(heads, out["own_path"][:, study.PARTS.index("head")], rtol=1e-6)
