"""What every tool does before its job: parse gin, start the tf.distribute strategy.

Both raise `LaunchError` with one line that names the flag, file or binding at fault.
"""

import os

import tensorflow as tf

import gin
from vatt_gh.strategy_flags import STRATEGIES

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


def make_strategy(name: str = "default", tpu=None, timeout_seconds=None, heartbeat_seconds=None):
    """The tf.distribute strategy for --strategy (TF_CONFIG for multi_worker, --tpu for tpu).

    multi_worker: a collective waits at most `timeout_seconds` for the other workers, and a
    worker whose heartbeat is silent for `heartbeat_seconds` is declared dead (None: TF's 10 s).
    """
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
            if heartbeat_seconds:
                _configure_heartbeat(heartbeat_seconds)
            options = tf.distribute.experimental.CommunicationOptions(
                timeout_seconds=timeout_seconds
            )
            return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        tf.config.set_soft_device_placement(True)  # summaries and host ops next to TPU code
        return tf.distribute.TPUStrategy(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as e:
        raise LaunchError(f"--strategy={name} cannot start: {e}") from None


def _configure_heartbeat(seconds):
    """The coordination service MultiWorkerMirroredStrategy would start, with another heartbeat
    timeout than TF's 10 s (a beat every 5 s): more slack for hosts that tf.data and tracing
    keep busy, a stall still caught within the timeout. TF 2.15 exposes it only on the eager
    context; the strategy keeps a service configured before it is created."""
    from tensorflow.python.eager import context
    from tensorflow.tsl.protobuf import coordination_config_pb2

    spec = tf.distribute.cluster_resolver.TFConfigClusterResolver().cluster_spec()
    jobs = [job for job in ("chief", "worker") if job in spec.jobs]
    if not jobs:
        raise ValueError("TF_CONFIG lists no 'chief' or 'worker' job")
    context.context().configure_coordination_service(
        service_type="standalone",
        service_leader=f"/job:{jobs[0]}/replica:0/task:0",
        heartbeat_timeout_in_ms=int(seconds * 1000),
        coordinated_jobs=[
            coordination_config_pb2.CoordinatedJob(name=job, num_tasks=spec.num_tasks(job))
            for job in jobs
        ],
    )


def chief_barrier(key: str, chief: bool):
    """Multi-worker: the chief announces `key` (it has finished something all workers need);
    every other worker blocks until then. If the chief dies first, the workers get an
    UnavailableError instead of waiting forever (the chief hosts the coordination service)."""
    from tensorflow.python.eager import context

    if chief:
        context.context().set_config_key_value(key, "done")
    else:
        context.context().get_config_key_value(key)
