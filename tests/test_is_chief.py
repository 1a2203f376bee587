"""is_chief: exactly one process writes checkpoints, summaries and the operative config, for
every strategy. Cluster specs are faked (no TPU, no second host needed)."""

import json
import socket
import types

import pytest
import tensorflow as tf

from vatt_gh.cluster import is_chief


def test_one_process_strategies_write():
    assert is_chief(tf.distribute.get_strategy())
    assert is_chief(tf.distribute.MirroredStrategy(["/cpu:0"]))


def _tf_config_strategy(monkeypatch, cluster, task_type, index):
    config = {"cluster": cluster, "task": {"type": task_type, "index": index}}
    monkeypatch.setenv("TF_CONFIG", json.dumps(config))
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    return types.SimpleNamespace(cluster_resolver=resolver)  # MultiWorkerMirroredStrategy's


@pytest.mark.parametrize(
    "cluster,writer",
    [
        ({"worker": ["h0:1", "h1:1", "h2:1"]}, ("worker", 0)),
        ({"chief": ["c:1"], "worker": ["h0:1", "h1:1"]}, ("chief", 0)),
    ],
)
def test_multi_worker_exactly_one_writer(monkeypatch, cluster, writer):
    tasks = [(job, i) for job, hosts in cluster.items() for i in range(len(hosts))]
    writers = [t for t in tasks if is_chief(_tf_config_strategy(monkeypatch, cluster, *t))]
    assert writers == [writer]


def _tpu_strategy(workers):
    """A TPUStrategy object whose resolver reports `workers` (what --tpu=<name> resolves to)."""
    resolver = types.SimpleNamespace(
        task_type="worker",
        task_id=0,  # TPUClusterResolver says worker 0 in every process
        cluster_spec=lambda: tf.train.ClusterSpec({"worker": workers} if workers else {}),
    )
    strategy = object.__new__(tf.distribute.TPUStrategy)
    strategy._extended = types.SimpleNamespace(_tpu_cluster_resolver=resolver)
    assert strategy.cluster_resolver is resolver
    return strategy


def _own_address():
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        pytest.skip("this machine's hostname does not resolve")


def test_tpu_local_and_single_host_write():
    assert is_chief(_tpu_strategy([]))  # --tpu=local: an empty cluster spec
    assert is_chief(_tpu_strategy(["10.0.0.7:8470"]))


def test_tpu_pod_only_the_client_on_worker_0_writes():
    here, elsewhere = _own_address(), "10.255.255.1"
    assert is_chief(_tpu_strategy([f"{here}:8470", f"{elsewhere}:8470"]))
    assert not is_chief(_tpu_strategy([f"{elsewhere}:8470", f"{here}:8470"]))
