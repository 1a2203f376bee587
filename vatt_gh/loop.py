"""The pre-training run around `PretrainModel`: the model, its data and the training loop.

    pretrain(model_dir, strategy)   # every other setting from gin (gin/base.gin)

Summaries (vatt_gh/summaries.py) are written on the host from values the step returns: both
losses, learning rate, gamma, mean cosine, fractions projected / dropped, gradient norms,
skipped steps, wall seconds per step since the last summary, and a histogram of the cosines of
every group of every replica. Checkpoints: vatt_gh/checkpoints.py.
"""

import sys
import time
from typing import Optional

import tensorflow as tf
from absl import logging

import gin
from vatt_gh import checkpoints, cluster, provision, summaries, trainer
from vatt_gh.data import pipeline
from vatt_gh.errors import ConfigError, TrainingError
from vatt_gh.models import build_vatt


def _dummy_batch(element_spec):
    """Zeros with the per-replica shapes of a batch: builds every variable before training."""
    return {k: tf.zeros(s.shape, s.dtype) for k, s in element_spec.items()}


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
    """Pre-train VATT with the gin-configured harmonization; resumes from model_dir.

    Exact resume: weights, optimizer slots, the step, every random generator and (single
    worker) the input iterator are checkpointed, so a run killed at any moment and restarted
    ends with the weights of an uninterrupted run. Multi-worker (distributed iterators cannot
    be checkpointed) or `checkpoint_iterator=False` (an iterator checkpoint holds the shuffle
    buffer, large at paper scale): each worker rebuilds its deterministic pipeline and skips
    the batches already used, slower to restart but as exact. SIGTERM: a checkpoint at the
    next step boundary, then exit code 42.
    """
    strategy = strategy or tf.distribute.get_strategy()
    chief = cluster.is_chief(strategy)
    multi_worker = cluster.num_workers(strategy) > 1
    try:
        harmonization = trainer.Harmonization()  # gin-configured; validates method/granularity
    except ValueError as e:
        raise ConfigError(str(e).splitlines()[0]) from None
    provision.check_writable(model_dir)
    config = provision.data_config(model_dir, synthetic_data, chief, multi_worker)
    if global_batch_size % strategy.num_replicas_in_sync:
        raise ConfigError(
            f"global_batch_size {global_batch_size} does not split over "
            f"{strategy.num_replicas_in_sync} replicas"
        )

    # ----------------------------------------------------------- model, every stream seeded
    tf.keras.backend.experimental.enable_tf_random_generator()  # checkpointable dropout
    tf.keras.utils.set_random_seed(seed)
    with strategy.scope():
        model = trainer.PretrainModel(build_vatt(), harmonization, xla_math=xla_math)
        local = pipeline.pretrain_dataset(
            config, global_batch_size // strategy.num_replicas_in_sync
        ).element_spec
        strategy.run(lambda: model(_dummy_batch(local), training=False))
        optimizer = trainer.make_optimizer()
        model.compile(optimizer=optimizer)

    # ------------------------------------------------------------- checkpoint and restore
    state = dict(model=model, optimizer=optimizer, rng=checkpoints.dropout_generators(model))
    checkpoint_iterator = checkpoint_iterator and not multi_worker
    if checkpoint_iterator:
        iterator = iter(_distribute(strategy, config, global_batch_size, skip=0))
        state["iterator"] = iterator
    ckpts = checkpoints.restore_or_start(state, model_dir, strategy, keep_checkpoints)
    step = int(optimizer.iterations.numpy())
    if not checkpoint_iterator:
        iterator = iter(_distribute(strategy, config, global_batch_size, skip=step))

    # ------------------------------------------------------------------- summaries, progress
    if chief:
        summaries.write_operative_config(model_dir)
    writer = summaries.make_writer(model_dir, strategy)
    progress = sys.stdout.isatty() if progress is None else progress
    bar = (
        tf.keras.utils.Progbar(
            train_steps, stateful_metrics=["loss_va", "loss_vt", "cosine", "dropped", "gamma"]
        )
        if progress and chief
        else None
    )

    # ------------------------------------------------------------------------------ train
    train_fn = model.make_train_function()
    start, t0, nonfinite_run = step, time.time(), 0
    window = (step, t0)  # (step, time) of the last summary: wall time per step since then
    while step < train_steps:
        logs = train_fn(iterator)
        step += 1
        nonfinite_run = nonfinite_run + 1 if float(logs["nonfinite"]) else 0
        stop = nonfinite_run >= max_nonfinite_in_a_row
        if step % summary_every == 0 or step == train_steps or stop:
            values = {k: v.numpy() for k, v in logs.items()}
            now = time.time()
            values["seconds_per_step"] = (now - window[1]) / (step - window[0])
            window = (step, now)
            summaries.write_summaries(writer, step, values)
            model.reset_metrics()
            if bar is None and chief:
                rate = (step - start) / max(time.time() - t0, 1e-9)
                logging.info(
                    "step %d/%d  loss_va %.4f  loss_vt %.4f  cos %.3f  dropped %.2f  "
                    "gamma %.3f  lr %.2e  (%.1f steps/s)",
                    step,
                    train_steps,
                    values["loss_va"],
                    values["loss_vt"],
                    values["cosine"],
                    values["dropped"],
                    values["gamma"],
                    values["learning_rate"],
                    rate,
                )
        if stop:
            writer.close()
            raise TrainingError(
                f"{nonfinite_run} non-finite steps in a row (steps {step - nonfinite_run + 1}"
                f"-{step}); each was skipped, so the weights are those after step "
                f"{step - nonfinite_run}. Check the data and the learning rate, then resume."
            )
        if bar is not None:
            bar.update(
                step,
                [(k, float(logs[k])) for k in ("loss_va", "loss_vt", "cosine", "dropped", "gamma")],
            )
        if step % checkpoint_every == 0 or step == train_steps:
            ckpts.saver.save(checkpoint_number=step)
        ckpts.preemption.save_checkpoint_if_preempted(checkpoint_number=step)
    writer.close()
    return model


def _distribute(strategy, config, global_batch_size, skip):
    """The distributed pre-training dataset; `skip` per-replica batches already trained on.

    The pipeline holds a py_function (shard checks) whose state needs no saving: IGNORE lets
    the iterator be checkpointed.
    """
    input_fn = pipeline.make_pretrain_input_fn(config, global_batch_size)
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
