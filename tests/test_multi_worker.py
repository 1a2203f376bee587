"""MultiWorkerMirroredStrategy with two worker processes on 127.0.0.1 (docs/tensorflow_notes.md)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from reference import flat_grads
from test_fault_tolerance import (
    RUN,
    STEPS,
    final_state,
    max_difference,
    wait_for_checkpoint,
)
from toy import micro_vatt, random_batch, tape_group_gradients

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HELPER = os.path.join(REPO, "tests", "multi_worker_helper.py")
TIMEOUT = 60  # --collective_timeout of the CLI runs
HEARTBEAT = 60  # the default --heartbeat_timeout (vatt_gh/strategy_flags.py)


def tf_configs():
    sockets = [socket.socket() for _ in range(2)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    return [
        json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}) for i in range(2)
    ]


def start_workers(cmd_for_worker):
    procs = []
    for i, config in enumerate(tf_configs()):
        env = dict(os.environ, TF_CONFIG=config)
        procs.append(
            subprocess.Popen(
                cmd_for_worker(i),
                env=env,
                cwd=REPO,
                text=True,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        )
    return procs


def finish(procs, timeout=900):
    out = [p.communicate(timeout=timeout) for p in procs]
    return [p.returncode for p in procs], [e for _, e in out]


def pretrain_cmd(model_dir):
    return lambda i: [
        sys.executable,
        os.path.join(REPO, "tools", "pretrain.py"),
        "--verbose",  # the log lines these tests read (resumed from)
        "--strategy=multi_worker",
        f"--collective_timeout={TIMEOUT}",
        f"--model_dir={model_dir}",
        f"--gin_param=TRAIN_STEPS={STEPS}",
        *RUN,
    ]


@pytest.mark.slow
def test_two_workers_apply_the_single_device_update(tmp_path):
    codes, errs = finish(start_workers(lambda i: [sys.executable, HELPER, str(tmp_path)]))
    assert codes == [0, 0], errs[0][-3000:] + errs[1][-3000:]
    initial, final = np.load(tmp_path / "initial.npy"), np.load(tmp_path / "final.npy")
    # group:1 (the default): every clip's cosine, 4 per worker, from both workers
    assert np.load(tmp_path / "cosines.npy").shape == (8,)
    # Reference on one device: same weights, whole batch, plain tape, SGD(1).
    vatt = micro_vatt()
    batch = random_batch(8, seed=7)
    vatt(batch, training=False)
    shapes = [v.shape for v in vatt.trainable_variables]
    # every variable, the frozen (random, seed-dependent) word table included: a reference with
    # its own table computes another network's gradient (1.3% apart; 0.01% with the same table)
    frozen = np.load(tmp_path / "initial_frozen.npy")
    for variables, values in (
        (vatt.trainable_variables, initial),
        (vatt.non_trainable_variables, frozen),
    ):
        offset = 0
        for v in variables:
            size = int(np.prod(v.shape))
            v.assign(values[offset : offset + size].reshape(v.shape))
            offset += size
        assert offset == values.size
    ((g_va, g_vt),) = tape_group_gradients(vatt, batch, 1)
    # the step follows VATT's objective (loss_va + loss_vt) / 2: half the sum of the gradients
    want = 0.5 * (flat_grads(g_va, shapes) + flat_grads(g_vt, shapes))
    rel = np.linalg.norm((initial - final) - want) / np.linalg.norm(want)
    assert rel < 2e-3, rel  # float32 rounding amplified by VATT's normalisations (test_trainer)


@pytest.fixture(scope="module")
def uninterrupted_two_workers(tmp_path_factory):
    model_dir = str(tmp_path_factory.mktemp("mw_uninterrupted"))
    codes, errs = finish(start_workers(pretrain_cmd(model_dir)))
    assert codes == [0, 0], errs[0][-3000:] + errs[1][-3000:]
    return final_state(model_dir)


@pytest.mark.slow
def test_stalled_worker_times_out_then_resume_is_exact(tmp_path, uninterrupted_two_workers):
    model_dir = str(tmp_path)
    chief, worker = start_workers(pretrain_cmd(model_dir))
    wait_for_checkpoint(model_dir, chief, others=[worker])
    worker.send_signal(signal.SIGSTOP)  # stalled, not dead: only a timeout can tell
    t0 = time.time()
    _, chief_err = chief.communicate(timeout=TIMEOUT + 240)
    waited = time.time() - t0
    worker.send_signal(signal.SIGKILL)
    worker.communicate()
    assert chief.returncode != 0
    assert "a worker stalled or died" in chief_err, chief_err[-3000:]
    assert "Traceback" not in chief_err
    # The CLI's --heartbeat_timeout (60 s, a beat every 30 s) is honoured: with TF's default
    # (10 s) the chief gave up after 10 s.
    assert HEARTBEAT / 2 - 5 < waited < TIMEOUT + 240, waited
    # Restart both workers with the same command: they resume from the newest checkpoint.
    codes, errs = finish(start_workers(pretrain_cmd(model_dir)))
    assert codes == [0, 0], errs[0][-3000:] + errs[1][-3000:]
    assert "resumed from" in errs[0]
    assert max_difference(final_state(model_dir), uninterrupted_two_workers) == 0.0


@pytest.mark.slow
def test_a_chief_that_fails_before_the_data_ends_the_other_worker(tmp_path):
    """The other worker waits for the chief's synthetic data through the coordination service,
    so the chief's failure ends it at once (it used to poll for the data for 600 s)."""
    bad = "--gin_param=SyntheticData.num_classes=1"  # misaligned clips need two classes
    t0 = time.time()
    codes, errs = finish(
        start_workers(lambda i: pretrain_cmd(str(tmp_path))(i) + ([bad] if i == 0 else [])),
        timeout=400,
    )
    waited = time.time() - t0
    assert (
        codes[0] != 0
        and "error: SyntheticData: misaligned clips need at least two classes" in errs[0]
    ), errs[0][-3000:]
    assert codes[1] != 0 and "a worker stalled or died" in errs[1], errs[1][-3000:]
    assert "Traceback" not in errs[0] + errs[1]
    assert waited < 300, waited
