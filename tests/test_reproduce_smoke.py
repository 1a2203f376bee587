"""bench/reproduce.py end to end at its smallest setting, in a subprocess, so it cannot rot:
one seed, a few steps, two methods, one misaligned level, tiny data, a one-layer model."""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # in `make test-slow` (CI runs both)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_reproduce_smallest_setting(tmp_path):
    results = tmp_path / "reproduce"
    command = [
        sys.executable,
        os.path.join(REPO, "bench", "reproduce.py"),
        f"--results_dir={results}",
        "--steps=4",
        "--batch=8",
        "--seeds=0",
        "--methods=sum,curriculum",
        "--levels=0.4",
        "--noablation",
        "--train_clips=32",
        "--test_clips=16",
        "--probe_train_clips=16",
        "--cosine_probe_clips=16",
        "--cosine_checkpoints=1",
        "--num_windows=1",
        "--gin_param=build_vatt.num_layers=1",
    ]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    table = (results / "results.md").read_text()
    assert "| 40% | sum |" in table and "| 40% | curriculum |" in table
    assert "group:1" in table
    raw = json.loads((results / "results.json").read_text())
    assert {r["run"]["method"] for r in raw["runs"]} == {"sum", "curriculum"}
    for run in raw["runs"]:
        assert run["step"] == 4
        assert 0 <= run["retrieval"]["t2v/R@1"] <= run["retrieval"]["t2v/R@10"] <= 100
        assert 0 <= run["probe_video"]["top1"] <= 100
        cosines = run["cosines"][-1]
        assert cosines["num_triplets"] == 16
        assert cosines["auc"] is None or 0 <= cosines["auc"] <= 1
        assert 0 <= run["negative_share_training"] <= 1 and run["seconds_per_step"] > 0
    assert raw["summary"]["0.4|sum"]["x sum"]["mean"] == 1.0
    assert (results / "figure4_mis40.png").stat().st_size > 1000
    assert not (results / "runs" / "mis40-sum-s0" / "checkpoints").exists()  # freed after eval
