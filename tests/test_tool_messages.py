"""What the tools tell a new user: help texts that match what runs, no noise from libraries,
the TensorBoard command of this environment, no false warning on a restored word table."""

import logging
import os
import re
import subprocess
import sys

import pytest
import tensorflow as tf

from vatt_gh import configs, console, trainer
from vatt_gh.data import synthetic
from vatt_gh.evaluation.classifier import FinetuneConfig
from vatt_gh.models import build_vatt

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _help(tool):
    done = subprocess.run(
        [sys.executable, os.path.join(REPO, "tools", tool), "--help"],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=REPO),
        timeout=300,
    )
    return " ".join((done.stdout + done.stderr).split())  # one line: wrapped text joined


def test_plot_cosines_recommends_granularities_pretraining_accepts():
    text = _help("plot_cosines.py")
    recommended = re.findall(r"granularity='([^']+)'", text)
    assert recommended, text[:500]
    for granularity in recommended:
        trainer.Harmonization(method="sum", granularity=granularity)  # raises if refused
    with pytest.raises(ValueError):  # the one it used to recommend
        trainer.Harmonization(method="sum", granularity="example")


def test_finetune_help_says_droptoken_is_off_as_it_is():
    assert FinetuneConfig().drop_token is False
    text = _help("finetune.py")
    assert "DropToken off" in text and "DropToken on" not in text


def test_tensorboard_command_is_this_environments():
    command = console.tensorboard_command("/tmp/run dir")
    here = os.path.join(os.path.dirname(sys.executable), "tensorboard")
    if os.path.exists(here):  # e.g. .venv/bin/tensorboard: not on PATH unless activated
        path = command.split(" --logdir=")[0]
        assert os.path.samefile(path, here)
    assert command.endswith(" --logdir='/tmp/run dir'")


def test_build_word_vectors_prints_no_gensim_info(tmp_path):
    made = synthetic.write_synthetic(
        str(tmp_path), num_clips=8, num_frames=4, frame_size=8, num_shards=1, prefix="train"
    )
    done = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "tools", "build_word_vectors.py"),
            f"--vocab={made['vocab_path']}",
            f"--narrations={made['file_pattern']}",
            f"--output={tmp_path / 'table.npy'}",
            "--vocab_size=100",
            "--dim=8",
            "--epochs=1",
        ],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"},
        cwd=REPO,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert " INFO " not in done.stderr + done.stdout and "gensim" not in done.stderr, done.stderr
    assert done.stderr.strip() == "", done.stderr
    assert done.stdout.strip().splitlines()[-1].startswith("wrote ")


def test_a_restored_word_table_is_not_called_random(tmp_path, caplog, clean_gin):
    """Evaluation tools load a run whose operative config has no word_vectors_path (the demo):
    the frozen table comes from the checkpoint, so there is no "random (tests only)" warning;
    a path from the run's machine is not read either."""
    model_dir = tmp_path / "run"
    (model_dir / "checkpoints").mkdir(parents=True)
    (model_dir / "operative_config.gin").write_text(
        "build_vatt.preset = 'micro'\nbuild_vatt.word_vectors_path = '/elsewhere/table.npy'\n"
    )
    model = trainer.PretrainModel(build_vatt("micro"))
    from vatt_gh.models import dummy_inputs

    model(dummy_inputs(model.vatt.vatt_config), training=False)
    table = [v for v in model.vatt.non_trainable_variables if "word_embedding" in v.name][0]
    table.assign(tf.ones_like(table) * 0.5)
    tf.train.Checkpoint(model=model).save(str(model_dir / "checkpoints" / "ckpt"))
    caplog.clear()  # the warning of this test's own model (built above without a table)
    with caplog.at_level(logging.WARNING):
        restored, step = configs.load_pretrained(str(model_dir))
    assert step == 1
    assert "random" not in caplog.text, caplog.text
    got = [v for v in restored.vatt.non_trainable_variables if "word_embedding" in v.name][0]
    assert float(tf.reduce_min(got)) == float(tf.reduce_max(got)) == 0.5
