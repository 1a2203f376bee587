"""Shared test set-up: quiet TensorFlow, deterministic seeds, a bounded thread pool."""

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
