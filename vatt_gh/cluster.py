"""Who is who in a run: the tf.distribute strategy, the one writer, the workers, a barrier.

    strategy = make_strategy("multi_worker", timeout_seconds=900, heartbeat_seconds=60)
    is_chief(strategy)        # this process writes checkpoints, summaries, the operative config
    num_workers(strategy)     # hosts that each run an input pipeline
    task_name(strategy)       # 'worker_1', or 'local' outside a cluster
    chief_barrier(key, chief) # the other workers wait for the chief

`make_strategy` raises `LaunchError` with one line naming the flag at fault.

TensorFlow is imported inside the functions that use it, not at the top: vatt_gh/strategy_flags.py
reads `STRATEGIES` from here when a tool defines its flags, and a tool's --help must not wait
the seconds (about 4 on 2 cores) TensorFlow takes to load.
"""

import os
import socket

from vatt_gh.errors import LaunchError

# The --strategy choices (vatt_gh/strategy_flags.py's --strategy enum), each started below.
STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")


def make_strategy(name: str = "default", tpu=None, timeout_seconds=None, heartbeat_seconds=None):
    """The tf.distribute strategy for --strategy (TF_CONFIG for multi_worker, --tpu for tpu).

    multi_worker: a collective waits at most `timeout_seconds` for the other workers, and a
    worker whose heartbeat is silent for `heartbeat_seconds` is declared dead (None: TF's 10 s).
    """
    if name not in STRATEGIES:
        raise LaunchError(f"--strategy={name!r}: choose one of {STRATEGIES}")
    import tensorflow as tf

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
    import tensorflow as tf
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


def is_chief(strategy) -> bool:
    """Whether this process writes checkpoints, summaries and the operative config.

    Exactly one process does: without a cluster (default, mirrored) this one; multi-worker the
    chief, or worker 0 when TF_CONFIG names no chief; TPU the client. TensorFlow on TPU is
    single-client (one process drives every host of a pod slice; tools/launch_tpu.py starts it
    on worker 0), so a TPUStrategy process is the client when its TPU is local (`--tpu=local`,
    one host) or when it runs on the host of the slice's worker 0; a stray copy on another host
    of the slice does not write.
    """
    import tensorflow as tf

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


def num_workers(strategy) -> int:
    """Hosts that each run an input pipeline and save a checkpoint (1 outside a cluster and on
    TPU, whose single client feeds every host)."""
    import tensorflow as tf

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
    from tensorflow.python.eager import context

    if chief:
        context.context().set_config_key_value(key, "done")
    else:
        context.context().get_config_key_value(key)
