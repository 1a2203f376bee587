"""tools/launch_tpu.py: the checks before anything is created, the commands of a dry run, the
environment it assumes, and the restart policy after preemption.

The dry runs use a committed copy of this working tree (the launcher refuses a tree with
uncommitted changes, which a developer's checkout usually has)."""

import ast
import os
import shlex
import shutil
import subprocess
import sys

import pytest
from packaging.specifiers import SpecifierSet

from vatt_gh import tpu_job

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = "gs://bucket/howto100m"
PATHS = [  # gin/data/howto100m.gin's placeholders, filled in
    f"--gin_param=howto100m/SourceConfig.file_pattern='{DATA}/train-*.tfrecord'",
    f"--gin_param=PretrainConfig.vocab_path='{DATA}/vocab.txt'",
    f"--gin_param=build_vatt.word_vectors_path='{DATA}/word_vectors.npy'",
]
COMMON = [
    "--name=vatt-both",
    "--zone=europe-west4-a",
    "--gin_file=gin/both.gin",
    "--gin_param=TRAIN_STEPS=1000",
    *PATHS,
    "--model_dir=gs://bucket/runs/both",
]
POD = ["--accelerator_type=v3-32", "--version=tpu-vm-tf-2.15.1-pod-pjrt"]
SINGLE = ["--accelerator_type=v3-8", "--version=tpu-vm-tf-2.15.1-pjrt"]


def _git(tree, *args):
    subprocess.run(["git", "-C", tree, *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """This working tree's files (tracked and untracked, not ignored), committed in a new repo."""
    out = tmp_path_factory.mktemp("shipped") / "vatt-gh"
    files = subprocess.run(
        ["git", "-C", REPO, "ls-files", "-co", "--exclude-standard"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    for name in files:
        if os.path.isfile(os.path.join(REPO, name)):
            os.makedirs(os.path.dirname(os.path.join(out, name)), exist_ok=True)
            shutil.copy2(os.path.join(REPO, name), os.path.join(out, name))
    _git(out, "init", "-q")
    _git(out, "add", "-A")
    _git(out, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "tree")
    return str(out)


@pytest.fixture
def dry_run(tree):
    def go(args):
        env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
        env["PYTHONPATH"] = tree  # as a user runs it: the launcher keeps TensorFlow quiet
        tool = os.path.join(tree, "tools", "launch_tpu.py")
        return subprocess.run(
            [sys.executable, tool, *args, "--dry_run"],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tree,
            env=env,
        )

    return go


def _commands(stdout):
    return [shlex.split(line[2:]) for line in stdout.splitlines() if line.startswith("$ ")]


@pytest.mark.parametrize("shape", ["single", "pod"])
def test_dry_run_prints_the_recipe(shape, dry_run):
    proc = dry_run(COMMON + (POD if shape == "pod" else SINGLE))
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
    assert "python3 -m pip install -q -e ." in remote and "pretrain.py" not in remote
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
    # bfloat16 layers on TPU: gin/tpu.gin after the user's files, before their --gin_param
    gin = [a for a in pretrain if a.startswith(("--gin_file=", "--gin_param="))]
    assert gin.index("--gin_file=gin/tpu.gin") == gin.index("--gin_file=gin/both.gin") + 1
    assert all(a.startswith("--gin_param=") for a in gin[gin.index("--gin_file=gin/tpu.gin") + 1 :])


def test_tpu_gin_is_added_once():
    job = tpu_job.TpuJob("n", "z", "gs://b/r", gin_files=("gin/both.gin", "gin/tpu.gin"))
    assert job.gin_files_on_tpu() == ["gin/both.gin", "gin/tpu.gin"]
    job = tpu_job.TpuJob("n", "z", "gs://b/r", gin_files=("gin/both.gin",))
    assert job.gin_files_on_tpu() == ["gin/both.gin", "gin/tpu.gin"]
    assert os.path.isfile(os.path.join(REPO, tpu_job.TPU_GIN))


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
def test_image_and_accelerator_must_agree(args, message, dry_run):
    proc = dry_run(COMMON + args)
    assert proc.returncode != 0
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert message in lines[-1] and lines[-1].startswith("error: ")
    assert "$ " not in proc.stdout


def test_local_model_dir_is_refused(dry_run):
    proc = dry_run(COMMON[:-1] + SINGLE + ["--model_dir=/tmp/run"])
    assert proc.returncode != 0
    assert "must be a gs:// path" in proc.stderr


def _declared():
    """setup.py's python_requires and tensorflow pin, read from its source."""
    with open(os.path.join(REPO, "setup.py")) as f:
        module = ast.parse(f.read())
    found = {}
    for node in ast.walk(module):
        if isinstance(node, ast.keyword) and node.arg == "python_requires":
            found["python"] = ast.literal_eval(node.value)
        if isinstance(node, ast.Constant) and str(node.value).startswith("tensorflow=="):
            found["tensorflow"] = node.value.split("==")[1]
    return found


@pytest.mark.parametrize("shape", ["single", "pod"])
def test_the_assumed_image_has_a_python_and_tensorflow_the_package_accepts(shape, dry_run):
    proc = dry_run(COMMON + (POD if shape == "pod" else SINGLE))
    assert proc.returncode == 0, proc.stderr
    (line,) = [l for l in proc.stdout.splitlines() if l.startswith("# image ")]
    image = (POD if shape == "pod" else SINGLE)[1].split("=")[1]
    assert line.startswith(f"# image {image}: Ubuntu 22.04, python3 ")
    python = line.split("python3 ")[1].split()[0]
    tensorflow = line.split("TensorFlow ")[1].split()[0]
    declared = _declared()
    assert python in SpecifierSet(declared["python"]), (python, declared["python"])
    assert tensorflow == declared["tensorflow"]
    # The package goes into that python3, and pip keeps the image's TensorFlow.
    install = _commands(proc.stdout)[3]
    (remote,) = [a[len("--command=") :] for a in install if a.startswith("--command=")]
    assert "python3 -m pip freeze | grep -i '^tensorflow=='" in remote
    assert "python3 -m pip install -q -e . -c /tmp/tf-pins.txt" in remote


def test_an_image_of_another_tensorflow_is_refused(dry_run):
    proc = dry_run(COMMON + ["--accelerator_type=v3-8", "--version=tpu-vm-tf-2.16.1-pjrt"])
    assert proc.returncode != 0 and "$ " not in proc.stdout
    assert "is not a TPU VM image this launcher knows" in proc.stderr.splitlines()[-1]


def test_uncommitted_changes_stop_before_any_command(tree, dry_run):
    data_gin = os.path.join(tree, "gin", "data", "howto100m.gin")
    with open(data_gin, "a") as f:
        f.write("PretrainConfig.num_frames = 16\n")
    try:
        proc = dry_run(COMMON + SINGLE)
    finally:
        _git(tree, "checkout", "--", "gin/data/howto100m.gin")
    assert proc.returncode != 0
    assert "$ " not in proc.stdout and "# image" not in proc.stdout
    (line,) = [l for l in proc.stderr.splitlines() if l.strip()]
    assert line.startswith("error: uncommitted changes in gin/data/howto100m.gin: ")
    assert "git archive HEAD" in line


def test_a_new_gin_file_not_committed_stops_the_launch(tree, dry_run):
    new = os.path.join(tree, "gin", "mine.gin")
    with open(new, "w") as f:
        f.write("include 'gin/both.gin'\n")
    try:
        proc = dry_run(
            [a if a != "--gin_file=gin/both.gin" else "--gin_file=gin/mine.gin" for a in COMMON]
            + SINGLE
        )
    finally:
        os.remove(new)
    assert proc.returncode != 0 and "$ " not in proc.stdout
    assert "uncommitted changes in gin/mine.gin" in proc.stderr


@pytest.mark.parametrize("missing", range(len(PATHS)))
def test_a_placeholder_path_stops_before_any_command(missing, dry_run):
    """pretrain.py's one line, before the VM exists (it used to fail on the VM)."""
    proc = dry_run([a for a in COMMON if a != PATHS[missing]] + SINGLE)
    assert proc.returncode != 0
    assert "$ " not in proc.stdout
    (line,) = [l for l in proc.stderr.splitlines() if l.strip()]
    placeholder = {0: "howto100m/train-*.tfrecord", 1: "howto100m/vocab.txt"}.get(
        missing, "howto100m/word_vectors.npy"
    )
    assert line.startswith(f"error: no data: 'gs://YOUR_BUCKET/{placeholder}' is a placeholder")


def test_the_demo_needs_no_data_paths(dry_run):
    args = [a for a in COMMON if a not in PATHS] + ["--gin_file=gin/demo.gin", *SINGLE]
    proc = dry_run(args)
    assert proc.returncode == 0, proc.stderr


def test_readme_tpu_command_has_the_launchers_environment(dry_run):
    """README's standalone `--tpu=local` command carries the single-host PJRT environment the
    launcher gives training."""
    proc = dry_run(COMMON + SINGLE)
    train = _commands(proc.stdout)[-1]
    (remote,) = [a[len("--command=") :] for a in train if a.startswith("--command=")]
    words = shlex.split(remote)
    launcher = words[words.index("env") + 1 : words.index("python3")]
    with open(os.path.join(REPO, "README.md")) as f:
        lines = [l.split() for l in f if "tools/pretrain.py" in l and "--tpu=local" in l]
    assert lines, "README.md has no standalone --tpu=local command"
    for words in lines:
        env = words[: words.index("python")]
        assert env == launcher, (env, launcher)


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
