"""Gin for every tool: the user's files and bindings, or a finished run's operative config.

    parse_gin(["gin/curriculum.gin", "gin/demo.gin"], ["pretrain.train_steps=40"])
    parse_run(model_dir, checkpoint=None, gin_files=(), gin_params=())   # a run's, then yours
    model, step = open_run(model_dir, checkpoint=None, gin_files=(), gin_params=())
    model, step = load_pretrained(model_dir)   # gin from the run's operative config, no checks

Imported here, at the top, is every module that registers a gin configurable, so a binding
for any of them parses whichever tool runs. `parse_gin` raises `LaunchError`; `parse_run` and
`open_run` (for the evaluation tools) raise `EvalError`; each with one line that names the
flag, file or binding at fault.
"""

import os
from typing import Optional, Sequence, Tuple

import tensorflow as tf

import gin
from vatt_gh import checkpoints, pretraining, run_config, trainer  # noqa: F401  (gin registration)
from vatt_gh.errors import ConfigError, LaunchError
from vatt_gh.evaluation import classifier  # noqa: F401  (gin registration)
from vatt_gh.evaluation.run import EvalError
from vatt_gh.models import build_vatt, dummy_inputs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_gin(files: Sequence[str], params: Sequence[str] = ()):
    """Parse gin files then bindings; `include 'gin/...'` resolves from the repository root."""
    gin.add_config_file_search_path(REPO)
    resolved = []
    for path in files:
        for candidate in (path, os.path.join(REPO, path)):
            if os.path.exists(candidate):
                resolved.append(candidate)
                break
        else:
            raise LaunchError(f"--gin_file {path!r} does not exist")
    try:
        gin.parse_config_files_and_bindings(resolved, list(params))
    except (ValueError, KeyError, IOError, SyntaxError) as e:
        raise LaunchError(f"bad gin configuration: {e}") from None


def parse_run(
    model_dir: str,
    checkpoint: Optional[str] = None,
    gin_files: Sequence[str] = (),
    gin_params: Sequence[str] = (),
):
    """Gin of the pre-training run `model_dir`, then the user's files and bindings on top (a
    `--gin_param=EvalConfig.num_windows=2` or a model override applies to the run's config).
    Checks that `checkpoint` (a prefix), if given, exists."""
    # the config that trained the checkpoint (a resume may have recorded another)
    step = checkpoints.checkpoint_step(checkpoint) if checkpoint else None
    config_path = run_config.config_path(model_dir, step) if model_dir else ""
    if not model_dir or not tf.io.gfile.exists(config_path):
        raise EvalError(
            f"--model_dir {model_dir!r}: no operative_config.gin (is it a pre-training run?)"
        )
    if checkpoint and not tf.io.gfile.exists(checkpoint + ".index"):
        raise EvalError(
            f"--checkpoint {checkpoint!r} does not exist (give the prefix, e.g. "
            f"{os.path.join(model_dir, 'checkpoints', 'ckpt-1000')})"
        )
    gin.clear_config()
    try:
        with gin.unlock_config():
            gin.parse_config_file(config_path, skip_unknown=True)
        parse_gin(gin_files, gin_params)
    except LaunchError as e:
        raise EvalError(str(e)) from None
    except (ValueError, tf.errors.OpError) as e:
        raise EvalError(f"cannot read {config_path!r}: {e}") from None


def open_run(
    model_dir: str,
    checkpoint: Optional[str] = None,
    gin_files: Sequence[str] = (),
    gin_params: Sequence[str] = (),
) -> Tuple["trainer.PretrainModel", int]:
    """(PretrainModel, step) of the pre-training run `model_dir` (newest checkpoint unless
    `checkpoint`), for evaluation tools; gin as `parse_run` leaves it."""
    parse_run(model_dir, checkpoint, gin_files, gin_params)
    try:
        return load_pretrained(model_dir, checkpoint, parse_config=False)
    except ConfigError as e:
        raise EvalError(str(e)) from None
    except (ValueError, tf.errors.OpError) as e:
        raise EvalError(f"cannot restore {model_dir!r}: {e}") from None


def load_pretrained(model_dir: str, checkpoint: Optional[str] = None, parse_config=True):
    """(PretrainModel, step) restored from a pre-training run, for evaluation tools.

    Rebuilds the model from the operative config that trained the checkpoint
    (run_config.config_path; unless parse_config is False and gin is already configured) and
    restores `checkpoint` (default: the newest one) without the optimizer. Raises ConfigError
    naming what is missing.
    """
    if parse_config:
        step = checkpoints.checkpoint_step(checkpoint) or None
        config_path = run_config.config_path(model_dir, step)
        if not tf.io.gfile.exists(config_path):
            raise ConfigError(f"{config_path} not found: is {model_dir!r} a pre-training run?")
        with gin.unlock_config():
            gin.parse_config_file(config_path, skip_unknown=True)
    path = checkpoint or checkpoints.newest_checkpoint(os.path.join(model_dir, "checkpoints"))
    if not path:
        raise ConfigError(f"no checkpoint in {os.path.join(model_dir, 'checkpoints')!r}")
    # The frozen word table is in the checkpoint: not read from word_vectors_path (which may be
    # on another machine), and not "random" (no warning: it is restored below).
    model = trainer.PretrainModel(build_vatt(word_vectors_path=None))
    for layer in model.vatt.submodules:
        if getattr(layer, "random_frozen_table", False):
            layer.random_frozen_table = False
    model(dummy_inputs(model.vatt.vatt_config), training=False)  # build, then restore in place
    tf.train.Checkpoint(model=model).restore(
        path
    ).expect_partial().assert_existing_objects_matched()
    return model, checkpoints.checkpoint_step(path)
