"""Opening a pre-training run for evaluation: its gin, then the user's, then its checkpoint.

    model, step = open_run(model_dir, checkpoint=None, gin_files=(), gin_params=())

The run's `operative_config.gin` is parsed first and the user's files / bindings after it, so a
`--gin_param=EvalConfig.num_windows=2` or a model override applies on top of the run. Every
failure is an `EvalError` with one line naming the flag or file at fault.
"""

import os
from typing import Optional, Sequence, Tuple

import tensorflow as tf

import gin
from vatt_gh import launch, loop
from vatt_gh.data import pipeline


class EvalError(ValueError):
    """A bad flag, file or configuration, found before (or while) evaluating."""


def open_run(
    model_dir: str,
    checkpoint: Optional[str] = None,
    gin_files: Sequence[str] = (),
    gin_params: Sequence[str] = (),
) -> Tuple["loop.trainer.PretrainModel", int]:
    """(PretrainModel, step) of `model_dir` (newest checkpoint unless `checkpoint`)."""
    config_path = os.path.join(model_dir or "", "operative_config.gin")
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
        launch.parse_gin(gin_files, gin_params)
        return loop.load_pretrained(model_dir, checkpoint, parse_config=False)
    except (launch.LaunchError, loop.ConfigError) as e:
        raise EvalError(str(e)) from None
    except (ValueError, tf.errors.OpError) as e:
        raise EvalError(f"cannot restore {model_dir!r}: {e}") from None


def check_pattern(flag: str, pattern: str) -> str:
    """The pattern, or EvalError naming the flag when it matches no file."""
    try:
        pipeline.list_files(pattern)
    except (ValueError, FileNotFoundError, tf.errors.OpError) as e:
        raise EvalError(f"--{flag}: {e}") from None
    return pattern
