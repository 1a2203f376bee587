"""bench/reproduce.py --quick end to end, in a subprocess, so it cannot rot: one signal run
(sum, checkpoints, per-triplet gradients under both definitions, and over the top parts S) and
the effect runs (sum, curriculum over all weights and with statistics='heads') on tiny data with
a one-layer model. The numbers are checked against independent references: the AUC against
sklearn's, the cosines' definition against the clip's ground truth read back from the records,
the heads' statistics against the head part's."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # in `make test-slow` (CI runs both)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_reproduce_quick(tmp_path):
    import reproduce_study as study
    import reproduce_tables as tables
    from sklearn.metrics import roc_auc_score

    from vatt_gh.data import synthetic

    results = tmp_path / "reproduce"
    command = [
        sys.executable,
        os.path.join(REPO, "bench", "reproduce.py"),
        f"--results_dir={results}",
        "--quick",
        "--statistics=all,heads",
    ]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    table = (results / "results.md").read_text()
    # sum trains the same at every granularity: one row (at the first); curriculum at both
    assert "| 40% | `group:8` | sum |" in table and "| 40% | `group:1` | curriculum |" in table
    assert "own path (group:1)" in table and "own loss term (Jacobian)" in table
    raw = json.loads((results / "results.json").read_text())
    assert raw["missing"] == []
    effect = [r for r in raw["runs"] if r["run"]["study"] == "effect"]
    assert {r["run"]["method"] for r in effect} == {"sum", "curriculum"}
    assert sorted(r["run"]["statistics"] for r in effect if r["run"]["method"] == "curriculum") == [
        "all",
        "all",
        "heads",
        "heads",
    ]
    assert "| 40% | `group:1` | curriculum [heads] | 1 |" in table
    assert "## Statistics from a top part S: agreement with all weights" in table
    for run in effect:
        assert run["step"] == 4
        assert 0 <= run["retrieval"]["t2v/R@1"] <= run["retrieval"]["t2v/R@10"] <= 100
        assert 0 <= run["probe_video"]["top1"] <= 100
        assert 0 <= run["negative_share_training"] <= 1 and run["seconds_per_step"] > 0
    assert not (results / "runs" / "mis40-group:1-sum-s0" / "checkpoints").exists()

    # The signal run: per-clip part statistics at both checkpoints, truth from the records.
    signal = json.loads(
        (results / "runs" / "signal-agnostic-frozen-s0" / "result.json").read_text()
    )
    truth = synthetic.read_truth(str(results / "data" / "train_mis40" / "synthetic-*.tfrecord"))
    assert [p["step"] for p in signal["along_training"]] == [2, 4]
    assert signal["top_names"] == ["heads", "top:1"]  # top:2 is deeper than one layer
    assert len(signal["clips"]) == 16
    for clip in signal["clips"]:
        assert clip["kind"] == truth[clip["clip_id"]]["misalign_kind"]
    kinds = np.array([c["kind"] for c in signal["clips"]])
    aligned = np.array([synthetic.kind_modality(k) == "aligned" for k in kinds])
    for point in signal["along_training"]:
        for definition in study.DEFINITIONS:
            parts = np.asarray(point["parts"][definition])  # (clips, parts, 3)
            assert parts.shape == (16, len(study.PARTS), 3) and np.isfinite(parts).all()
            assert (parts[..., 1:] >= 0).all()  # squared norms
            head = parts[:, study.PARTS.index("head")]
            assert (head[:, 1] > 0).all() and (head[:, 2] > 0).all()  # both losses reach it
            word = parts[:, study.PARTS.index("word_table")]
            assert (word == 0).all()  # frozen: not among the trainable variables
            top = np.asarray(point["top"][definition])  # (clips, S, 3)
            np.testing.assert_allclose(top[:, 0], head, rtol=1e-6)  # 'heads' = the head part
            # top:1 of a one-layer model: the head, the encoder and the post-projections (the
            # last in the 'tokenizers' part): its squared norms lie between the two parts' and all
            inner = parts[:, [study.PARTS.index("head"), study.PARTS.index("encoder")]].sum(axis=1)
            slack = 1e-5 * parts.sum(axis=1)[:, 1:]
            assert (top[:, 1, 1:] >= inner[:, 1:] - slack).all()
            assert (top[:, 1, 1:] <= parts.sum(axis=1)[:, 1:] + slack).all()
            cos = tables.filter_cosines(parts, "all")
            total = parts.sum(axis=1)
            np.testing.assert_allclose(
                cos, total[:, 0] / np.sqrt(total[:, 1] * total[:, 2]), rtol=1e-6
            )
            assert np.all(np.abs(cos) <= 1 + 1e-6)
            if aligned.any() and not aligned.all():
                expected = roc_auc_score(aligned.astype(int), cos)
                assert abs(tables.auc(cos[aligned], cos[~aligned]) - expected) < 1e-9
    for name in ("signal_auc_settings.png", "signal_auc_weights.png", "effect_R5.png"):
        assert (results / name).stat().st_size > 1000
