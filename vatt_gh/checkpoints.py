"""A run's checkpoints: what goes in, where each task writes, restore, repair, pre-emption.

    state = dict(model=model, optimizer=optimizer, rng=dropout_generators(model))
    ckpts = restore_or_start(state, model_dir, strategy, keep=5)   # restores the newest
    ckpts.saver.save(checkpoint_number=step)                       # every N steps
    ckpts.preemption.save_checkpoint_if_preempted(checkpoint_number=step)   # every step

    model, step = load_pretrained(model_dir)      # a pre-training run, for evaluation tools

An unreadable newest checkpoint is set aside (renamed, never deleted) and the previous one
restored; SIGTERM saves at the next step boundary and exits with PREEMPTED_EXIT_CODE.
"""

import dataclasses
import os
import sys
from typing import Optional

import tensorflow as tf
from absl import logging

import gin
from vatt_gh import cluster, trainer
from vatt_gh.errors import ConfigError
from vatt_gh.models import build_vatt, dummy_inputs

PREEMPTED_EXIT_CODE = 42  # SIGTERM: checkpoint saved at the step boundary; restart to resume


def dropout_generators(model) -> list:
    """Keras' dropout generators, which Keras leaves out of checkpoints (SavedModel only).

    With `enable_tf_random_generator()` each Dropout layer draws from a tf.random.Generator;
    checkpointing them (with the model's DropToken generator) makes a resumed run exact.
    """
    found = []
    for layer in model.submodules:
        generator = getattr(getattr(layer, "_random_generator", None), "_generator", None)
        if isinstance(generator, tf.random.Generator):
            found.append(generator)
    return found


def set_aside_unreadable(ckpt_dir: str) -> Optional[str]:
    """Walk back from the newest checkpoint to the newest readable one; set broken ones aside.

    A checkpoint whose index or data cannot be read in full (a truncated or corrupt file) is
    renamed to `*.unreadable` (kept, not deleted) with a warning, and the checkpoint state
    points at the previous one. Returns the checkpoint that will be restored, or None.
    """
    state = tf.train.get_checkpoint_state(ckpt_dir)
    paths = list(state.all_model_checkpoint_paths) if state else []
    while paths:
        try:
            reader = tf.train.load_checkpoint(paths[-1])
            for name, dtype in reader.get_variable_to_dtype_map().items():
                if dtype.is_numpy_compatible:  # not the iterator's variant state
                    reader.get_tensor(name)
            return paths[-1]
        except (tf.errors.OpError, ValueError, IndexError, TypeError) as e:  # truncated/corrupt
            bad = paths.pop()
            logging.warning(
                "checkpoint %s is unreadable (%s): set aside as %s.*.unreadable; "
                "falling back to %s",
                bad,
                str(e).splitlines()[0],
                bad,
                paths[-1] if paths else "a fresh start",
            )
            for path in tf.io.gfile.glob(bad + ".*"):
                tf.io.gfile.rename(path, path + ".unreadable", overwrite=True)
            tf.compat.v1.train.update_checkpoint_state(
                ckpt_dir, paths[-1] if paths else "", all_model_checkpoint_paths=paths
            )
    return None


@dataclasses.dataclass(frozen=True)
class Checkpoints:
    """The run's checkpoint and the managers around it."""

    checkpoint: tf.train.Checkpoint
    manager: tf.train.CheckpointManager  # <run_dir>/checkpoints, the chief's: restored from
    saver: tf.train.CheckpointManager  # where this task saves (non-chief: a private copy)
    preemption: tf.distribute.experimental.PreemptionCheckpointHandler


def restore_or_start(state: dict, run_dir: str, strategy, keep: int) -> Checkpoints:
    """Checkpoints of `state` (name -> trackable) in <run_dir>/checkpoints, newest restored.

    Every worker saves (saving runs collectives); only the chief writes <run_dir>/checkpoints,
    the others <run_dir>/workers/<task>. The pre-emption handler restores the newest readable
    checkpoint now, and on SIGTERM saves at the next step boundary and exits (code 42).
    """
    chief = cluster.is_chief(strategy)
    ckpt_dir = os.path.join(run_dir, "checkpoints")
    checkpoint = tf.train.Checkpoint(**state)
    if chief:
        set_aside_unreadable(ckpt_dir)
    manager = tf.train.CheckpointManager(checkpoint, ckpt_dir, max_to_keep=keep)
    if manager.latest_checkpoint:
        logging.info("resumed from %s", manager.latest_checkpoint)
    preemption = tf.distribute.experimental.PreemptionCheckpointHandler(
        strategy.cluster_resolver if cluster.num_workers(strategy) > 1 else None,
        manager,
        termination_config=tf.distribute.experimental.TerminationConfig(
            exit_fn=lambda: sys.exit(PREEMPTED_EXIT_CODE)
        ),
    )
    saver = (
        manager
        if chief
        else tf.train.CheckpointManager(
            checkpoint, os.path.join(run_dir, "workers", cluster.task_name(strategy)), max_to_keep=1
        )
    )
    return Checkpoints(checkpoint, manager, saver, preemption)


def load_pretrained(model_dir: str, checkpoint: Optional[str] = None, parse_config=True):
    """(PretrainModel, step) restored from a pre-training run, for evaluation tools.

    Rebuilds the model from `model_dir/operative_config.gin` (unless parse_config is False and
    gin is already configured) and restores `checkpoint` (default: the newest one) without the
    optimizer. Raises ConfigError naming what is missing.
    """
    if parse_config:
        config_path = os.path.join(model_dir, "operative_config.gin")
        if not tf.io.gfile.exists(config_path):
            raise ConfigError(f"{config_path} not found: is {model_dir!r} a pre-training run?")
        with gin.unlock_config():
            gin.parse_config_file(config_path, skip_unknown=True)
    path = checkpoint or tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
    if not path:
        raise ConfigError(f"no checkpoint in {os.path.join(model_dir, 'checkpoints')!r}")
    model = trainer.PretrainModel(build_vatt())
    model(dummy_inputs(model.vatt.vatt_config), training=False)  # build, then restore in place
    tf.train.Checkpoint(model=model).restore(
        path
    ).expect_partial().assert_existing_objects_matched()
    step = int(path.rsplit("-", 1)[-1]) if path.rsplit("-", 1)[-1].isdigit() else 0
    return model, step
