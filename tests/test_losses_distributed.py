"""The losses on 2 MirroredStrategy replicas (2 logical CPUs) equal the single-device losses.

Runs tests/losses_distributed_helper.py in a subprocess: logical devices must be configured
before any TensorFlow op, which this pytest process has already run.
"""

import json
import os
import subprocess
import sys

HELPER = os.path.join(os.path.dirname(__file__), "losses_distributed_helper.py")


def test_two_replicas_match_one_device():
    result = subprocess.run([sys.executable, HELPER], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    # Same global mean on every replica, same per-example losses (concatenated in replica order).
    assert report["nce_mean_diff"] < 1e-5
    assert report["mil_mean_diff"] < 1e-5
    assert report["nce_per_example_diff"] < 1e-5
    assert report["mil_per_example_diff"] < 1e-5
    assert report["nce_per_example_zero"] == [0.0, 0.0]
    assert report["mil_per_example_zero"] == 0.0
    # Sum over replicas of grad(sum(per_example) / global count) == single-device grad(mean).
    assert report["grad_scale"] > 1e-2
    assert report["grad_diff"] < 1e-5 * max(1.0, report["grad_scale"])
    # Differentiating the (all-reduced) global mean on every replica over-counts: 2x here.
    assert abs(report["mean_grad_ratio"] - 2.0) < 1e-4
