"""The flags that choose and tune the tf.distribute strategy, for every tool that trains.

    define_strategy_flags()        # at import time of the tool
    strategy = make_strategy()     # in main, after the flags are parsed (imports TensorFlow)

    with strategy_flags.peer_failures_as(MyToolError):   # a stalled or dead worker, in one line
        ...

absl and vatt_gh.cluster (TensorFlow-free until a strategy starts) only at import, so a tool's
flag errors and --help stay fast.
"""

import contextlib

from absl import flags

from vatt_gh import cluster  # TensorFlow only inside its functions

FLAGS = flags.FLAGS


def define_strategy_flags():
    """--strategy, --tpu, --collective_timeout, --heartbeat_timeout."""
    flags.DEFINE_enum("strategy", "default", list(cluster.STRATEGIES), "tf.distribute strategy.")
    flags.DEFINE_string("tpu", None, "TPU name or 'local' (TPU VM), with --strategy=tpu.")
    flags.DEFINE_integer(
        "collective_timeout",
        900,
        "multi_worker: seconds a collective may wait "
        "for the other workers before the run fails (a stalled peer), 0 = forever.",
    )
    flags.DEFINE_integer(
        "heartbeat_timeout",
        60,
        "multi_worker: seconds a worker's heartbeat may "
        "be silent before it is declared dead (a beat every half of it); 0 = TF's "
        "default, 10 s.",
    )


def make_strategy():
    """`cluster.make_strategy` with the flags' values (raises `errors.LaunchError`)."""
    return cluster.make_strategy(
        FLAGS.strategy,
        FLAGS.tpu,
        timeout_seconds=FLAGS.collective_timeout or None,
        heartbeat_seconds=FLAGS.heartbeat_timeout or None,
    )


@contextlib.contextmanager
def peer_failures_as(error_type):
    """Under --strategy=multi_worker, re-raise a collective that failed because another worker
    stalled or died (DeadlineExceededError, UnavailableError) as `error_type(one-line message)`
    saying how to resume. Other strategies re-raise it unchanged."""
    import tensorflow as tf  # here: not at the tool's import

    try:
        yield
    except (tf.errors.DeadlineExceededError, tf.errors.UnavailableError) as e:
        if FLAGS.strategy != "multi_worker":
            raise
        raise error_type(
            f"a collective with the other workers failed ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:200]}): a worker stalled or died (--collective_timeout="
            f"{FLAGS.collective_timeout}s, --heartbeat_timeout={FLAGS.heartbeat_timeout}s). "
            "Restart every worker with the same command; the run resumes from the newest "
            "checkpoint."
        ) from None
