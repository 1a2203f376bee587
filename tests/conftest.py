"""Shared test set-up: quiet TensorFlow, deterministic seeds, a bounded thread pool."""

import hashlib
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

# The one tiny pre-trained run the evaluation tests share (a session fixture).
pytest_plugins = ["eval_fixtures"]


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same Python, NumPy and TensorFlow seeds."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    yield


def _snapshot(root, skip=()):
    """relative path -> sha256 of every file under `root` (dotfiles included), but `skip`."""
    out = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if os.path.join(folder, d) not in skip]
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return out


@pytest.fixture
def snapshot():
    """`snapshot(root, skip=())`: names and bytes of every file under root, to compare."""
    return _snapshot
