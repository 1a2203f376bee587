"""What a run needs before its first step: settings in range, a run directory, its data.

    check_settings(dict(train_steps=..., ...))        # pretrain's numbers and the optimizer's
    check_no_placeholders(pipeline.PretrainConfig())  # gin/data/*.gin's gs://YOUR_BUCKET paths
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

import tensorflow as tf

import gin
from vatt_gh import cluster, console, trainer
from vatt_gh.data import pipeline, synthetic
from vatt_gh.data.pipeline import INT, REAL, check_fields
from vatt_gh.errors import ConfigError
from vatt_gh.models import build_vatt
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
    precision = gin.get_bindings(build_vatt).get("precision", "float32")
    if precision not in PRECISIONS:
        raise ConfigError(f"build_vatt.precision = {precision!r}: choose one of {PRECISIONS}")
    if optimizer.get("end_learning_rate", 0) > optimizer.get("learning_rate", 1):
        raise ConfigError(
            f"make_optimizer.end_learning_rate = {optimizer['end_learning_rate']!r} is above "
            f"make_optimizer.learning_rate = {optimizer['learning_rate']!r}"
        )


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


def find_vocab(data_dir: str) -> str:
    """The first file named *vocab* in data_dir, or '' when there is none."""
    found = tf.io.gfile.glob(os.path.join(data_dir, "*vocab*"))
    return found[0] if found else ""
