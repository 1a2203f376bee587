"""What every tool does before its job: parse gin, start the tf.distribute strategy.

Both raise `LaunchError` with one line that names the flag, file or binding at fault.
"""
import os

import gin
import tensorflow as tf

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")


class LaunchError(ValueError):
    """A bad flag or configuration, found before any work starts."""


def parse_gin(files, params=()):
    """Parse gin files then bindings; `include 'gin/...'` resolves from the repository root."""
    import vatt_gh.loop  # noqa: F401  (registers every configurable before parsing)
    gin.add_config_file_search_path(REPO)
    resolved = []
    for path in files:
        for candidate in (path, os.path.join(REPO, path)):
            if os.path.exists(candidate):
                resolved.append(candidate)
                break
        else:
            raise LaunchError(f"--gin_file {path!r} does not exist")
    try:
        gin.parse_config_files_and_bindings(resolved, list(params))
    except (ValueError, KeyError, IOError, SyntaxError) as e:
        raise LaunchError(f"bad gin configuration: {e}") from None


def make_strategy(name: str = "default", tpu=None, timeout_seconds=None):
    """The tf.distribute strategy for --strategy (TF_CONFIG for multi_worker, --tpu for tpu)."""
    if name not in STRATEGIES:
        raise LaunchError(f"--strategy={name!r}: choose one of {STRATEGIES}")
    try:
        if name == "default":
            return tf.distribute.get_strategy()
        if name == "mirrored":
            return tf.distribute.MirroredStrategy()
        if name == "multi_worker":
            if "TF_CONFIG" not in os.environ:
                raise ValueError("TF_CONFIG is not set (it lists the workers and this task)")
            options = tf.distribute.experimental.CommunicationOptions(
                timeout_seconds=timeout_seconds)
            return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        tf.config.set_soft_device_placement(True)  # summaries and host ops next to TPU code
        return tf.distribute.TPUStrategy(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as e:
        raise LaunchError(f"--strategy={name} cannot start: {e}") from None
