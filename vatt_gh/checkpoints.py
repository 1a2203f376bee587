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
import re
import sys
from typing import Callable, List, Optional

import tensorflow as tf
from absl import logging

from vatt_gh import cluster, run_lock
from vatt_gh.errors import PREEMPTED_EXIT_CODE, ConfigError


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


# A checkpoint's files: ckpt-<step>.index and ckpt-<step>.data-<shard>-of-<shards>.
_FILE = re.compile(r"^ckpt-(\d+)\.(index|data-\d+-of-\d+)$")
_ASIDE = re.compile(r"^ckpt-(\d+)\.(index|data-\d+-of-\d+)\.unreadable$")


def _names(ckpt_dir: str) -> List[str]:
    """The file names directly in `ckpt_dir` (none when it does not exist)."""
    if not tf.io.gfile.isdir(ckpt_dir):
        return []
    return [name.rstrip("/") for name in tf.io.gfile.listdir(ckpt_dir)]


def checkpoints_on_disk(ckpt_dir: str) -> List[int]:
    """The steps of the checkpoints in `ckpt_dir` (an index file each), oldest first.

    The directory itself is the record: the `checkpoint` state file is only TensorFlow's
    pointer into it, and a path it names outside the directory is never followed.
    """
    steps = set()
    for name in _names(ckpt_dir):
        match = _FILE.match(name)
        if match and match.group(2) == "index":
            steps.add(int(match.group(1)))
    return sorted(steps)


def _path(ckpt_dir: str, step: int) -> str:
    return os.path.join(ckpt_dir, f"ckpt-{step}")


def _stated_paths(ckpt_dir: str) -> List[str]:
    """The checkpoints TensorFlow's state file names (unchecked; [] without one)."""
    try:
        state = tf.train.get_checkpoint_state(ckpt_dir)
    except (tf.errors.OpError, ValueError):  # a state file that does not parse
        return ["(unparsable state file)"]
    return list(state.all_model_checkpoint_paths) if state else []


def write_state(ckpt_dir: str, steps: List[int]) -> None:
    """Rewrite TensorFlow's state file to name exactly `steps` (oldest first) in `ckpt_dir`.

    The CheckpointManager reads this file to find the latest checkpoint and the old ones it
    deletes; rewritten from the directory's own files, it can name nothing outside it.
    """
    state_file = os.path.join(ckpt_dir, "checkpoint")
    if not steps:
        if tf.io.gfile.exists(state_file):
            tf.io.gfile.remove(state_file)
        return
    paths = [_path(ckpt_dir, step) for step in steps]
    # The times the manager's max_to_keep goes by: it deletes only checkpoints newer than
    # `last_preserved_timestamp`, so every listed one is marked deletable in its turn.
    times = [tf.io.gfile.stat(p + ".index").mtime_nsec / 1e9 for p in paths]
    tf.__internal__.train.update_checkpoint_state(  # what CheckpointManager itself calls
        ckpt_dir,
        paths[-1],
        all_model_checkpoint_paths=list(paths),
        save_relative_paths=True,
        all_model_checkpoint_timestamps=times,
        last_preserved_timestamp=min(times) - 1.0,
    )


def _set_aside(ckpt_dir: str, step: int) -> List[str]:
    """Rename checkpoint `step`'s own files in `ckpt_dir` to *.unreadable; returns them."""
    moved = []
    for name in _names(ckpt_dir):
        match = _FILE.match(name)
        if match and int(match.group(1)) == step:
            path = os.path.join(ckpt_dir, name)
            tf.io.gfile.rename(path, path + ".unreadable", overwrite=True)
            moved.append(path)
    return moved


def remove_leftovers(ckpt_dir: str, keep: int) -> List[str]:
    """Removes what killed runs leave in `ckpt_dir`; returns the removed paths.

    - `ckpt-<step>_temp` folders of a save that was interrupted (never part of a checkpoint);
    - set-aside checkpoints (`*.unreadable`) older than the oldest kept checkpoint, and beyond
      the newest `keep` of them: they would otherwise escape `max_to_keep` for ever.
    Only names of those forms directly in `ckpt_dir` are touched.
    """
    removed = []
    names = _names(ckpt_dir)
    for name in names:
        if re.match(r"^ckpt-\d+_temp", name) and not name.endswith(".unreadable"):
            path = os.path.join(ckpt_dir, name)
            if tf.io.gfile.isdir(path):
                tf.io.gfile.rmtree(path)
            else:
                tf.io.gfile.remove(path)
            removed.append(path)
    kept = checkpoints_on_disk(ckpt_dir)
    aside = {name: int(m.group(1)) for name in names if (m := _ASIDE.match(name))}
    newest = set(sorted(set(aside.values()))[-keep:]) if keep > 0 else set()
    for name, step in aside.items():
        if step not in newest or (kept and step < min(kept)):
            path = os.path.join(ckpt_dir, name)
            tf.io.gfile.remove(path)
            removed.append(path)
    if removed:
        logging.info("removed %d leftover(s) of earlier runs: %s", len(removed), ", ".join(removed))
    return removed


def _first_line(error: Exception) -> str:
    """An OpError's message without TensorFlow's {{function_node ...}} and [Op:...] wrapping."""
    line = (str(error).strip().splitlines() or [type(error).__name__])[0]
    line = re.sub(r"\{\{[^}]*\}\}\s*", "", line)
    return re.sub(r"\s*\[Op:\w+\]", "", line).strip() or type(error).__name__


def _unreadable(ckpt_dir: str, damaged: List[str], reason: str) -> ConfigError:
    return ConfigError(
        f"every checkpoint in {ckpt_dir} is unreadable ({', '.join(damaged)}: {reason}); "
        f"nothing was changed. To start over on purpose, move {ckpt_dir} away or use "
        "another --model_dir"
    )


def set_aside_unreadable(ckpt_dir: str) -> Optional[str]:
    """Walk back from the newest checkpoint to the newest readable one; set broken ones aside.

    Checkpoints are the `ckpt-<step>.index` files in `ckpt_dir` (a missing or damaged
    `checkpoint` state file is rebuilt from them). One that cannot be read in full (truncated
    or corrupt, flipped bytes in any entry: `verify_checkpoint`) is renamed to `*.unreadable`
    (kept, not deleted) with a warning, and the state file names the ones left. Returns the
    checkpoint that will be restored, or None when the directory holds no checkpoint at all.

    Raises ConfigError, changing nothing, when no checkpoint is readable, or when the state
    file names checkpoints none of which exist: such a run must not silently restart at step 0.
    """
    steps = checkpoints_on_disk(ckpt_dir)
    aside = sorted(name for name in _names(ckpt_dir) if _ASIDE.match(name))
    if not steps:
        stated = _stated_paths(ckpt_dir)
        if stated or aside:
            raise _unreadable(
                ckpt_dir,
                [os.path.basename(p) for p in stated] + aside,
                "no ckpt-<step>.index file is left",
            )
        return None
    damaged, reason = [], ""
    for step in reversed(steps):
        try:
            verify_checkpoint(_path(ckpt_dir, step))
            break
        except (tf.errors.OpError, ValueError, IndexError, TypeError) as e:  # truncated/corrupt
            damaged.append(step)
            reason = reason or _first_line(e)
    else:
        raise _unreadable(ckpt_dir, [f"ckpt-{s}" for s in damaged], reason)
    readable = [s for s in steps if s not in damaged]
    for step in damaged:
        _set_aside(ckpt_dir, step)
        logging.warning(
            "checkpoint %s is unreadable (%s): set aside as %s.*.unreadable; falling back to %s",
            _path(ckpt_dir, step),
            reason,
            _path(ckpt_dir, step),
            _path(ckpt_dir, readable[-1]),
        )
    stated = _stated_paths(ckpt_dir)
    if [os.path.normpath(p) for p in stated] != [
        os.path.normpath(_path(ckpt_dir, s)) for s in readable
    ]:
        if not damaged:
            logging.warning(
                "%s: the checkpoint state file named %s; rebuilt from the checkpoints in the "
                "directory (%s)",
                ckpt_dir,
                stated or "nothing",
                ", ".join(f"ckpt-{s}" for s in readable),
            )
        write_state(ckpt_dir, readable)
    return _path(ckpt_dir, readable[-1])


def newest_step(ckpt_dir: str, chief: bool) -> int:
    """The step a run in `ckpt_dir` resumes from (0: a fresh start). The chief first sets
    unreadable checkpoints aside, so a damaged final checkpoint does not count as done."""
    if chief:
        return checkpoint_step(set_aside_unreadable(ckpt_dir))
    steps = checkpoints_on_disk(ckpt_dir)
    return steps[-1] if steps else 0


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
        # The checkpoint is saved; leave at once. A normal interpreter exit with TensorFlow's
        # threads (the pre-emption watcher, tf.data) still running can abort in C++
        # ("terminate called without an active exception", exit 134), which a job runner
        # takes for a failure: os._exit skips those destructors, after flushing our own files.
        before_exit()
        run_lock.release_held()
        logging.flush()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(PREEMPTED_EXIT_CODE)

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
        write_state(worker_dir, checkpoints_on_disk(worker_dir)[-1:])  # names only its own
        saver = tf.train.CheckpointManager(checkpoint, worker_dir, max_to_keep=1)
    return Checkpoints(checkpoint, manager, saver, preemption)


def newest_checkpoint(ckpt_dir: str) -> Optional[str]:
    """The path of the newest checkpoint on disk (by its step), or None."""
    steps = checkpoints_on_disk(ckpt_dir)
    return _path(ckpt_dir, steps[-1]) if steps else None
