"""tools/launch_tpu.py: the commands of a dry run, and the restart policy after preemption."""

import os
import shlex
import subprocess
import sys

import pytest

from vatt_gh import tpu_job

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(REPO, "tools", "launch_tpu.py")
COMMON = [
    "--name=vatt-both",
    "--zone=europe-west4-a",
    "--gin_file=gin/both.gin",
    "--gin_param=TRAIN_STEPS=1000",
    "--model_dir=gs://bucket/runs/both",
]
POD = ["--accelerator_type=v3-32", "--version=tpu-vm-tf-2.15.1-pod-pjrt"]
SINGLE = ["--accelerator_type=v3-8", "--version=tpu-vm-tf-2.15.1-pjrt"]


def _dry_run(args):
    return subprocess.run(
        [sys.executable, TOOL, *args, "--dry_run"], capture_output=True, text=True, timeout=60
    )


def _commands(stdout):
    return [shlex.split(line[2:]) for line in stdout.splitlines() if line.startswith("$ ")]


@pytest.mark.parametrize("shape", ["single", "pod"])
def test_dry_run_prints_the_recipe(shape):
    proc = _dry_run(COMMON + (POD if shape == "pod" else SINGLE))
    assert proc.returncode == 0, proc.stderr
    assert "training finished" not in proc.stdout
    assert "none ran" in proc.stdout
    archive, create, copy, install, train = _commands(proc.stdout)
    assert archive[:2] == ["git", "-C"] and "archive" in archive and archive[-1] == "HEAD"
    assert create[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "create", "vatt-both"]
    want_type = "v3-32" if shape == "pod" else "v3-8"
    assert f"--accelerator-type={want_type}" in create and "--spot" in create
    assert "--zone=europe-west4-a" in create
    assert copy[4] == "scp" and "--worker=all" in copy
    # The package goes on every host (each host's CPU runs its input pipeline)...
    assert install[4:6] == ["ssh", "vatt-both"] and "--worker=all" in install
    (remote,) = [a[len("--command=") :] for a in install if a.startswith("--command=")]
    assert "pip install -q -e ." in remote and "pretrain.py" not in remote
    # ... but training starts once, on worker 0, with the TPU runtime's environment.
    assert train[4:6] == ["ssh", "vatt-both"] and "--worker=0" in train
    assert "--worker=all" not in train
    (remote,) = [a[len("--command=") :] for a in train if a.startswith("--command=")]
    words = shlex.split(remote)
    env = dict(w.split("=", 1) for w in words[words.index("env") + 1 : words.index("python3")])
    pretrain = words[words.index("python3") :]
    if shape == "pod":
        assert env == {"TPU_LOAD_LIBRARY": "0"}
        assert "--tpu=vatt-both" in pretrain
    else:
        assert env == {
            "NEXT_PLUGGABLE_DEVICE_USE_C_API": "true",
            "TF_PLUGGABLE_DEVICE_LIBRARY_PATH": "/lib/libtpu.so",
        }
        assert "--tpu=local" in pretrain
    for part in (
        "tools/pretrain.py",
        "--strategy=tpu",
        "--model_dir=gs://bucket/runs/both",
        "--gin_file=gin/both.gin",
        "--gin_param=TRAIN_STEPS=1000",
    ):
        assert part in pretrain, part


@pytest.mark.parametrize(
    "args,message",
    [
        (
            ["--accelerator_type=v3-32", "--version=tpu-vm-tf-2.15.1-pjrt"],
            "is a multi-host pod slice but --version=tpu-vm-tf-2.15.1-pjrt is a single-host",
        ),
        (
            ["--accelerator_type=v4-8", "--version=tpu-vm-tf-2.15.1-pod-pjrt"],
            "is a pod image but --accelerator_type=v4-8 is a single host",
        ),
        (["--accelerator_type=tpu32", *SINGLE[1:]], "is not a TPU type"),
    ],
)
def test_image_and_accelerator_must_agree(args, message):
    proc = _dry_run(COMMON + args)
    assert proc.returncode != 0
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert message in lines[-1] and lines[-1].startswith("error: ")
    assert "$ " not in proc.stdout


def test_local_model_dir_is_refused():
    proc = _dry_run(COMMON[:-1] + SINGLE + ["--model_dir=/tmp/run"])
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
        ([0], [], ["archive", "create", "scp", "install", "train"]),
        # SIGTERM on a healthy VM (exit 42): rerun on the same VM, which resumes.
        ([42, 0], ["READY"], ["archive", "create", "scp", "install", "train", "train"]),
        # The VM was preempted: delete, recreate, copy, install, rerun.
        (
            [255, 0],
            ["PREEMPTED"],
            ["archive", "create", "scp", "install", "train"]
            + ["delete", "create", "scp", "install", "train"],
        ),
    ],
)
def test_restart_policy(codes, states, want):
    seen, codes, states = [], list(codes), list(states)

    def fake_run(cmd):
        seen.append(_name(cmd))
        return codes.pop(0) if seen[-1] == "train" else 0

    tpu_job.run_job(tpu_job.TpuJob(**JOB), fake_run, lambda: states.pop(0), say=lambda m: None)
    assert seen == want


def _name(cmd):
    if cmd[0] == "git":
        return "archive"
    if cmd[4] == "ssh":
        return "train" if "--worker=0" in cmd else "install"
    return cmd[4]


def test_a_real_failure_on_a_healthy_vm_is_not_retried():
    run = lambda cmd: 1 if _name(cmd) == "train" else 0
    with pytest.raises(tpu_job.JobError, match="failed with exit code 1 on a healthy TPU VM"):
        tpu_job.run_job(tpu_job.TpuJob(**JOB), run, lambda: "READY", say=lambda m: None)
