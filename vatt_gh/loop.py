"""The one training loop, of pre-training (vatt_gh/pretraining.py) and fine-tuning.

    train(run_dir, strategy, model, optimizer, train_fn, data, global_batch_size, LoopConfig(...))

`train` is the loop of pre-training and of fine-tuning (vatt_gh/finetuning.py): exact resume
from the checkpoint and the input position saved with it (vatt_gh/input_state.py), SIGTERM
pre-emption, the unreadable-checkpoint fallback (vatt_gh/checkpoints.py), host-side summaries
(vatt_gh/summaries.py), rejected-record totals, the non-finite stop and progress lines (the
run's own `LoopConfig.line`).
"""

import contextlib
import dataclasses
import errno
import os
import shutil
import time
from typing import Callable, Dict, Optional

import numpy as np
import tensorflow as tf
from absl import logging

from vatt_gh import checkpoints, cluster, console, input_state, run_lock, summaries
from vatt_gh.data.configs import PretrainConfig
from vatt_gh.data.pretrain_input import make_pretrain_input_fn
from vatt_gh.data.rejects import DataErrors
from vatt_gh.errors import TrainingError


@dataclasses.dataclass(frozen=True)
class LoopConfig:
    """How long `train` runs, how often it writes, and what it shows."""

    train_steps: int
    checkpoint_every: int
    summary_every: int
    keep_checkpoints: int
    # The terminal line of a summary: (step, train_steps, the summary's values) -> text.
    line: Callable[[int, int, dict], str]
    max_nonfinite_in_a_row: int = 10  # steps the train function reports as `nonfinite`
    progress: Optional[bool] = None  # False: no lines on the terminal (the chief's by default)


@dataclasses.dataclass(frozen=True)
class Trained:
    """What `train` did: the step it resumed from, the final step, the values of the last
    summary (empty when no step ran) and the wall time of the loop."""

    start: int
    step: int
    values: Dict[str, np.ndarray]
    seconds: float


def train(  # noqa: C901  (restore, iterate, summaries, checkpoints, stops: read in order)
    run_dir: str,
    strategy: tf.distribute.Strategy,
    model: tf.keras.Model,
    optimizer,
    train_fn: Callable[[object], Dict[str, tf.Tensor]],
    data: PretrainConfig,
    global_batch_size: int,
    config: LoopConfig,
    verified: bool = False,
) -> Trained:
    """Run `train_fn(iterator)` until optimizer.iterations reaches config.train_steps.

    Exact resume: the model (with its dropout generators), the optimizer (slots and step) are
    checkpointed in <run_dir>/checkpoints, and each process saves its input pipelines'
    position (a few numbers per source) with every checkpoint; the pipelines rebuild
    themselves from it, so a run killed at any moment and restarted ends with the weights of
    an uninterrupted run, on one worker or several. SIGTERM: a checkpoint at the next step
    boundary, then exit code 42. Before restoring, the chief sets unreadable checkpoints aside
    (unless `verified`: the caller ran `checkpoints.newest_step`).

    `train_fn` returns a dict of scalars (and `summaries.HISTOGRAMS`, gathered over the steps
    between summaries) written as summaries; a `nonfinite` entry marks a skipped step, and
    `max_nonfinite_in_a_row` of them stop the run with a TrainingError. A rejected record that
    stops the input (on_error='raise', or nothing valid) is a one-line TrainingError too.
    `model` and `optimizer` are built under `strategy.scope()`.
    """
    chief = cluster.is_chief(strategy)
    say = console.say if chief and config.progress is not False else lambda message: None
    ckpt_dir = os.path.join(run_dir, "checkpoints")
    data_errors = DataErrors(data.on_error)  # rejected records: counts, failure
    inputs = input_state.InputState(
        data,
        global_batch_size,
        ckpt_dir,
        cluster.task_name(strategy),
        keep=config.keep_checkpoints,
    )
    writer = summaries.make_writer(run_dir, strategy)

    def before_exit():  # SIGTERM: the input position of the step just checkpointed, then exit
        inputs.save(int(optimizer.iterations.numpy()))
        writer.flush()

    state = dict(model=model, optimizer=optimizer, rng=checkpoints.dropout_generators(model))
    ckpts = checkpoints.restore_or_start(
        state, run_dir, strategy, config.keep_checkpoints, before_exit, verified=verified
    )
    step = int(optimizer.iterations.numpy())
    inputs.restore(step)
    iterator = iter(distribute(strategy, data, global_batch_size, inputs, data_errors))

    if step < config.train_steps:
        say("tracing the training step (the first step takes longest) ...")
    start, t0, nonfinite_run, values = step, time.time(), 0, {}
    window = (step, t0)  # (step, time) of the last summary: wall time per step since then
    gathered = {}  # histogram name -> its values of every step since the last summary
    while step < config.train_steps:
        try:
            logs = train_fn(iterator)
        except tf.errors.OpError:
            if data_errors.failure:  # a bad record under 'raise', or nothing valid: one line
                writer.close()
                raise TrainingError(data_errors.failure) from None
            raise
        for name in summaries.HISTOGRAMS:
            if name in logs:
                gathered.setdefault(name, []).append(logs[name])
        step += 1
        nonfinite_run = nonfinite_run + 1 if float(logs.get("nonfinite", 0)) else 0
        stop = nonfinite_run >= config.max_nonfinite_in_a_row
        if step % config.summary_every == 0 or step == config.train_steps or stop:
            values = {k: v.numpy() for k, v in logs.items()}
            for name, steps in gathered.items():
                values[name] = np.concatenate([v.numpy() for v in steps])
            gathered = {}
            now = time.time()
            values["seconds_per_step"] = (now - window[1]) / (step - window[0])
            window = (step, now)
            summaries.write_summaries(writer, step, values)
            skipped = data_errors.totals()
            summaries.write_data_errors(writer, step, skipped)
            if skipped and chief:
                logging.info("input: %s", data_errors.summary())
            model.reset_metrics()
            say(config.line(step, config.train_steps, values))
        if stop:
            writer.close()
            raise TrainingError(
                f"{nonfinite_run} non-finite steps in a row (steps {step - nonfinite_run + 1}"
                f"-{step}); each was skipped, so the weights are those after step "
                f"{step - nonfinite_run}. Check the data and the learning rate, then resume."
            )
        if step % config.checkpoint_every == 0 or step == config.train_steps:
            with _disk_full_as_error(ckpts.saver.directory, step, writer):
                inputs.save(step)  # first: a checkpoint never lacks its input position
                ckpts.saver.save(checkpoint_number=step)
        with _disk_full_as_error(ckpts.saver.directory, step, writer):
            ckpts.preemption.save_checkpoint_if_preempted(checkpoint_number=step)
        run_lock.refresh()
    writer.close()
    logging.info("input: %s", data_errors.summary())
    return Trained(start, step, values, time.time() - t0)


@contextlib.contextmanager
def _disk_full_as_error(ckpt_dir: str, step: int, writer):
    """A full disk while saving checkpoint `step`: one line naming the folder, the space left
    and the checkpoint a restart resumes from, instead of TensorFlow's traceback."""
    try:
        yield
    except (tf.errors.ResourceExhaustedError, OSError) as e:
        if isinstance(e, OSError) and e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        writer.close()
        free = ""
        if "://" not in ckpt_dir:
            free = f" ({shutil.disk_usage(ckpt_dir).free / 2**20:.0f} MiB free)"
        steps = checkpoints.checkpoints_on_disk(ckpt_dir)
        last = f"ckpt-{steps[-1]}" if steps else "none"
        raise TrainingError(
            f"no space left to save checkpoint {step} in {ckpt_dir}{free}; the last good "
            f"checkpoint is {last}: free some space (or set a smaller keep_checkpoints) and "
            "run the same command again to resume"
        ) from None


def distribute(strategy, config, global_batch_size, inputs: input_state.InputState, errors):
    """The distributed training dataset, each input pipeline from its saved position."""
    input_fn = make_pretrain_input_fn(
        config, global_batch_size, errors, position_fn=inputs.position, counts=inputs.counts
    )

    # Multi-worker input would otherwise drop the static batch size (to allow workers with
    # unequal data); every worker's pipeline repeats forever, and harmonization needs it.
    if hasattr(strategy.extended, "experimental_enable_get_next_as_optional"):
        strategy.extended.experimental_enable_get_next_as_optional = False
    return strategy.distribute_datasets_from_function(input_fn)


def seed_everything(seed: int):
    """Every random stream from `seed`, dropout from checkpointable generators (exact resume).

    Call before the model is built: Keras makes each Dropout layer's generator as it builds.
    """
    tf.keras.backend.experimental.enable_tf_random_generator()
    tf.keras.utils.set_random_seed(seed)
