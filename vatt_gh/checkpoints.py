"""A run's checkpoints: what goes in, where each process writes, verify, repair, restore, SIGTERM.

    done = newest_step(ckpt_dir, chief)          # unreadable checkpoints set aside first
    state = dict(model=model, optimizer=optimizer, rng=dropout_generators(model))
    ckpts = restore_or_start(state, run_dir, strategy, keep=5, before_exit=save_position)
    ckpts.saver.save(checkpoint_number=step)                                  # every N steps
    ckpts.preemption.save_checkpoint_if_preempted(checkpoint_number=step)     # every step

Before a restore the newest checkpoint is read in full (`verify_checkpoint`); one that fails is
set aside (renamed to `*.unreadable`, never deleted) and the previous one restored. Leftovers of
killed runs (`*_temp` folders, old set-aside checkpoints) are removed on start. SIGTERM saves at
the next step boundary and exits with PREEMPTED_EXIT_CODE.
"""

import dataclasses
import os
import sys
from typing import Callable, List, Optional

import tensorflow as tf
from absl import logging

from vatt_gh import cluster
from vatt_gh.errors import PREEMPTED_EXIT_CODE


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


def verify_checkpoint(path: str) -> None:
    """Reads every entry of checkpoint `path` as a restore would, each one's checksum checked.

    Numeric tensors, strings and variant tensors (a tf.data iterator's state) alike, whatever
    the checkpoint holds: flipped bytes anywhere raise here (an OpError) instead of in the
    restore, so the checkpoint can be set aside. One entry at a time, to bound the memory.
    """
    reader = tf.train.load_checkpoint(path)
    for name, dtype in sorted(reader.get_variable_to_dtype_map().items()):
        tf.raw_ops.RestoreV2(
            prefix=path, tensor_names=[name], shape_and_slices=[""], dtypes=[dtype]
        )


def checkpoint_step(path: Optional[str]) -> int:
    """The step of a checkpoint written as <dir>/ckpt-<step> (0 for None)."""
    suffix = (path or "").rsplit("-", 1)[-1]
    return int(suffix) if suffix.isdigit() else 0


def _step_of(path: str) -> int:
    """The checkpoint number of `.../ckpt-12.index.unreadable` (-1 when there is none)."""
    number = os.path.basename(path).split(".")[0].rsplit("-", 1)[-1]
    return int(number) if number.isdigit() else -1


def remove_leftovers(ckpt_dir: str, keep: int) -> List[str]:
    """Removes what killed runs leave in `ckpt_dir`; returns the removed paths.

    - `<prefix>_temp` folders of a save that was interrupted (never part of a checkpoint);
    - set-aside checkpoints (`*.unreadable`) older than the oldest kept checkpoint, and beyond
      the newest `keep` of them: they would otherwise escape `max_to_keep` for ever.
    """
    removed = []
    for path in tf.io.gfile.glob(os.path.join(ckpt_dir, "*_temp*")):
        if path.endswith(".unreadable"):
            continue
        if tf.io.gfile.isdir(path):
            tf.io.gfile.rmtree(path)
        else:
            tf.io.gfile.remove(path)
        removed.append(path)
    state = tf.train.get_checkpoint_state(ckpt_dir)
    kept = [_step_of(p) for p in (state.all_model_checkpoint_paths if state else [])]
    aside = sorted({_step_of(p) for p in tf.io.gfile.glob(os.path.join(ckpt_dir, "*.unreadable"))})
    newest = set(aside[-keep:]) if keep > 0 else set()
    for path in tf.io.gfile.glob(os.path.join(ckpt_dir, "*.unreadable")):
        step = _step_of(path)
        if step not in newest or (kept and step < min(kept)):
            tf.io.gfile.remove(path)
            removed.append(path)
    if removed:
        logging.info("removed %d leftover(s) of earlier runs: %s", len(removed), ", ".join(removed))
    return removed


def set_aside_unreadable(ckpt_dir: str) -> Optional[str]:
    """Walk back from the newest checkpoint to the newest readable one; set broken ones aside.

    A checkpoint whose index or data cannot be read in full (a truncated or corrupt file,
    flipped bytes in any entry: `verify_checkpoint`) is renamed to `*.unreadable` (kept, not
    deleted) with a warning, and the checkpoint state points at the previous one. Returns the
    checkpoint that will be restored, or None.
    """
    state = tf.train.get_checkpoint_state(ckpt_dir)
    paths = list(state.all_model_checkpoint_paths) if state else []
    while paths:
        try:
            verify_checkpoint(paths[-1])
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


def newest_step(ckpt_dir: str, chief: bool) -> int:
    """The step a run in `ckpt_dir` resumes from (0: a fresh start). The chief first sets
    unreadable checkpoints aside, so a damaged final checkpoint does not count as done."""
    if chief:
        set_aside_unreadable(ckpt_dir)
    return checkpoint_step(tf.train.latest_checkpoint(ckpt_dir))


@dataclasses.dataclass(frozen=True)
class Checkpoints:
    """The run's checkpoint and the managers around it."""

    checkpoint: tf.train.Checkpoint
    manager: tf.train.CheckpointManager  # <run_dir>/checkpoints, the chief's: restored from
    saver: tf.train.CheckpointManager  # where this process saves (non-chief: a private copy)
    preemption: tf.distribute.experimental.PreemptionCheckpointHandler


def restore_or_start(
    state: dict,
    run_dir: str,
    strategy,
    keep: int,
    before_exit: Callable[[], None] = lambda: None,
    verified: bool = False,
) -> Checkpoints:
    """Checkpoints of `state` (name -> trackable) in <run_dir>/checkpoints, newest restored.

    The chief sets unreadable checkpoints aside (unless `verified`: the caller ran
    `newest_step` already) and removes leftovers of killed runs. Every worker saves (saving
    runs collectives); only the chief writes <run_dir>/checkpoints, the others a private copy
    in <run_dir>/workers/<task>. The pre-emption handler restores the newest checkpoint now,
    and on SIGTERM saves at the next step boundary, calls `before_exit` and exits (code 42).
    """
    chief = cluster.is_chief(strategy)
    ckpt_dir = os.path.join(run_dir, "checkpoints")
    checkpoint = tf.train.Checkpoint(**state)
    if chief and not verified:
        set_aside_unreadable(ckpt_dir)
    if chief:
        remove_leftovers(ckpt_dir, keep)
    manager = tf.train.CheckpointManager(checkpoint, ckpt_dir, max_to_keep=keep)
    if manager.latest_checkpoint:
        logging.info("resumed from %s", manager.latest_checkpoint)

    def preempted_exit():
        before_exit()
        sys.exit(PREEMPTED_EXIT_CODE)

    # Restores the newest checkpoint; on SIGTERM saves at the next step boundary and exits.
    preemption = tf.distribute.experimental.PreemptionCheckpointHandler(
        strategy.cluster_resolver if cluster.num_workers(strategy) > 1 else None,
        manager,
        termination_config=tf.distribute.experimental.TerminationConfig(exit_fn=preempted_exit),
    )
    saver = manager
    if not chief:  # a private copy
        worker_dir = os.path.join(run_dir, "workers", cluster.task_name(strategy))
        remove_leftovers(worker_dir, 1)
        saver = tf.train.CheckpointManager(checkpoint, worker_dir, max_to_keep=1)
    return Checkpoints(checkpoint, manager, saver, preemption)
