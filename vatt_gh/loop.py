"""The pre-training run around `PretrainModel`: data, checkpoints, summaries, progress.

    pretrain(model_dir, strategy)   # every other setting from gin (gin/base.gin)

Summaries are written on the host from values the step returns (so they work on TPU): both
losses, learning rate, gamma, mean cosine, fractions projected / dropped, gradient norms,
skipped steps, and a histogram of the cosines of every group of every replica.
"""
import dataclasses
import os
import sys
import time
from typing import Optional

import gin
import numpy as np
import tensorflow as tf
from absl import logging

from vatt_gh import trainer
from vatt_gh.data import pipeline, synthetic
from vatt_gh.models import build_vatt, dummy_inputs

HISTOGRAMS = ("cosines",)
NOT_SCALARS = HISTOGRAMS + ("step_applied", "nonfinite")


class ConfigError(ValueError):
    """A setting that makes the run impossible, found before training starts."""


@gin.configurable
@dataclasses.dataclass(frozen=True)
class SyntheticData:
    """Synthetic triplets made on first use under <model_dir>/data (the demo's embedded data)."""
    num_clips: int = 512
    num_classes: int = 8
    misaligned_fraction: float = 0.25
    num_frames: int = 16
    frame_size: int = 40
    num_shards: int = 4
    seed: int = 0


def check_writable(model_dir: str):
    """Create model_dir and prove it can be written, or raise ConfigError naming it."""
    try:
        tf.io.gfile.makedirs(model_dir)
        probe = os.path.join(model_dir, ".write_probe")
        with tf.io.gfile.GFile(probe, "w") as f:
            f.write("ok")
        tf.io.gfile.remove(probe)
    except (tf.errors.OpError, OSError) as e:
        raise ConfigError(f"--model_dir {model_dir!r} cannot be written: {e}") from None


def data_config(model_dir: str, synthetic_data: Optional[SyntheticData]) -> pipeline.PretrainConfig:
    """The gin-configured PretrainConfig; with `synthetic_data`, pointed at records it makes."""
    config = pipeline.PretrainConfig()
    if synthetic_data is not None:
        out_dir = os.path.join(model_dir, "data")
        marker = os.path.join(out_dir, "metadata.json")
        made = synthetic.write_synthetic(out_dir, **dataclasses.asdict(synthetic_data)) \
            if not tf.io.gfile.exists(marker) else None
        pattern = made["file_pattern"] if made else os.path.join(out_dir, "synthetic-*.tfrecord")
        vocab = made["vocab_path"] if made else _find_vocab(out_dir)
        source = pipeline.SourceConfig(file_pattern=pattern, name="synthetic")
        config = dataclasses.replace(config, sources=(source,), vocab_path=vocab)
    if not config.sources:
        raise ConfigError("no data: set PretrainConfig.sources in gin (see gin/data/)")
    for source in config.sources:
        try:
            pipeline.list_files(source.file_pattern)
        except (ValueError, FileNotFoundError, tf.errors.OpError) as e:
            raise ConfigError(f"data source {source.name or source.file_pattern!r}: {e}") from None
    if not config.vocab_path or not tf.io.gfile.exists(config.vocab_path):
        raise ConfigError(f"PretrainConfig.vocab_path {config.vocab_path!r} does not exist")
    return config


def _find_vocab(out_dir):
    found = tf.io.gfile.glob(os.path.join(out_dir, "*vocab*"))
    return found[0] if found else ""


def _is_chief(strategy) -> bool:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type or isinstance(
            strategy, tf.distribute.TPUStrategy):
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "chief" or (not has_chief and resolver.task_type == "worker"
                                             and resolver.task_id == 0)


def _dummy_batch(element_spec):
    """Zeros with the per-replica shapes of a batch: builds every variable before training."""
    return {k: tf.zeros(s.shape, s.dtype) for k, s in element_spec.items()}


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
    tf.train.Checkpoint(model=model).restore(path).expect_partial() \
        .assert_existing_objects_matched()
    step = int(path.rsplit("-", 1)[-1]) if path.rsplit("-", 1)[-1].isdigit() else 0
    return model, step


def write_summaries(writer, step: int, logs: dict):
    with writer.as_default(step=step):
        for name, value in logs.items():
            if name in HISTOGRAMS:
                tf.summary.histogram(f"harmonize/{name}", value)
            elif name not in NOT_SCALARS:
                tf.summary.scalar(f"train/{name}", value)
    writer.flush()


@gin.configurable(denylist=["model_dir", "strategy"])
def pretrain(model_dir: str, strategy: Optional[tf.distribute.Strategy] = None, *,
             train_steps: int = 500_000, global_batch_size: int = 2048,
             checkpoint_every: int = 5000, summary_every: int = 100, keep_checkpoints: int = 5,
             synthetic_data: Optional[SyntheticData] = None, xla_math: bool = False,
             progress: Optional[bool] = None):
    """Pre-train VATT with the gin-configured harmonization; resumes from model_dir."""
    strategy = strategy or tf.distribute.get_strategy()
    chief = _is_chief(strategy)
    try:
        harmonization = trainer.Harmonization()  # gin-configured; validates method/granularity
    except ValueError as e:
        raise ConfigError(str(e).splitlines()[0]) from None
    check_writable(model_dir)
    config = data_config(model_dir, synthetic_data)
    if global_batch_size % strategy.num_replicas_in_sync:
        raise ConfigError(f"global_batch_size {global_batch_size} does not split over "
                          f"{strategy.num_replicas_in_sync} replicas")

    dataset = strategy.distribute_datasets_from_function(
        pipeline.make_pretrain_input_fn(config, global_batch_size))
    with strategy.scope():
        model = trainer.PretrainModel(build_vatt(), harmonization, xla_math=xla_math)
        local = pipeline.pretrain_dataset(config, global_batch_size //
                                          strategy.num_replicas_in_sync).element_spec
        strategy.run(lambda: model(_dummy_batch(local), training=False))
        optimizer = trainer.make_optimizer()
        model.compile(optimizer=optimizer)

    ckpt_dir = os.path.join(model_dir, "checkpoints") if chief else os.path.join(
        model_dir, "workers", f"{strategy.cluster_resolver.task_type}_"
        f"{strategy.cluster_resolver.task_id}")
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)
    manager = tf.train.CheckpointManager(checkpoint, ckpt_dir, max_to_keep=keep_checkpoints)
    if manager.latest_checkpoint:
        checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        logging.info("resumed from %s", manager.latest_checkpoint)
    step = int(optimizer.iterations.numpy())

    if chief:
        with tf.io.gfile.GFile(os.path.join(model_dir, "operative_config.gin"), "w") as f:
            f.write(gin.operative_config_str())
    log_dir = os.path.join(model_dir, "train") if chief else os.path.join(ckpt_dir, "train")
    writer = tf.summary.create_file_writer(log_dir)
    progress = sys.stdout.isatty() if progress is None else progress
    bar = tf.keras.utils.Progbar(train_steps, stateful_metrics=["loss_va", "loss_vt", "cosine",
                                                               "dropped", "gamma"]) \
        if progress and chief else None

    train_fn = model.make_train_function()
    iterator = iter(dataset)
    start, t0 = step, time.time()
    while step < train_steps:
        logs = train_fn(iterator)
        step += 1
        if step % summary_every == 0 or step == train_steps:
            values = {k: v.numpy() for k, v in logs.items()}
            write_summaries(writer, step, values)
            model.reset_metrics()
            if bar is None and chief:
                rate = (step - start) / max(time.time() - t0, 1e-9)
                logging.info("step %d/%d  loss_va %.4f  loss_vt %.4f  cos %.3f  dropped %.2f  "
                             "gamma %.3f  lr %.2e  (%.1f steps/s)", step, train_steps,
                             values["loss_va"], values["loss_vt"], values["cosine"],
                             values["dropped"], values["gamma"], values["learning_rate"], rate)
        if bar is not None:
            bar.update(step, [(k, float(logs[k])) for k in ("loss_va", "loss_vt", "cosine",
                                                            "dropped", "gamma")])
        if step % checkpoint_every == 0 and step < train_steps:
            manager.save(checkpoint_number=step)
    manager.save(checkpoint_number=step)
    writer.close()
    return model
