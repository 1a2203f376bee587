"""tools/launch_tpu.py: the commands of a dry run, and the restart policy after preemption."""

import os
import subprocess
import sys

import pytest

from vatt_gh import tpu_job

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(REPO, "tools", "launch_tpu.py")
ARGS = [
    "--name=vatt-both",
    "--zone=europe-west4-a",
    "--accelerator_type=v3-32",
    "--gin_file=gin/both.gin",
    "--gin_param=TRAIN_STEPS=1000",
    "--model_dir=gs://bucket/runs/both",
]


def test_dry_run_prints_the_job():
    proc = subprocess.run(
        [sys.executable, TOOL, *ARGS, "--dry_run"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    lines = [l for l in proc.stdout.splitlines() if l.startswith("$ ")]
    assert lines[0].startswith("$ git -C ") and "archive" in lines[0] and "HEAD" in lines[0]
    assert lines[1].startswith("$ gcloud compute tpus tpu-vm create vatt-both")
    assert "--accelerator-type=v3-32" in lines[1] and "--spot" in lines[1]
    assert "--zone=europe-west4-a" in lines[1] and "--version=tpu-vm-tf-2.15.1" in lines[1]
    assert lines[2].startswith("$ gcloud compute tpus tpu-vm scp") and "--worker=all" in lines[2]
    ssh = lines[3]
    assert ssh.startswith("$ gcloud compute tpus tpu-vm ssh vatt-both --worker=all")
    for part in (
        "tools/pretrain.py --strategy=tpu --tpu=local",
        "--model_dir=gs://bucket/runs/both",
        "--gin_file=gin/both.gin",
        "--gin_param=TRAIN_STEPS=1000",
        "pip install -q -e .",
    ):
        assert part in ssh, part
    assert len(lines) == 4


def test_local_model_dir_is_refused():
    proc = subprocess.run(
        [sys.executable, TOOL, *ARGS[:-1], "--model_dir=/tmp/run", "--dry_run"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "must be a gs:// path" in proc.stderr


JOB = dict(
    name="vatt-both",
    zone="europe-west4-a",
    model_dir="gs://bucket/runs/both",
    gin_files=("gin/both.gin",),
)


@pytest.mark.parametrize(
    "codes,states,want",
    [
        ([0], [], ["archive", "create", "scp", "ssh"]),
        # SIGTERM on a healthy VM (exit 42): rerun on the same VM, which resumes.
        ([42, 0], ["READY"], ["archive", "create", "scp", "ssh", "ssh"]),
        # The VM was preempted: delete, recreate, copy, rerun.
        (
            [255, 0],
            ["PREEMPTED"],
            ["archive", "create", "scp", "ssh", "delete", "create", "scp", "ssh"],
        ),
    ],
)
def test_restart_policy(codes, states, want):
    seen, codes, states = [], list(codes), list(states)

    def fake_run(cmd):
        seen.append("archive" if cmd[0] == "git" else cmd[4])
        return codes.pop(0) if cmd[4] == "ssh" else 0

    tpu_job.run_job(tpu_job.TpuJob(**JOB), fake_run, lambda: states.pop(0), say=lambda m: None)
    assert seen == want


def test_a_real_failure_on_a_healthy_vm_is_not_retried():
    run = lambda cmd: 1 if cmd[0] == "gcloud" and cmd[4] == "ssh" else 0
    with pytest.raises(tpu_job.JobError, match="failed with exit code 1 on a healthy TPU VM"):
        tpu_job.run_job(tpu_job.TpuJob(**JOB), run, lambda: "READY", say=lambda m: None)
