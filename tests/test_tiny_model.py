"""Small models on real data: gin/model/tiny.gin runs with the tools' default word table, and a
word table that does not fit the model is one line naming the bindings to change."""

import os
import subprocess
import sys

import numpy as np
import pytest

import gin
from vatt_gh import configs, pretraining, provision
from vatt_gh.data import synthetic
from vatt_gh.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_TABLE = (2**16, 300)  # tools/build_vocab.py --vocab_size, build_word_vectors.py --dim


pytestmark = pytest.mark.usefixtures("clean_gin")


def _table(path, shape=DEFAULT_TABLE):
    """A zero .npy table of `shape` (sparse on disk: only the header is written)."""
    np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape).flush()
    return path


def _paths(tmp_path, table):
    return [
        f"howto100m/SourceConfig.file_pattern = '{tmp_path}/train-*.tfrecord'",
        f"PretrainConfig.vocab_path = '{tmp_path}/vocab.txt'",
        f"build_vatt.word_vectors_path = '{table}'",
    ]


def test_tiny_preset_with_the_default_table_is_one_line(tmp_path):
    """The tools' 65,536 x 300 table with build_vatt.preset='tiny' (1,000 x 32) used to be a
    44-line traceback from inside the model build; now the command stops with one line."""
    table = _table(str(tmp_path / "word_vectors.npy"))
    args = ["--gin_file=gin/baseline.gin", "--gin_param=build_vatt.preset='tiny'"]
    args += [f"--gin_param={b}" for b in _paths(tmp_path, table)]
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    proc = subprocess.run(
        [sys.executable, "tools/pretrain.py", *args, f"--model_dir={tmp_path / 'run'}"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0] == (
        f"error: build_vatt.word_vectors_path {table!r} holds a (65536, 300) table but the "
        "model (build_vatt.preset = 'tiny') has (vocab_size, word_dim) = (1000, 32): bind "
        "build_vatt.vocab_size = 65536 and build_vatt.word_dim = 300 (gin/model/tiny.gin does "
        "for the tools' default table), or rebuild the table with tools/build_word_vectors.py "
        "--vocab_size=1000 --dim=32"
    )
    assert not os.path.exists(tmp_path / "run")


def test_tiny_gin_takes_the_tools_default_table(tmp_path):
    table = _table(str(tmp_path / "word_vectors.npy"))
    configs.parse_gin(["gin/curriculum.gin", "gin/model/tiny.gin"], _paths(tmp_path, table))
    provision.check_word_table()  # fits
    gin.clear_config()
    configs.parse_gin(["gin/curriculum.gin", "gin/model/tiny.gin"], _paths(tmp_path, table))
    with gin.unlock_config():
        gin.bind_parameter("build_vatt.word_dim", 64)
    with pytest.raises(ConfigError, match=r"holds a \(65536, 300\) table .* = \(65536, 64\)"):
        provision.check_word_table()


@pytest.mark.slow  # the 65,536 x 300 table, tracing and 3 steps: ~2 min on a busy 2-core CPU
def test_tiny_gin_trains_on_records_of_real_sizes(tmp_path):
    """HowTo100M-like records (10 fps, 40 frames of 64 x 64, narrations) and the default table:
    gin/model/tiny.gin as shipped, with only the run's length and the paths set."""
    made = synthetic.write_synthetic(
        str(tmp_path),
        num_clips=16,
        num_frames=40,
        frame_size=64,
        num_captions=3,
        words_per_caption=4,
        num_shards=2,
        prefix="train",
    )
    rows = np.random.default_rng(0).normal(size=DEFAULT_TABLE).astype(np.float32)
    table = str(tmp_path / "word_vectors.npy")
    np.save(table, rows)
    bindings = _paths(tmp_path, table)
    bindings[1] = f"PretrainConfig.vocab_path = '{made['vocab_path']}'"
    bindings += [
        "TRAIN_STEPS = 3",
        "GLOBAL_BATCH = 8",
        "make_optimizer.warmup_steps = 1",
        "pretrain.checkpoint_every = 3",
        "pretrain.progress = False",
    ]
    configs.parse_gin(["gin/curriculum.gin", "gin/model/tiny.gin"], bindings)
    model = pretraining.pretrain(str(tmp_path / "run"))
    assert int(model.optimizer.iterations.numpy()) == 3
    assert all(np.isfinite(w).all() for w in model.get_weights())
    config = model.vatt.vatt_config
    assert (config.vocab_size, config.word_dim) == DEFAULT_TABLE
