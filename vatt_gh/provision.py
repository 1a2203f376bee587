"""What a run needs before its first step: a writable run directory and its data.

    check_writable(model_dir)                         # or ConfigError naming it
    config = data_config(model_dir, SyntheticData())  # the demo: records made on first use

Every failure is a `ConfigError` with one line naming the flag, file or gin binding at fault.
"""

import dataclasses
import os
import uuid
from typing import Optional

import tensorflow as tf

import gin
from vatt_gh import cluster
from vatt_gh.data import pipeline, synthetic
from vatt_gh.errors import ConfigError


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
    config = pipeline.PretrainConfig()
    if synthetic_data is not None:
        out_dir = os.path.join(model_dir, "data")
        marker = os.path.join(out_dir, "metadata.json")
        if chief and not tf.io.gfile.exists(marker):
            tmp_dir = f"{out_dir}.tmp-{os.getpid()}"
            try:
                synthetic.write_synthetic(tmp_dir, **dataclasses.asdict(synthetic_data))
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
        source = pipeline.SourceConfig(
            file_pattern=os.path.join(out_dir, "synthetic-*.tfrecord"), name="synthetic"
        )
        config = dataclasses.replace(config, sources=(source,), vocab_path=find_vocab(out_dir))
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
