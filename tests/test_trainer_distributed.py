"""MirroredStrategy over logical CPU devices against single-device runs and the group
definition computed from per-replica tapes (docs/tensorflow_notes.md, docs/harmonization.md)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from vatt_gh.harmonize import METHODS

pytestmark = pytest.mark.slow  # in `make test-slow` (CI runs both)

HELPER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mirrored_trainer_helper.py")
# Relative tolerance of an update against another path's: VATT's normalisations (LayerNorm
# over the positional tables, BatchNorm over a few clips, temperature 0.07) amplify float32
# rounding to 5e-5..1.2e-4 here; a wrong weight or group moves an update by more than 1e-1.
TOL = 2e-3


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    pairs = str(tmp_path_factory.mktemp("mirrored") / "pairs.npz")
    proc = subprocess.run(
        [sys.executable, HELPER, "pairs", pairs], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = subprocess.run(
        [sys.executable, HELPER, pairs], capture_output=True, text=True, timeout=1200
    )
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT ") :])


@pytest.mark.parametrize("method", METHODS)
def test_same_groups_same_update_on_one_device_and_two(report, method):
    """Batch 8 on one device vs 4 + 4 on two replicas, granularity group:2: same update."""
    r = report[method]
    assert r["update_norm"] > 0
    assert r["rel_two_vs_one"] < TOL, r
    assert len(r["cosines_two"]) == 4  # every group of every replica reaches the host
    np.testing.assert_allclose(r["cosines_two"], r["cosines_one"], atol=2e-4)
    assert r["applied"] == [1.0, 1.0]


@pytest.mark.parametrize("method", METHODS)
def test_heads_statistics_same_update_on_one_device_and_two(report, method):
    """statistics='heads' (the head's statistics, one pass below it): batch 8 on one device vs
    4 + 4 on two replicas at group:2, the same update and the same head cosines."""
    r = report[method]
    assert r["heads_update_norm"] > 0
    assert r["heads_rel_two_vs_one"] < TOL, r
    assert len(r["heads_cosines_two"]) == 4
    if method == "curriculum":  # gamma between the 2nd and 3rd cosine: 2 of 4 dropped
        assert r["dropped_heads"] == [0.5, 0.5]
    np.testing.assert_allclose(r["heads_cosines_two"], r["heads_cosines_one"], atol=2e-4)


@pytest.mark.parametrize("method", ["realign", "both"])
def test_top_layers_statistics_same_update_on_one_device_and_two(report, method):
    """statistics='top:1' (head, post-projections, the encoder's last layer): one device vs
    two replicas, the same update and cosines, and cosines that are not the head's."""
    r = report[f"top1_{method}"]
    assert r["update_norm"] > 0
    assert r["rel_two_vs_one"] < TOL, r
    assert len(r["cosines_two"]) == 4
    np.testing.assert_allclose(r["cosines_two"], r["cosines_one"], atol=2e-4)
    assert np.abs(np.subtract(r["cosines_one"], r["heads_cosines"])).max() > 1e-3


@pytest.mark.parametrize("method", METHODS)
def test_group_update_is_the_definition(report, method):
    """The update equals the groups' pairs from per-replica tapes (4 replicas of 2 clips)."""
    r = report[method]
    assert r["rel_one_vs_spec"] < TOL, r
    np.testing.assert_allclose(r["cosines_one"], report["cosines_4_replicas"], atol=2e-4)


def test_curriculum_drops_the_conflicting_groups_only(report):
    cos = np.array(report["cosines_4_replicas"])
    gamma = 0.3  # the helper's curriculum gamma
    assert 0 < np.sum(cos <= gamma) < 4  # drops some groups, not all
    np.testing.assert_allclose(
        report["curriculum"]["dropped"], [np.mean(cos <= gamma)] * 2, atol=1e-6
    )


@pytest.mark.parametrize("case", ["nan_clip", "all_dropped"])
def test_a_skipped_step_leaves_every_variable_under_two_replicas(report, case):
    r = report["skipped"][case]
    assert r["applied"] == 0.0 and r["step"] == 1
    assert r["weights_changed"] == 0.0
    assert r["moving_changed"] == 0.0  # BatchNorm moving statistics: unchanged, not NaN


def test_own_loss_terms_refuse_several_replicas_at_once(report):
    assert "runs on one device only" in (report["own_loss_error"] or "")
