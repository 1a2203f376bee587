"""A Cloud TPU VM batch job that survives preemption (used by tools/launch_tpu.py).

No TensorFlow here: commands are lists of strings, and `run_job` is the restart policy:
  archive the committed tree, create the VM, copy the archive to every host, install the package
  on every host, start training once on worker 0; on exit code 42 (SIGTERM: checkpoint saved)
  rerun; when the VM was preempted, delete, recreate, copy, install and rerun; any other failure
  on a healthy VM stops. Every rerun resumes from the newest checkpoint in the gs:// model_dir.

How TensorFlow runs on a TPU VM, as Google's own TF-on-TPU-VM test configurations do it
(https://github.com/GoogleCloudPlatform/ml-auto-solutions/blob/master/dags/solutions_team/configs/tensorflow/solutionsteam_tf_nightly_supported_config.py,
`export_env_variable` and `all_workers=not is_pod`):
- single host (v2-8, v3-8, v4-8; `tpu-vm-tf-*-pjrt` images): the script runs on the VM with
  `--tpu=local` and `NEXT_PLUGGABLE_DEVICE_USE_C_API=true`,
  `TF_PLUGGABLE_DEVICE_LIBRARY_PATH=/lib/libtpu.so` (TensorFlow drives libtpu through PJRT);
- pod slice (more than one host; `tpu-vm-tf-*-pod-*` images): TensorFlow is single-client. The
  script runs on ONE worker (worker 0) with `--tpu=<TPU name>` and `TPU_LOAD_LIBRARY=0` (the
  client must not grab the local TPU: the runtime on every host serves it). The package is still
  installed on every host: each host's CPU runs its share of the input pipeline.

The environment on each host: the image's own. Google's TensorFlow TPU VM images
(`tpu-vm-tf-2.15.1-pjrt`, `tpu-vm-tf-2.15.1-pod-pjrt`; https://cloud.google.com/tpu/docs/runtimes)
are Ubuntu 22.04 with its Python 3.10 and TensorFlow 2.15.1 built for TPU preinstalled. That
TensorFlow is the only TPU build of 2.15 there is for the host: PyPI's `tensorflow==2.15.1` has
no TPU support and PyPI's `tensorflow-tpu` starts at 2.16.1, so a Python 3.11 virtualenv would
lose the TPU. The recipe therefore installs the package into the image's `python3` (setup.py
accepts 3.10; every pinned package has a cp310 wheel), with the image's TensorFlow pinned so pip
keeps it. `IMAGES` lists the images the launcher knows; any other `--version` is refused.
"""

import dataclasses
import os
import re
import shlex
import subprocess
from typing import Callable, Dict, List, Optional, Sequence

from vatt_gh.errors import PREEMPTED_EXIT_CODE

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REMOTE_DIR = "~/vatt-gh"
ARCHIVE = "/tmp/vatt-gh.tar.gz"
TPU_GIN = "gin/tpu.gin"  # added to every TPU launch (gin_files_on_tpu)
LOST = ("PREEMPTED", "TERMINATED", "MISSING")  # VM states after which it must be recreated
SINGLE_HOST_ENV = {
    "NEXT_PLUGGABLE_DEVICE_USE_C_API": "true",
    "TF_PLUGGABLE_DEVICE_LIBRARY_PATH": "/lib/libtpu.so",
}
POD_ENV = {"TPU_LOAD_LIBRARY": "0"}


@dataclasses.dataclass(frozen=True)
class Image:
    """What a TPU VM image ships (Google's Cloud TPU docs, "TPU software versions")."""

    os: str
    python: str  # the `python3` the recipe installs into
    tensorflow: str  # preinstalled, built for TPU; must equal setup.py's tensorflow pin
    pod: bool  # the multi-host (pod slice) variant


IMAGES = {
    "tpu-vm-tf-2.15.1-pjrt": Image("Ubuntu 22.04", "3.10", "2.15.1", pod=False),
    "tpu-vm-tf-2.15.1-pod-pjrt": Image("Ubuntu 22.04", "3.10", "2.15.1", pod=True),
}
# The paths a run reads from the shipped tree: an uncommitted change there is not sent.
SHIPPED = ("gin", "vatt_gh", "tools", "setup.py")


def cores_of(accelerator_type: str) -> int:
    """The core (or chip) count of an accelerator type such as v3-8, v4-64, v5litepod-16."""
    match = re.fullmatch(r"v\d+[a-z]*-(\d+)", accelerator_type)
    if not match:
        raise ValueError(
            f"--accelerator_type {accelerator_type!r} is not a TPU type such as v3-8 or v3-32"
        )
    return int(match.group(1))


def is_multi_host(accelerator_type: str) -> bool:
    """More than 8 cores: a pod slice of several hosts (v3-8 and v4-8 are one host)."""
    return cores_of(accelerator_type) > 8


@dataclasses.dataclass(frozen=True)
class TpuJob:
    name: str
    zone: str
    model_dir: str
    gin_files: Sequence[str] = ()
    gin_params: Sequence[str] = ()
    project: Optional[str] = None
    accelerator_type: str = "v3-8"
    version: str = "tpu-vm-tf-2.15.1-pjrt"
    spot: bool = True
    max_restarts: int = 20

    @property
    def pod(self) -> bool:
        return is_multi_host(self.accelerator_type)

    def check(self):
        if not self.model_dir.startswith("gs://"):
            raise ValueError(
                f"--model_dir {self.model_dir!r} must be a gs:// path: a "
                "preempted TPU VM loses its disk, and the restart resumes from there"
            )
        if not self.gin_files:
            raise ValueError("give at least one --gin_file (e.g. gin/curriculum.gin)")
        if self.version not in IMAGES:
            raise ValueError(
                f"--version={self.version} is not a TPU VM image this launcher knows: use "
                + " or ".join(IMAGES)
                + " (TensorFlow 2.15.1 for TPU, the version setup.py pins)"
            )
        pod_image = IMAGES[self.version].pod
        if self.pod and not pod_image:
            raise ValueError(
                f"--accelerator_type={self.accelerator_type} is a multi-host pod slice but "
                f"--version={self.version} is a single-host image: use the -pod- variant "
                "(e.g. tpu-vm-tf-2.15.1-pod-pjrt)"
            )
        if pod_image and not self.pod:
            raise ValueError(
                f"--version={self.version} is a pod image but --accelerator_type="
                f"{self.accelerator_type} is a single host: use e.g. tpu-vm-tf-2.15.1-pjrt"
            )

    def gcloud(self, *args):
        project = [f"--project={self.project}"] if self.project else []
        return ["gcloud", "compute", "tpus", "tpu-vm", *args, f"--zone={self.zone}", *project]

    def archive(self):
        return ["git", "-C", REPO, "archive", "--format=tar.gz", f"--output={ARCHIVE}", "HEAD"]

    def create(self):
        return self.gcloud(
            "create",
            self.name,
            f"--accelerator-type={self.accelerator_type}",
            f"--version={self.version}",
            *(["--spot"] if self.spot else []),
        )

    def copy(self):
        return self.gcloud("scp", ARCHIVE, f"{self.name}:vatt-gh.tar.gz", "--worker=all")

    @property
    def image(self) -> Image:
        return IMAGES[self.version]

    def assumption(self) -> str:
        """The line of a dry run that says which image the recipe is for."""
        image = self.image
        return (
            f"# image {self.version}: {image.os}, python3 {image.python} with TensorFlow "
            f"{image.tensorflow} for TPU preinstalled; the package installs into that python3"
        )

    def install(self):
        """Unpack and install on every host into the image's python3, keeping its TensorFlow."""
        remote = (
            f"mkdir -p {REMOTE_DIR} && tar xzf vatt-gh.tar.gz -C {REMOTE_DIR} && "
            f"cd {REMOTE_DIR} && python3 -m pip freeze | grep -i '^tensorflow==' "
            "> /tmp/tf-pins.txt; python3 -m pip install -q -e . -c /tmp/tf-pins.txt"
        )
        return self.gcloud("ssh", self.name, "--worker=all", f"--command={remote}")

    def environment(self) -> Dict[str, str]:
        """The TPU runtime's environment for the training process (see the module docstring)."""
        return dict(POD_ENV if self.pod else SINGLE_HOST_ENV)

    def gin_files_on_tpu(self) -> List[str]:
        """The user's gin files, then gin/tpu.gin (bfloat16 layers, float32 statistics: what
        makes the paper's clips per core fit) unless given; a --gin_param still overrides it."""
        files = list(self.gin_files)
        if not any(os.path.basename(f) == os.path.basename(TPU_GIN) for f in files):
            files.append(TPU_GIN)
        return files

    def train(self):
        """Training, started once, on worker 0."""
        pretrain = [
            "python3",
            "tools/pretrain.py",
            "--strategy=tpu",
            f"--tpu={self.name if self.pod else 'local'}",
            f"--model_dir={self.model_dir}",
            *[f"--gin_file={f}" for f in self.gin_files_on_tpu()],
            *[f"--gin_param={p}" for p in self.gin_params],
        ]
        env = [f"{k}={shlex.quote(v)}" for k, v in self.environment().items()]
        remote = f"cd {REMOTE_DIR} && env {' '.join(env)} {shlex.join(pretrain)}"
        return self.gcloud("ssh", self.name, "--worker=0", f"--command={remote}")

    def state(self):
        return self.gcloud("describe", self.name, "--format=value(state)")

    def delete(self):
        return self.gcloud("delete", self.name, "--quiet")


class JobError(RuntimeError):
    """The job cannot go on (a step failed, or training failed on a healthy VM)."""


def uncommitted(repo: str = REPO) -> List[str]:
    """The files under SHIPPED whose working copy differs from HEAD (changed, staged, deleted
    or new and not ignored): `git archive HEAD` would not send them."""
    out = subprocess.run(
        ["git", "-C", repo, "status", "--porcelain", "--untracked-files=all", "--", *SHIPPED],
        capture_output=True,
        text=True,
    )
    if out.returncode:
        raise JobError(f"{repo!r} is not a git checkout: {out.stderr.strip()}")
    return [line[3:] for line in out.stdout.splitlines() if line.strip()]


def check_committed(repo: str = REPO):
    """JobError naming the uncommitted files a run would silently not get."""
    files = uncommitted(repo)
    if files:
        shown = ", ".join(files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
        raise JobError(
            f"uncommitted changes in {shown}: the TPU VM gets the last commit (git archive "
            "HEAD), not them; commit them (or git stash) and launch again"
        )


def run_job(
    job: TpuJob,
    run: Callable[[list], int],
    vm_state: Callable[[], str],
    say: Callable[[str], None] = print,
    dry_run: bool = False,
):
    """The restart policy. `run(cmd)` returns an exit code; `vm_state()` the VM's state.

    dry_run: `run` only prints; the commands of a first attempt are shown, then it stops.
    """

    def must(cmd):
        code = run(cmd)
        if code:
            raise JobError(f"`{shlex.join(cmd[:5])} ...` failed with exit code {code}")

    def provision():
        must(job.create())
        must(job.copy())
        must(job.install())

    job.check()
    if dry_run:
        say(job.assumption())
    must(job.archive())
    provision()
    if dry_run:
        run(job.train())
        say(
            "# dry run: the commands above were printed, none ran (after exit code "
            f"{PREEMPTED_EXIT_CODE} or a preempted VM the job reruns the last one, recreating "
            "the VM first if it is gone)"
        )
        return
    for attempt in range(job.max_restarts + 1):
        code = run(job.train())
        if code == 0:
            say(f"training finished; TensorBoard: tensorboard --logdir={job.model_dir}")
            return
        state = vm_state()
        say(f"# run {attempt + 1} ended with exit code {code}; TPU VM state {state}")
        if state in LOST:
            run(job.delete())
            provision()
        elif code != PREEMPTED_EXIT_CODE:
            raise JobError(
                f"training failed with exit code {code} on a healthy TPU VM; not "
                "restarting (see the log above)"
            )
    raise JobError(f"gave up after {job.max_restarts} restarts")
