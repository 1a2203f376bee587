"""The pre-training run around `PretrainModel`: data, checkpoints, summaries, progress.

    pretrain(model_dir, strategy)   # every other setting from gin (gin/base.gin)

Summaries are written on the host from values the step returns (so they work on TPU): both
losses, learning rate, gamma, mean cosine, fractions projected / dropped, gradient norms,
skipped steps, wall seconds per step since the last summary, and a histogram of the cosines of
every group of every replica and every step since the previous summary.
"""

import dataclasses
import inspect
import os
import socket
import sys
import time
import uuid
from typing import Dict, List, Optional

import numpy as np
import tensorflow as tf
from absl import logging

import gin
from vatt_gh import console, input_state, launch, trainer
from vatt_gh.data import pipeline, synthetic, word_vectors
from vatt_gh.data.pipeline import INT, REAL, check_fields
from vatt_gh.models import build_vatt, dummy_inputs

HISTOGRAMS = ("cosines",)
NOT_SCALARS = HISTOGRAMS + ("step_applied", "nonfinite")


class ConfigError(ValueError):
    """A setting that makes the run impossible, found before training starts."""


@gin.configurable
@dataclasses.dataclass(frozen=True)
class SyntheticData:
    """Synthetic triplets made on first use under <model_dir>/data (the demo's embedded data).

    The defaults are `synthetic.DEMO`, the one place the demo set's sizes are written."""

    num_clips: int = synthetic.DEMO["num_clips"]
    num_classes: int = synthetic.DEMO["num_classes"]
    misaligned_fraction: float = synthetic.DEMO["misaligned_fraction"]
    num_frames: int = synthetic.DEMO["num_frames"]
    frame_size: int = synthetic.DEMO["frame_size"]
    num_captions: int = synthetic.DEMO["num_captions"]
    words_per_caption: int = synthetic.DEMO["words_per_caption"]
    num_shards: int = synthetic.DEMO["num_shards"]
    seed: int = 0

    def __post_init__(self):
        try:
            check_fields(
                self,
                (
                    ("num_clips", INT, 1, None, False),
                    ("num_classes", INT, 1, None, False),
                    ("misaligned_fraction", REAL, 0, 1, False),
                    ("num_frames", INT, 1, None, False),
                    ("frame_size", INT, 8, None, False),
                    ("num_shards", INT, 1, self.num_clips, False),
                    ("seed", INT, 0, None, False),
                ),
            )
        except ValueError as e:
            raise ConfigError(str(e)) from None


PLACEHOLDER = "YOUR_BUCKET"  # gin/data/*.gin ship with gs://YOUR_BUCKET/... paths


def check_no_placeholders(config: pipeline.PretrainConfig):
    """ConfigError, before any file system or network access, when a data path is still the
    placeholder of gin/data/*.gin: it says how to build the data or run the demo."""
    for source in config.sources:
        patterns = source.file_pattern
        for pattern in (patterns,) if isinstance(patterns, str) else patterns:
            if PLACEHOLDER in pattern:
                raise ConfigError(_placeholder_message(pattern))
    if PLACEHOLDER in (config.vocab_path or ""):
        raise ConfigError(_placeholder_message(config.vocab_path))


def _placeholder_message(path):
    return (
        f"no data: {path!r} is a placeholder. Build the data with tools/build_dataset.py and "
        "tools/build_vocab.py and put their paths in gin/data/howto100m.gin (README.md, "
        "Pre-training), or run the embedded demo with --gin_file=gin/demo.gin"
    )


def check_writable(model_dir: str):
    """Create model_dir and prove it can be written, or raise ConfigError naming it."""
    try:
        tf.io.gfile.makedirs(model_dir)
        # One probe per process: workers sharing model_dir must not remove each other's.
        probe = os.path.join(model_dir, f".write_probe-{uuid.uuid4().hex}")
        with tf.io.gfile.GFile(probe, "w") as f:
            f.write("ok")
        tf.io.gfile.remove(probe)
    except (tf.errors.OpError, OSError) as e:
        raise ConfigError(f"--model_dir {model_dir!r} cannot be written: {e}") from None


def data_config(
    model_dir: str,
    synthetic_data: Optional[SyntheticData],
    chief: bool = True,
    multi_worker: bool = False,
) -> pipeline.PretrainConfig:
    """The gin-configured PretrainConfig; with `synthetic_data`, pointed at records it makes.

    The chief makes them in a temporary folder renamed into place; other workers wait until
    the chief says so through the coordination service (which fails them if the chief dies).
    """
    if synthetic_data is not None:
        out_dir = os.path.join(model_dir, "data")
        marker = os.path.join(out_dir, "metadata.json")
        if chief and not tf.io.gfile.exists(marker):
            console.say(
                f"writing synthetic data ({synthetic_data.num_clips} clips of "
                f"{synthetic_data.num_frames} frames) to {out_dir} ..."
            )
            tmp_dir = f"{out_dir}.tmp-{os.getpid()}"
            try:
                synthetic.write_synthetic(tmp_dir, **dataclasses.asdict(synthetic_data))
            except ValueError as e:
                raise ConfigError(f"SyntheticData: {e}") from None
            if tf.io.gfile.exists(out_dir):  # a partial folder from an interrupted run
                tf.io.gfile.rename(out_dir, f"{out_dir}.partial-{os.getpid()}")
            tf.io.gfile.rename(tmp_dir, out_dir)
        if multi_worker:
            launch.chief_barrier("vatt_gh/synthetic_data", chief)
        if not tf.io.gfile.exists(marker):
            raise ConfigError(
                f"synthetic data is missing from {out_dir!r} (no metadata.json); "
                "is --model_dir on storage every worker sees?"
            )
        # The synthetic records replace gin/data's sources, also in operative_config.gin:
        # rebound before PretrainConfig is built, so the placeholder sources are never called.
        with gin.unlock_config():
            gin.parse_config(
                [
                    "synthetic/SourceConfig.name = 'synthetic'",
                    "synthetic/SourceConfig.file_pattern = "
                    f"{os.path.join(out_dir, 'synthetic-*.tfrecord')!r}",
                    "PretrainConfig.sources = (@synthetic/SourceConfig(),)",
                    f"PretrainConfig.vocab_path = {_find_vocab(out_dir)!r}",
                ]
            )
    try:
        config = pipeline.PretrainConfig()  # its fields (and its sources') are checked
    except ValueError as e:
        raise ConfigError(str(e).splitlines()[0]) from None
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


def is_chief(strategy) -> bool:
    """Whether this process writes checkpoints, summaries and the operative config.

    Exactly one process does: without a cluster (default, mirrored) this one; multi-worker the
    chief, or worker 0 when TF_CONFIG names no chief; TPU the client. TensorFlow on TPU is
    single-client (one process drives every host of a pod slice; tools/launch_tpu.py starts it
    on worker 0), so a TPUStrategy process is the client when its TPU is local (`--tpu=local`,
    one host) or when it runs on the host of the slice's worker 0; a stray copy on another host
    of the slice does not write.
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if isinstance(strategy, (tf.distribute.TPUStrategy, tf.distribute.experimental.TPUStrategy)):
        return _on_first_tpu_host(resolver)
    if resolver is None or not resolver.task_type:
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "chief" or (
        not has_chief and resolver.task_type == "worker" and resolver.task_id == 0
    )


def _on_first_tpu_host(resolver) -> bool:
    """True on the host of the TPU slice's worker 0 (or with a local, single-host TPU)."""
    if resolver is None:
        return True
    workers = resolver.cluster_spec().as_dict().get(resolver.task_type or "worker", [])
    if len(workers) <= 1:
        return True  # --tpu=local (an empty cluster spec) or a single host
    host = workers[0].rsplit(":", 1)[0]
    if host in ("localhost", "127.0.0.1"):
        return True
    try:  # the address this machine uses to reach worker 0 is worker 0's own on that host
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect((host, 1))  # UDP: no packet is sent
            return probe.getsockname()[0] == host
    except OSError:
        return False


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
    tf.train.Checkpoint(model=model).restore(
        path
    ).expect_partial().assert_existing_objects_matched()
    step = int(path.rsplit("-", 1)[-1]) if path.rsplit("-", 1)[-1].isdigit() else 0
    return model, step


def write_summaries(writer, step: int, logs: dict):
    with writer.as_default(step=step):
        for name, value in logs.items():
            if name in HISTOGRAMS:
                if np.size(value):  # sum / reweight measure their cosines at monitor steps
                    tf.summary.histogram(f"harmonize/{name}", value)
            elif name not in NOT_SCALARS:
                tf.summary.scalar(f"train/{name}", value)
    writer.flush()


def write_data_errors(writer, step: int, totals: Dict[str, int]):
    """`data/skipped/<reason>`: records rejected since the start, per reason (zeros included)."""
    with writer.as_default(step=step):
        for name in pipeline.REASON_NAMES.values():
            tf.summary.scalar(f"data/skipped/{name}", totals.get(name, 0))
    writer.flush()


def _dropout_generators(model) -> list:
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


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. too many non-finite steps in a row)."""


_RUN_RULES = (
    ("train_steps", INT, 1, None, False),
    ("global_batch_size", INT, 1, None, False),
    ("checkpoint_every", INT, 1, None, False),
    ("summary_every", INT, 1, None, False),
    ("keep_checkpoints", INT, 1, None, False),
    ("max_nonfinite_in_a_row", INT, 1, None, False),
    ("seed", INT, 0, None, False),
)
_OPTIMIZER_RULES = (
    ("learning_rate", REAL, 0, None, True),
    ("warmup_steps", INT, 0, None, False),
    ("decay_steps", INT, 1, None, False),
    ("end_learning_rate", REAL, 0, None, False),
    ("beta_1", REAL, 0, 1, False),
    ("beta_2", REAL, 0, 1, False),
    ("epsilon", REAL, 0, None, True),
)


def check_settings(run: Dict[str, object]) -> None:
    """Raises ConfigError naming the first numeric setting of the run out of its range.

    `run`: pretrain's arguments; the optimizer's come from gin (or make_optimizer's defaults).
    """
    optimizer = {
        name: p.default
        for name, p in inspect.signature(trainer.make_optimizer).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    optimizer.update(gin.get_bindings(trainer.make_optimizer))
    try:
        check_fields(run, [r for r in _RUN_RULES if r[0] in run], "pretrain")
        check_fields(
            optimizer, [r for r in _OPTIMIZER_RULES if r[0] in optimizer], "make_optimizer"
        )
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if optimizer.get("end_learning_rate", 0) > optimizer.get("learning_rate", 1):
        raise ConfigError(
            f"make_optimizer.end_learning_rate = {optimizer['end_learning_rate']!r} is above "
            f"make_optimizer.learning_rate = {optimizer['learning_rate']!r}"
        )


PREEMPTED_EXIT_CODE = 42  # SIGTERM: checkpoint saved at the step boundary; restart to resume


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
    synthetic_data: Optional[SyntheticData] = None,
    xla_math: bool = False,
    progress: Optional[bool] = None,
    seed: int = 0,
    max_nonfinite_in_a_row: int = 10,
):
    """Pre-train VATT with the gin-configured harmonization; resumes from model_dir.

    Exact resume: weights, optimizer slots, the step and every random generator are
    checkpointed, and each process saves its input pipelines' position (a few numbers per
    source, vatt_gh/input_state.py) with every checkpoint; the pipelines rebuild themselves
    from it, so a run killed at any moment and restarted ends with the weights of an
    uninterrupted run, on one worker or several, and a restart costs the same at any step.
    SIGTERM: a checkpoint at the next step boundary, then exit code 42.
    """
    check_settings(
        dict(
            train_steps=train_steps,
            global_batch_size=global_batch_size,
            checkpoint_every=checkpoint_every,
            summary_every=summary_every,
            keep_checkpoints=keep_checkpoints,
            max_nonfinite_in_a_row=max_nonfinite_in_a_row,
            seed=seed,
        )
    )
    strategy = strategy or tf.distribute.get_strategy()
    chief = is_chief(strategy)
    multi_worker = _num_workers(strategy) > 1
    say = console.say if chief and progress is not False else lambda message: None
    try:
        harmonization = trainer.Harmonization()  # gin-configured; validates method/granularity
    except ValueError as e:
        raise ConfigError(str(e).splitlines()[0]) from None
    if global_batch_size % strategy.num_replicas_in_sync:
        raise ConfigError(
            f"global_batch_size {global_batch_size} does not split over "
            f"{strategy.num_replicas_in_sync} replicas"
        )
    if synthetic_data is None:
        check_no_placeholders(pipeline.PretrainConfig())
    created = not tf.io.gfile.exists(model_dir)
    check_writable(model_dir)
    ckpt_dir = os.path.join(model_dir, "checkpoints")
    if chief:
        set_aside_unreadable(ckpt_dir)
    done = _checkpoint_step(tf.train.latest_checkpoint(ckpt_dir))
    if done >= train_steps:
        say(f"the run in {model_dir} is already complete ({done}/{train_steps} steps).")
        return None
    try:
        config = data_config(model_dir, synthetic_data, chief, multi_worker)
    except ConfigError:
        if created and chief and not tf.io.gfile.listdir(model_dir):
            tf.io.gfile.rmtree(model_dir)  # nothing of the run was made: leave no trace
        raise
    data_errors = pipeline.DataErrors(config.on_error)  # rejected records: counts, failure
    say(
        f"{harmonization.method} harmonization ({harmonization.granularity}), global batch "
        f"{global_batch_size} on {strategy.num_replicas_in_sync} replica(s), "
        f"{train_steps} steps" + (f", resuming after step {done}" if done else "")
    )
    say("building the model and the input pipeline ...")

    # ----------------------------------------------------------- model, every stream seeded
    overrides = {}
    if synthetic_data is not None:  # the demo's frozen word table: word2vec on its narrations
        sizes = build_vatt().vatt_config  # an unbuilt model: the gin-configured sizes
        overrides["word_vectors_path"] = word_vectors.narration_table(
            os.path.join(model_dir, "data"), sizes.vocab_size, sizes.word_dim, seed
        )
    tf.keras.backend.experimental.enable_tf_random_generator()  # checkpointable dropout
    tf.keras.utils.set_random_seed(seed)
    with strategy.scope():
        model = trainer.PretrainModel(
            build_vatt(**overrides), harmonization, xla_math=xla_math, summary_every=summary_every
        )
        local = pipeline.pretrain_dataset(
            config, global_batch_size // strategy.num_replicas_in_sync
        ).element_spec
        strategy.run(lambda: model(_dummy_batch(local), training=False))
        optimizer = trainer.make_optimizer()
        model.compile(optimizer=optimizer)

    # ------------------------------------------------------------- checkpoint and restore
    checkpoint = tf.train.Checkpoint(
        model=model, optimizer=optimizer, rng=_dropout_generators(model)
    )
    inputs = input_state.InputState(
        config, global_batch_size, ckpt_dir, _task_name(strategy), keep=keep_checkpoints
    )

    def preempted_exit():
        inputs.save(int(optimizer.iterations.numpy()))  # the step just checkpointed
        sys.exit(PREEMPTED_EXIT_CODE)

    if chief:
        remove_leftovers(ckpt_dir, keep_checkpoints)
    manager = tf.train.CheckpointManager(checkpoint, ckpt_dir, max_to_keep=keep_checkpoints)
    if manager.latest_checkpoint:
        logging.info("resumed from %s", manager.latest_checkpoint)
    # Restores the newest checkpoint; on SIGTERM saves at the next step boundary and exits.
    preemption = tf.distribute.experimental.PreemptionCheckpointHandler(
        strategy.cluster_resolver if multi_worker else None,
        manager,
        termination_config=tf.distribute.experimental.TerminationConfig(exit_fn=preempted_exit),
    )
    step = int(optimizer.iterations.numpy())
    inputs.restore(step)
    iterator = iter(_distribute(strategy, config, global_batch_size, inputs, data_errors))
    if not chief:  # a private copy
        worker_dir = os.path.join(model_dir, "workers", _task_name(strategy))
        remove_leftovers(worker_dir, 1)
    saver = manager if chief else tf.train.CheckpointManager(checkpoint, worker_dir, max_to_keep=1)

    # ------------------------------------------------------------------- summaries, progress
    if chief:
        with tf.io.gfile.GFile(os.path.join(model_dir, "operative_config.gin"), "w") as f:
            f.write(gin.operative_config_str())
    log_dir = (
        os.path.join(model_dir, "train")
        if chief
        else os.path.join(model_dir, "workers", _task_name(strategy), "train")
    )
    writer = tf.summary.create_file_writer(log_dir)

    # ------------------------------------------------------------------------------ train
    say("tracing the training step (the first step takes longest) ...")
    train_fn = model.make_train_function()
    start, t0, nonfinite_run, values = step, time.time(), 0, {}
    window = (step, t0)  # (step, time) of the last summary: wall time per step since then
    cosines = []  # every group's cosine of every step since the last summary (histogram)
    while step < train_steps:
        try:
            logs = train_fn(iterator)
        except tf.errors.OpError:
            if data_errors.failure:  # a bad record under 'raise', or nothing valid: one line
                writer.close()
                raise TrainingError(data_errors.failure) from None
            raise
        cosines.append(logs["cosines"])
        step += 1
        nonfinite_run = nonfinite_run + 1 if float(logs["nonfinite"]) else 0
        stop = nonfinite_run >= max_nonfinite_in_a_row
        if step % summary_every == 0 or step == train_steps or stop:
            values = {k: v.numpy() for k, v in logs.items()}
            values["cosines"] = np.concatenate([c.numpy() for c in cosines])
            cosines = []
            now = time.time()
            values["seconds_per_step"] = (now - window[1]) / (step - window[0])
            window = (step, now)
            write_summaries(writer, step, values)
            skipped = data_errors.totals()
            write_data_errors(writer, step, skipped)
            if skipped and chief:
                logging.info("input: %s", data_errors.summary())
            model.reset_metrics()
            say(progress_line(step, train_steps, values))
        if stop:
            writer.close()
            raise TrainingError(
                f"{nonfinite_run} non-finite steps in a row (steps {step - nonfinite_run + 1}"
                f"-{step}); each was skipped, so the weights are those after step "
                f"{step - nonfinite_run}. Check the data and the learning rate, then resume."
            )
        if step % checkpoint_every == 0 or step == train_steps:
            inputs.save(step)  # first: a checkpoint never lacks its input position
            saver.save(checkpoint_number=step)
        preemption.save_checkpoint_if_preempted(checkpoint_number=step)
    if values:
        say(
            f"done: {step - start} steps in {console.duration(time.time() - t0)}"
            + (f" (steps {start + 1}-{step})" if start else "")
            + f"; at step {step}: loss_va {values['loss_va']:.4f}, loss_vt "
            f"{values['loss_vt']:.4f}, cos {values['cosine']:+.3f}"
        )
    writer.close()
    logging.info("input: %s", data_errors.summary())
    return model


def progress_line(step: int, train_steps: int, values: dict) -> str:
    """One line per summary: the step, both losses, cosine, dropped share, gamma, learning rate,
    and the rate over the last window (not since the start, which includes tracing)."""
    width = len(str(train_steps))
    return (
        f"step {step:>{width}}/{train_steps}  loss_va {values['loss_va']:.4f}  "
        f"loss_vt {values['loss_vt']:.4f}  cos {values['cosine']:+.3f}  "
        f"dropped {values['dropped']:.2f}  gamma {values['gamma']:+.3f}  "
        f"lr {values['learning_rate']:.1e}  {1.0 / max(values['seconds_per_step'], 1e-9):.1f} steps/s"
    )


def _checkpoint_step(path: Optional[str]) -> int:
    """The step of a checkpoint written as <dir>/ckpt-<step> (0 for None)."""
    suffix = (path or "").rsplit("-", 1)[-1]
    return int(suffix) if suffix.isdigit() else 0


def _num_workers(strategy) -> int:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or isinstance(strategy, tf.distribute.TPUStrategy):
        return 1
    spec = resolver.cluster_spec().as_dict()
    return max(1, sum(len(tasks) for job, tasks in spec.items() if job in ("chief", "worker")))


def _task_name(strategy) -> str:
    resolver = getattr(strategy, "cluster_resolver", None)
    return (
        f"{resolver.task_type}_{resolver.task_id}" if resolver and resolver.task_type else "local"
    )


def _distribute(strategy, config, global_batch_size, inputs: input_state.InputState, errors):
    """The distributed pre-training dataset, each input pipeline from its saved position."""
    input_fn = pipeline.make_pretrain_input_fn(
        config, global_batch_size, errors, position_fn=inputs.position, counts=inputs.counts
    )

    # Multi-worker input would otherwise drop the static batch size (to allow workers with
    # unequal data); every worker's pipeline repeats forever, and harmonization needs it.
    if hasattr(strategy.extended, "experimental_enable_get_next_as_optional"):
        strategy.extended.experimental_enable_get_next_as_optional = False
    return strategy.distribute_datasets_from_function(input_fn)
