"""Who is who in a run: the tf.distribute strategy, the chief, the workers, a barrier.

    strategy = make_strategy("multi_worker", timeout_seconds=900, heartbeat_seconds=60)
    is_chief(strategy)        # this task writes checkpoints and summaries
    num_workers(strategy)     # hosts that each run an input pipeline
    task_name(strategy)       # 'worker_1', or 'local' outside a cluster
    chief_barrier(key, chief) # the other workers wait for the chief

`make_strategy` raises `LaunchError` with one line naming the flag at fault.
"""

import os

import tensorflow as tf
from tensorflow.python.eager import context
from tensorflow.tsl.protobuf import coordination_config_pb2

from vatt_gh.errors import LaunchError


def make_strategy(name: str = "default", tpu=None, timeout_seconds=None, heartbeat_seconds=None):
    """The tf.distribute strategy for --strategy (TF_CONFIG for multi_worker, --tpu for tpu).

    multi_worker: a collective waits at most `timeout_seconds` for the other workers, and a
    worker whose heartbeat is silent for `heartbeat_seconds` is declared dead (None: TF's 10 s).
    """
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
        if name == "tpu":
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
            tf.config.set_soft_device_placement(True)  # summaries and host ops next to TPU code
            return tf.distribute.TPUStrategy(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as e:
        raise LaunchError(f"--strategy={name} cannot start: {e}") from None
    raise LaunchError(f"--strategy={name!r}: no such strategy")


def _configure_heartbeat(seconds):
    """The coordination service MultiWorkerMirroredStrategy would start, with another heartbeat
    timeout than TF's 10 s (a beat every 5 s): more slack for hosts that tf.data and tracing
    keep busy, a stall still caught within the timeout. TF 2.15 exposes it only on the eager
    context; the strategy keeps a service configured before it is created."""
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


def is_chief(strategy) -> bool:
    """Whether this task writes checkpoints and summaries (the chief, or worker 0)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if (
        resolver is None
        or not resolver.task_type
        or isinstance(strategy, tf.distribute.TPUStrategy)
    ):
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "chief" or (
        not has_chief and resolver.task_type == "worker" and resolver.task_id == 0
    )


def num_workers(strategy) -> int:
    """Hosts that each run an input pipeline and write a checkpoint (1 outside a cluster)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or isinstance(strategy, tf.distribute.TPUStrategy):
        return 1
    spec = resolver.cluster_spec().as_dict()
    return max(1, sum(len(tasks) for job, tasks in spec.items() if job in ("chief", "worker")))


def task_name(strategy) -> str:
    """'<task_type>_<task_id>' (e.g. 'worker_1'), or 'local' outside a cluster."""
    resolver = getattr(strategy, "cluster_resolver", None)
    return (
        f"{resolver.task_type}_{resolver.task_id}" if resolver and resolver.task_type else "local"
    )


def chief_barrier(key: str, chief: bool):
    """Multi-worker: the chief announces `key` (it has finished something all workers need);
    every other worker blocks until then. If the chief dies first, the workers get an
    UnavailableError instead of waiting forever (the chief hosts the coordination service)."""
    if chief:
        context.context().set_config_key_value(key, "done")
    else:
        context.context().get_config_key_value(key)
