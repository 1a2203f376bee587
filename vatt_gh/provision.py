"""What a run needs before its first step: settings in range, a run directory, its data.

    check_settings(dict(train_steps=..., ...))        # pretrain's numbers and the optimizer's
    check_learning_rate(optimizer, train_steps, ...)  # warm-up longer than the run
    check_no_placeholders(PretrainConfig())          # gin/data/*.gin's gs://YOUR_BUCKET paths
    check_word_table()                                # the .npy table fits the model's sizes
    check_writable(model_dir)
    config = data_config(model_dir, SyntheticData())  # the demo: records made on first use

Every failure is a `ConfigError` with one line naming the flag, file or gin binding at fault,
found before anything is built.
"""

import dataclasses
import inspect
import os
import re
import uuid
from typing import Dict, Optional

import numpy as np
import tensorflow as tf

import gin
from vatt_gh import cluster, console, trainer
from vatt_gh.data import synthetic
from vatt_gh.data.configs import PretrainConfig
from vatt_gh.data.fields import INT, REAL, check_fields
from vatt_gh.data.read import list_files
from vatt_gh.errors import ConfigError
from vatt_gh.models import build_vatt, get_config
from vatt_gh.models.precision import PRECISIONS


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
    word_norm: float = 25.0  # its frozen word table: random vectors of this norm
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
                    ("word_norm", REAL, 0, None, True),
                    ("seed", INT, 0, None, False),
                ),
            )
        except ValueError as e:
            raise ConfigError(str(e)) from None


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
    optimizer = trainer.optimizer_settings()
    try:
        check_fields(run, [r for r in _RUN_RULES if r[0] in run], "pretrain")
        check_fields(
            optimizer, [r for r in _OPTIMIZER_RULES if r[0] in optimizer], "make_optimizer"
        )
    except ValueError as e:
        raise ConfigError(str(e)) from None
    precision = gin.get_bindings(build_vatt).get("precision", "float32")
    if precision not in PRECISIONS:
        raise ConfigError(f"build_vatt.precision = {precision!r}: choose one of {PRECISIONS}")
    if optimizer.get("end_learning_rate", 0) > optimizer.get("learning_rate", 1):
        raise ConfigError(
            f"make_optimizer.end_learning_rate = {optimizer['end_learning_rate']!r} is above "
            f"make_optimizer.learning_rate = {optimizer['learning_rate']!r}"
        )


# Of the schedule's peak: a run that never gets above it learns next to nothing. (4 steps of the
# demo's 50-step warm-up reach 6%; 20 steps of gin/base.gin's 10k-step warm-up reach 0.2%.)
LOW_LEARNING_RATE = 0.01


def check_learning_rate(
    optimizer,
    train_steps: int,
    steps_binding: str,
    warmup_binding: str,
    warmup_steps: int,
    allow: bool = False,
):
    """ConfigError, before training, when the optimizer's schedule stays at 0, or below
    LOW_LEARNING_RATE of its own peak, at every one of the run's `train_steps` steps (a warm-up
    longer than the run: 20 steps of gin/base.gin reach 1e-7), unless `allow` (the tools'
    --allow_low_learning_rate). The message names the bindings to change."""
    schedule = (
        optimizer._learning_rate
    )  # Keras keeps the schedule here (`learning_rate` is a value)
    if allow or not callable(schedule):
        return

    def highest(end):  # the schedule's highest value over steps [0, end), sampled
        steps = {0, end - 1, min(warmup_steps, end - 1)} | set(range(0, end, max(1, end // 64)))
        return max(float(schedule(step)) for step in steps)

    top = highest(train_steps)
    peak = max(top, highest(max(train_steps, warmup_steps + 1)))
    if top > 0 and top >= LOW_LEARNING_RATE * peak:
        return
    cause = (
        f"{warmup_binding} = {warmup_steps} warms up over more steps than the run has"
        if warmup_steps >= train_steps
        else "the schedule keeps it there"
    )
    raise ConfigError(
        f"the learning rate never exceeds {top:.1e} in the run's {train_steps} steps "
        f"({steps_binding}), under {LOW_LEARNING_RATE:.0%} of the schedule's peak {peak:.1e}: "
        f"{cause}. Lower {warmup_binding} or raise {steps_binding}, or pass "
        "--allow_low_learning_rate to train anyway"
    )


def check_pretrain_learning_rate(train_steps: int, allow: bool = False):
    """check_learning_rate for pre-training: make_optimizer's schedule over pretrain.train_steps
    (a throwaway optimizer, before anything is built)."""
    settings = trainer.optimizer_settings()
    check_learning_rate(
        trainer.make_optimizer(),
        train_steps,
        "pretrain.train_steps",
        "make_optimizer.warmup_steps",
        settings["warmup_steps"],
        allow,
    )


PLACEHOLDER = "YOUR_BUCKET"  # gin/data/*.gin ship with gs://YOUR_BUCKET/... paths


def check_no_placeholders(config: PretrainConfig):
    """ConfigError, before any file system or network access, when a data path is still the
    placeholder of gin/data/*.gin: it says how to build the data or run the demo."""
    for source in config.sources:
        patterns = source.file_pattern
        for pattern in (patterns,) if isinstance(patterns, str) else patterns:
            if PLACEHOLDER in pattern:
                raise ConfigError(_placeholder_message(pattern))
    if PLACEHOLDER in (config.vocab_path or ""):
        raise ConfigError(_placeholder_message(config.vocab_path))
    try:  # the word table of gin/data/*.gin (built by tools/build_word_vectors.py)
        vectors = gin.query_parameter("build_vatt.word_vectors_path")
    except ValueError:  # not bound
        vectors = None
    if isinstance(vectors, str) and PLACEHOLDER in vectors:
        raise ConfigError(_placeholder_message(vectors))


def _placeholder_message(path):
    return (
        f"no data: {path!r} is a placeholder. Build the data with tools/build_dataset.py, "
        "tools/build_vocab.py and tools/build_word_vectors.py and put their paths in gin/data/howto100m.gin (README.md, "
        "Pre-training), or run the embedded demo with --gin_file=gin/demo.gin"
    )


def check_word_table():
    """ConfigError, before the model is built, when build_vatt.word_vectors_path's .npy table
    (only its header is read) is not (vocab_size, word_dim) of the gin-configured model: e.g.
    the tools' default 65,536 x 300 table with build_vatt.preset = 'tiny' (1,000 x 32). The
    message names the bindings to change."""
    bound = dict(gin.get_bindings(build_vatt))
    preset = bound.pop("preset", inspect.signature(build_vatt).parameters["preset"].default)
    bound.pop("variant", None)
    bound.pop("precision", None)  # build_vatt's own arguments, not config fields
    try:
        config = get_config(preset, **bound)
    except ValueError as e:
        raise ConfigError(f"build_vatt: {e}") from None
    path = config.word_vectors_path
    if not path or PLACEHOLDER in path:
        return
    binding = f"build_vatt.word_vectors_path {path!r}"
    try:
        with tf.io.gfile.GFile(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read = {(1, 0): np.lib.format.read_array_header_1_0}.get(
                version, np.lib.format.read_array_header_2_0
            )
            shape = read(f)[0]
    except (OSError, ValueError, tf.errors.OpError) as e:
        raise ConfigError(f"{binding} cannot be read as a .npy array: {e}") from None
    want = (config.vocab_size, config.word_dim)
    if tuple(shape) != want:
        raise ConfigError(
            f"{binding} holds a {tuple(shape)} table but the model (build_vatt.preset = "
            f"{preset!r}) has (vocab_size, word_dim) = {want}: bind build_vatt.vocab_size = "
            f"{shape[0]} and build_vatt.word_dim = {shape[-1]} (gin/model/tiny.gin does for the "
            "tools' default table), or rebuild the table with tools/build_word_vectors.py "
            f"--vocab_size={want[0]} --dim={want[1]}"
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


def data_config(  # noqa: C901  (the three data sources and their checks, read top to bottom)
    model_dir: str,
    synthetic_data: Optional[SyntheticData],
    chief: bool = True,
    multi_worker: bool = False,
) -> PretrainConfig:
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
            for name in tf.io.gfile.listdir(model_dir):  # a killed build's (the run is locked)
                if re.fullmatch(r"data\.tmp-\d+/?", name):
                    tf.io.gfile.rmtree(os.path.join(model_dir, name.rstrip("/")))
            tmp_dir = f"{out_dir}.tmp-{os.getpid()}"
            try:
                records = dataclasses.asdict(synthetic_data)
                del records["word_norm"]  # the word table's, not the records'
                synthetic.write_synthetic(tmp_dir, **records)
            except ValueError as e:
                raise ConfigError(f"SyntheticData: {e}") from None
            if tf.io.gfile.exists(out_dir):  # a partial folder from an interrupted run
                tf.io.gfile.rename(out_dir, f"{out_dir}.partial-{os.getpid()}")
            tf.io.gfile.rename(tmp_dir, out_dir)
        if multi_worker:
            cluster.chief_barrier("vatt_gh/synthetic_data", chief)
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
                    f"PretrainConfig.vocab_path = {find_vocab(out_dir)!r}",
                ]
            )
    try:
        config = PretrainConfig()  # its fields (and its sources') are checked
    except ValueError as e:
        raise ConfigError(str(e).splitlines()[0]) from None
    if not config.sources:
        raise ConfigError("no data: set PretrainConfig.sources in gin (see gin/data/)")
    for source in config.sources:
        try:
            list_files(source.file_pattern)
        except (ValueError, FileNotFoundError, tf.errors.OpError) as e:
            raise ConfigError(f"data source {source.name or source.file_pattern!r}: {e}") from None
    if not config.vocab_path or not tf.io.gfile.exists(config.vocab_path):
        raise ConfigError(f"PretrainConfig.vocab_path {config.vocab_path!r} does not exist")
    return config


def find_vocab(data_dir: str) -> str:
    """The first file named *vocab* in data_dir, or '' when there is none."""
    found = tf.io.gfile.glob(os.path.join(data_dir, "*vocab*"))
    return found[0] if found else ""
