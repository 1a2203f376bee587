"""Shared by the evaluation tests: ONE tiny pre-trained run per test session, and helpers.

`tiny_run` pre-trains the demo model for 4 steps on 32 synthetic clips (tools/pretrain.py in a
subprocess) and writes a separate labelled synthetic set (4 classes, aligned, 2 shards of 32 clips:
train / test) for probes and fine-tuning. Under pytest-xdist the run is built once, under a file
lock in the session's shared temporary directory.
"""

import fcntl
import os
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
LABELLED = dict(
    num_clips=64,
    num_classes=4,
    misaligned_fraction=0.0,
    num_frames=16,
    frame_size=40,
    num_shards=2,
    seed=1,
    prefix="labelled",
)


def run_tool(args, timeout=300, check=True):
    """Runs `python <args>` from the repository root; returns the CompletedProcess."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    result = subprocess.run(
        [sys.executable] + list(args),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{args[0]} failed ({result.returncode}):\n{result.stdout[-3000:]}"
            f"\n{result.stderr[-5000:]}"
        )
    return result


def read_scalars(log_dir):
    """tag -> (step, value) of the last scalar of each tag in a TensorBoard log folder."""
    import tensorflow as tf

    seen = {}
    for name in sorted(os.listdir(log_dir)):
        for event in tf.compat.v1.train.summary_iterator(os.path.join(log_dir, name)):
            for value in event.summary.value:
                seen[value.tag] = (event.step, float(tf.make_ndarray(value.tensor)))
    return seen


def assert_png(path, min_bytes=2000, min_side=100):
    """A real, non-trivial PNG image: signature, size, decodable with a plausible shape."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image as mpimg

    assert os.path.exists(path), path
    with open(path, "rb") as f:
        assert f.read(8) == PNG_SIGNATURE, f"{path} is not a PNG"
    assert os.path.getsize(path) > min_bytes, f"{path} is only {os.path.getsize(path)} bytes"
    image = mpimg.imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4), image.shape
    assert image.shape[0] >= min_side and image.shape[1] >= min_side, image.shape
    assert np.ptp(image[..., :3]) > 0.1, f"{path} is blank"
    return image.shape


def _build(root):
    run_dir = os.path.join(root, "run")
    run_tool(
        [
            "tools/pretrain.py",
            "--gin_file=gin/baseline.gin",
            "--gin_file=gin/demo.gin",
            "--gin_param=TRAIN_STEPS=4",
            "--gin_param=GLOBAL_BATCH=8",
            "--gin_param=SyntheticData.num_clips=32",
            "--gin_param=pretrain.summary_every=2",
            "--model_dir=" + run_dir,
        ],
        timeout=600,
    )
    from vatt_gh.data import synthetic

    synthetic.write_synthetic(os.path.join(root, "labelled"), **LABELLED)
    return _build_info(root)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """dict(model_dir, pattern, metadata, train_pattern, test_pattern, num_classes, root)."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    root = os.path.join(shared, "eval_tiny_run")
    with open(os.path.join(shared, "eval_tiny_run.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = os.path.join(root, "DONE")
        if not os.path.exists(done):
            os.makedirs(root, exist_ok=True)
            _build(root)
            with open(done, "w") as f:
                f.write("ok")
    return _build_info(root)


def _build_info(root):
    run_dir = os.path.join(root, "run")
    files = sorted(
        os.path.join(root, "labelled", f)
        for f in os.listdir(os.path.join(root, "labelled"))
        if f.endswith(".tfrecord")
    )
    return {
        "model_dir": run_dir,
        "pattern": os.path.join(run_dir, "data", "synthetic-*.tfrecord"),
        "metadata": os.path.join(run_dir, "data", "metadata.json"),
        "train_pattern": files[0],
        "test_pattern": files[1],
        "num_classes": LABELLED["num_classes"],
        "root": root,
    }
