"""The one training loop, and the pre-training run around `PretrainModel`.

    pretrain(model_dir, strategy)   # every other setting from gin (gin/base.gin)
    train(run_dir, strategy, model, optimizer, train_fn, data, global_batch_size, LoopConfig(...))

`train` is the loop of pre-training and of fine-tuning (vatt_gh/finetuning.py): exact resume,
SIGTERM pre-emption, unreadable-checkpoint fallback (vatt_gh/checkpoints.py), host-side
summaries (vatt_gh/summaries.py), progress. For pre-training those summaries are: both losses,
learning rate, gamma, mean cosine, fractions projected / dropped, gradient norms, skipped steps,
wall seconds per step since the last summary, and a histogram of the cosines of every group of
every replica.
"""

import dataclasses
import sys
import time
from typing import Callable, Dict, Optional, Tuple

import tensorflow as tf
from absl import logging

import gin
from vatt_gh import checkpoints, cluster, provision, summaries, trainer
from vatt_gh.data import pipeline
from vatt_gh.errors import ConfigError, TrainingError
from vatt_gh.models import build_vatt


@dataclasses.dataclass(frozen=True)
class LoopConfig:
    """How long `train` runs, how often it writes, and what it shows."""

    train_steps: int
    checkpoint_every: int
    summary_every: int
    keep_checkpoints: int
    # Single worker: checkpoint the input iterator (it holds the shuffle buffer, large at paper
    # scale); otherwise, and always with several workers, rebuild the pipeline and skip ahead.
    checkpoint_iterator: bool = True
    max_nonfinite_in_a_row: int = 10  # steps the train function reports as skipped
    progress: Optional[bool] = None  # a progress bar; None: on a terminal; else log lines
    shown: Tuple[str, ...] = ("loss",)  # values of the train function in the bar / log lines


def train(
    run_dir: str,
    strategy: tf.distribute.Strategy,
    model: tf.keras.Model,
    optimizer,
    train_fn: Callable[[object], Dict[str, tf.Tensor]],
    data: pipeline.PretrainConfig,
    global_batch_size: int,
    config: LoopConfig,
) -> Tuple[int, int]:
    """Run `train_fn(iterator)` until optimizer.iterations reaches config.train_steps.

    Exact resume: the model (with its dropout generators), the optimizer (slots and step) and,
    single worker, the input iterator are checkpointed in <run_dir>/checkpoints, so a run killed
    at any moment and restarted ends with the weights of an uninterrupted run. Multi-worker
    (distributed iterators cannot be checkpointed) or `checkpoint_iterator=False`: each worker
    rebuilds its deterministic pipeline and skips the batches already used, slower to restart
    but as exact. SIGTERM: a checkpoint at the next step boundary, then exit code 42.

    `train_fn` returns a dict of scalars (and histograms) written as summaries; a `nonfinite`
    entry counts skipped steps. `model` and `optimizer` are built under `strategy.scope()`.
    Returns (the step it resumed from, the final step).
    """
    chief = cluster.is_chief(strategy)
    state = dict(model=model, optimizer=optimizer, rng=checkpoints.dropout_generators(model))
    checkpoint_iterator = config.checkpoint_iterator and cluster.num_workers(strategy) == 1
    if checkpoint_iterator:
        iterator = iter(distribute(strategy, data, global_batch_size, skip=0))
        state["iterator"] = iterator
    ckpts = checkpoints.restore_or_start(state, run_dir, strategy, config.keep_checkpoints)
    step = int(optimizer.iterations.numpy())
    if not checkpoint_iterator:
        iterator = iter(distribute(strategy, data, global_batch_size, skip=step))

    writer = summaries.make_writer(run_dir, strategy)
    progress = sys.stdout.isatty() if config.progress is None else config.progress
    bar = (
        tf.keras.utils.Progbar(config.train_steps, stateful_metrics=list(config.shown))
        if progress and chief
        else None
    )
    start, t0, nonfinite_run = step, time.time(), 0
    window = (step, t0)  # (step, time) of the last summary: wall time per step since then
    while step < config.train_steps:
        logs = train_fn(iterator)
        step += 1
        nonfinite_run = nonfinite_run + 1 if float(logs.get("nonfinite", 0)) else 0
        stop = nonfinite_run >= config.max_nonfinite_in_a_row
        if step % config.summary_every == 0 or step == config.train_steps or stop:
            values = {k: v.numpy() for k, v in logs.items()}
            now = time.time()
            values["seconds_per_step"] = (now - window[1]) / (step - window[0])
            window = (step, now)
            summaries.write_summaries(writer, step, values)
            model.reset_metrics()
            if bar is None and chief:
                shown = "  ".join(f"{k} {float(values[k]):.4g}" for k in config.shown)
                rate = (step - start) / max(now - t0, 1e-9)
                logging.info(
                    "step %d/%d  %s  (%.1f steps/s)", step, config.train_steps, shown, rate
                )
        if stop:
            writer.close()
            raise TrainingError(
                f"{nonfinite_run} non-finite steps in a row (steps {step - nonfinite_run + 1}"
                f"-{step}); each was skipped, so the weights are those after step "
                f"{step - nonfinite_run}. Check the data and the learning rate, then resume."
            )
        if bar is not None:
            bar.update(step, [(k, float(logs[k])) for k in config.shown])
        if step % config.checkpoint_every == 0 or step == config.train_steps:
            ckpts.saver.save(checkpoint_number=step)
        ckpts.preemption.save_checkpoint_if_preempted(checkpoint_number=step)
    writer.close()
    return start, step


def distribute(strategy, data: pipeline.PretrainConfig, global_batch_size: int, skip: int):
    """The distributed training dataset; `skip` per-replica batches already trained on.

    The pipeline holds a py_function (shard checks) whose state needs no saving: IGNORE lets
    the iterator be checkpointed.
    """
    input_fn = pipeline.make_pretrain_input_fn(data, global_batch_size)
    options = tf.data.Options()
    options.experimental_external_state_policy = tf.data.experimental.ExternalStatePolicy.IGNORE

    def skipped_input_fn(context):
        local_replicas = context.num_replicas_in_sync // context.num_input_pipelines
        return input_fn(context).skip(skip * local_replicas).with_options(options)

    # Multi-worker input would otherwise drop the static batch size (to allow workers with
    # unequal data); every worker's pipeline repeats forever, and harmonization needs it.
    if hasattr(strategy.extended, "experimental_enable_get_next_as_optional"):
        strategy.extended.experimental_enable_get_next_as_optional = False
    return strategy.distribute_datasets_from_function(skipped_input_fn)


def seed_everything(seed: int):
    """Every random stream from `seed`, dropout from checkpointable generators (exact resume).

    Call before the model is built: Keras makes each Dropout layer's generator as it builds.
    """
    tf.keras.backend.experimental.enable_tf_random_generator()
    tf.keras.utils.set_random_seed(seed)


def _dummy_batch(element_spec):
    """Zeros with the per-replica shapes of a batch: builds every variable before training."""
    return {k: tf.zeros(s.shape, s.dtype) for k, s in element_spec.items()}


PRETRAIN_SHOWN = ("loss_va", "loss_vt", "cosine", "dropped", "gamma", "learning_rate")


@gin.configurable(denylist=["model_dir", "strategy"])
def pretrain(
    model_dir: str,
    strategy: Optional[tf.distribute.Strategy] = None,
    *,
    train_steps: int = 500_000,
    global_batch_size: int = 2048,
    checkpoint_every: int = 5000,
    summary_every: int = 100,
    keep_checkpoints: int = 5,
    synthetic_data: Optional[provision.SyntheticData] = None,
    xla_math: bool = False,
    progress: Optional[bool] = None,
    seed: int = 0,
    max_nonfinite_in_a_row: int = 10,
    checkpoint_iterator: bool = True,
):
    """Pre-train VATT with the gin-configured harmonization; resumes from model_dir (see
    `train` for exact resume and pre-emption). Returns the model."""
    strategy = strategy or tf.distribute.get_strategy()
    chief = cluster.is_chief(strategy)
    try:
        harmonization = trainer.Harmonization()  # gin-configured; validates method/granularity
    except ValueError as e:
        raise ConfigError(str(e).splitlines()[0]) from None
    provision.check_writable(model_dir)
    multi_worker = cluster.num_workers(strategy) > 1
    data = provision.data_config(model_dir, synthetic_data, chief, multi_worker)
    if global_batch_size % strategy.num_replicas_in_sync:
        raise ConfigError(
            f"global_batch_size {global_batch_size} does not split over "
            f"{strategy.num_replicas_in_sync} replicas"
        )

    seed_everything(seed)
    with strategy.scope():
        model = trainer.PretrainModel(build_vatt(), harmonization, xla_math=xla_math)
        local = pipeline.pretrain_dataset(
            data, global_batch_size // strategy.num_replicas_in_sync
        ).element_spec
        strategy.run(lambda: model(_dummy_batch(local), training=False))
        optimizer = trainer.make_optimizer()
        model.compile(optimizer=optimizer)
    if chief:
        summaries.write_operative_config(model_dir)

    config = LoopConfig(
        train_steps=train_steps,
        checkpoint_every=checkpoint_every,
        summary_every=summary_every,
        keep_checkpoints=keep_checkpoints,
        checkpoint_iterator=checkpoint_iterator,
        max_nonfinite_in_a_row=max_nonfinite_in_a_row,
        progress=progress,
        shown=PRETRAIN_SHOWN,
    )
    train_fn = model.make_train_function()
    train(model_dir, strategy, model, optimizer, train_fn, data, global_batch_size, config)
    return model
