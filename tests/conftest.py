"""Shared test set-up: quiet TensorFlow, deterministic seeds, and the fixtures several files use
(a word vocabulary, gin cleared around a test, harmonization plans)."""

import hashlib
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest

# The one tiny pre-trained run the evaluation tests share (a session fixture).
pytest_plugins = ["eval_fixtures"]


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same Python, NumPy and TensorFlow seeds."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    yield


@pytest.fixture(scope="session")
def vocab(tmp_path_factory):
    """A word vocabulary w0..w9 (w<i> has id i + 2: 0 pads, 1 is unknown)."""
    from vatt_gh.data import text as text_lib

    path = str(tmp_path_factory.mktemp("vocab") / "vocab.txt")
    text_lib.write_word_vocab(path, [f"w{i}" for i in range(10)])
    return path


@pytest.fixture
def clean_gin():
    """gin cleared before and after the test, and Keras' session with it."""
    import tensorflow as tf

    import gin

    gin.clear_config()
    yield
    gin.clear_config()
    tf.keras.backend.clear_session()


@pytest.fixture
def plan():
    """plan(method, granularity='group:1', gamma=None, phi_hat=None, **config) ->
    (Harmonization, gamma, phi_hat): a test case's keywords split into the configuration and
    the step's state, in the order `harmonize.weights` / `harmonized_update` take them
    ('example' / 'microbatch:K' admitted as analysis granularities)."""
    from vatt_gh.harmonize import Harmonization

    def make(method, granularity="group:1", gamma=None, phi_hat=None, **config):
        analysis = granularity == "example" or granularity.startswith("microbatch:")
        h = Harmonization(method, granularity, analysis=analysis, **config)
        return h, gamma, phi_hat

    return make


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
