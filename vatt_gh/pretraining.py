"""Pre-training: `pretrain`, the gin-configured run around `PretrainModel` on `loop.train`.

    pretrain(model_dir, strategy)   # every other setting from gin (gin/base.gin)

Beside `vatt_gh.finetuning` (the other run on `loop.train`). Pre-training's summaries are
written on the host from values the step returns (so they work on TPU): both losses, learning
rate, gamma, mean cosine, fractions projected / dropped, gradient norms, skipped steps, wall
seconds per step since the last summary, and a histogram of the cosines of every group of every
replica and every step since the previous summary.
"""

import dataclasses
import os
from typing import Optional

import tensorflow as tf

import gin
from vatt_gh import checkpoints, cluster, console, loop, provision, run_config, run_lock, trainer
from vatt_gh.data import word_vectors
from vatt_gh.data.configs import PretrainConfig
from vatt_gh.data.pretrain_input import pretrain_dataset
from vatt_gh.errors import ConfigError
from vatt_gh.models import build_vatt


def pretrain_line(step: int, train_steps: int, values: dict) -> str:
    """Pre-training's line per summary: the step, both losses, cosine, dropped share, gamma,
    learning rate, and the rate over the last window (not since the start, which includes
    tracing)."""
    width = len(str(train_steps))
    return (
        f"step {step:>{width}}/{train_steps}  loss_va {values['loss_va']:.4f}  "
        f"loss_vt {values['loss_vt']:.4f}  cos {values['cosine']:+.3f}  "
        f"dropped {values['dropped']:.2f}  gamma {values['gamma']:+.3f}  "
        f"lr {values['learning_rate']:.1e}  {1.0 / max(values['seconds_per_step'], 1e-9):.1f} steps/s"
    )


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
    allow_low_learning_rate: bool = False,
    allow_config_change: bool = False,
):
    """Pre-train VATT with the gin-configured harmonization; resumes from model_dir.

    Exact resume: weights, optimizer slots, the step and every random generator are
    checkpointed, and each process saves its input pipelines' position (a few numbers per
    source, vatt_gh/input_state.py) with every checkpoint; the pipelines rebuild themselves
    from it, so a run killed at any moment and restarted ends with the weights of an
    uninterrupted run, on one worker or several, and a restart costs the same at any step.
    SIGTERM: a checkpoint at the next step boundary, then exit code 42 (see `train`).
    Returns the model, or None when the run in model_dir is already complete.
    allow_low_learning_rate / allow_config_change: the tools' flags that let a run whose
    schedule stays near zero (provision.check_learning_rate), or a resume with another method,
    model, granularity or data (vatt_gh/run_config.py), go on.
    """
    config = loop.LoopConfig(
        train_steps=train_steps,
        checkpoint_every=checkpoint_every,
        summary_every=summary_every,
        keep_checkpoints=keep_checkpoints,
        line=pretrain_line,
        max_nonfinite_in_a_row=max_nonfinite_in_a_row,
        progress=progress,
    )
    provision.check_settings(
        {**dataclasses.asdict(config), "global_batch_size": global_batch_size, "seed": seed}
    )
    provision.check_pretrain_learning_rate(train_steps, allow_low_learning_rate)
    strategy = strategy or tf.distribute.get_strategy()
    chief = cluster.is_chief(strategy)
    harmonization = _harmonization(global_batch_size, strategy)
    if synthetic_data is None:
        provision.check_no_placeholders(PretrainConfig())
    provision.check_word_table()  # its .npy header against the model's sizes
    created = not tf.io.gfile.exists(model_dir)
    provision.check_writable(model_dir)
    try:
        with run_lock.hold(model_dir, chief):  # one run per directory
            console.exit_on_sigterm(run_lock.release_held)  # until training's handler
            return _pretrain(
                _Run(
                    model_dir=model_dir,
                    strategy=strategy,
                    harmonization=harmonization,
                    config=config,
                    global_batch_size=global_batch_size,
                    synthetic_data=synthetic_data,
                    xla_math=xla_math,
                    seed=seed,
                    allow_config_change=allow_config_change,
                )
            )
    except ConfigError:
        if created and chief and not tf.io.gfile.listdir(model_dir):
            tf.io.gfile.rmtree(model_dir)  # nothing of the run was made: leave no trace
        raise


@dataclasses.dataclass(frozen=True)
class _Run:
    """One pre-training run's settings, checked by `pretrain` before the directory is locked."""

    model_dir: str
    strategy: tf.distribute.Strategy
    harmonization: trainer.Harmonization
    config: loop.LoopConfig
    global_batch_size: int
    synthetic_data: Optional[provision.SyntheticData]
    xla_math: bool
    seed: int
    allow_config_change: bool


def _pretrain(run: _Run):
    """The run, its directory locked: data, model, `loop.train`, the footer."""
    model_dir, strategy, harmonization, config = (
        run.model_dir,
        run.strategy,
        run.harmonization,
        run.config,
    )
    global_batch_size, synthetic_data = run.global_batch_size, run.synthetic_data
    train_steps = config.train_steps
    chief = cluster.is_chief(strategy)
    multi_worker = cluster.num_workers(strategy) > 1
    say = console.say if chief and config.progress is not False else lambda message: None
    done = checkpoints.newest_step(os.path.join(model_dir, "checkpoints"), chief)
    if done >= train_steps:
        say(f"the run in {model_dir} is already complete ({done}/{train_steps} steps).")
        return None
    data = provision.data_config(model_dir, synthetic_data, chief, multi_worker)
    say(
        f"{harmonization.method} harmonization ({harmonization.granularity}), global batch "
        f"{global_batch_size} on {strategy.num_replicas_in_sync} replica(s), "
        f"{train_steps} steps" + (f", resuming after step {done}" if done else "")
    )
    say("building the model and the input pipeline ...")

    word_table = _demo_word_table(model_dir, synthetic_data, run.seed)
    loop.seed_everything(run.seed)
    with strategy.scope():
        model = trainer.PretrainModel(
            build_vatt(**word_table),
            harmonization,
            xla_math=run.xla_math,
            summary_every=config.summary_every,
        )
        local = pretrain_dataset(
            data, global_batch_size // strategy.num_replicas_in_sync
        ).element_spec
        strategy.run(lambda: model(_dummy_batch(local), training=False))
        optimizer = trainer.make_optimizer()
        model.compile(optimizer=optimizer)
    # This start's operative config kept (numbered on a resume that changes it); a resume that
    # changes the method, model, granularity or data stops here unless allowed.
    run_config.record(model_dir, done, run.allow_config_change, write=chief)

    train_fn = model.make_train_function()
    trained = loop.train(
        model_dir,
        strategy,
        model,
        optimizer,
        train_fn,
        data,
        global_batch_size,
        config,
        verified=True,
    )
    if trained.values:
        say(_footer(trained))
    return model


def _harmonization(global_batch_size: int, strategy) -> trainer.Harmonization:
    """The gin-configured Harmonization, its groups checked to tile each replica's batch."""
    try:
        harmonization = trainer.Harmonization()  # gin-configured; validates method/granularity
    except ValueError as e:
        raise ConfigError(str(e).splitlines()[0]) from None
    if global_batch_size % strategy.num_replicas_in_sync:
        raise ConfigError(
            f"global_batch_size {global_batch_size} does not split over "
            f"{strategy.num_replicas_in_sync} replicas"
        )
    try:  # groups of N clips must tile each replica's batch
        harmonization.parsed.group_size(global_batch_size // strategy.num_replicas_in_sync)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return harmonization


def _demo_word_table(model_dir: str, synthetic_data, seed: int) -> dict:
    """build_vatt's override for the demo: a frozen word table of seeded random vectors."""
    if synthetic_data is None:
        return {}
    sizes = build_vatt().vatt_config  # an unbuilt model: the gin-configured sizes
    path = word_vectors.random_table(
        os.path.join(model_dir, "data"),
        sizes.vocab_size,
        sizes.word_dim,
        synthetic_data.word_norm,
        seed,
    )
    return {"word_vectors_path": path}


def _footer(trained: loop.Trained) -> str:
    start, step, values = trained.start, trained.step, trained.values
    return (
        f"done: {step - start} steps in {console.duration(trained.seconds)}"
        + (f" (steps {start + 1}-{step})" if start else "")
        + f"; at step {step}: loss_va {values['loss_va']:.4f}, loss_vt "
        f"{values['loss_vt']:.4f}, cos {values['cosine']:+.3f}"
    )
