"""A Cloud TPU VM batch job that survives preemption (used by tools/launch_tpu.py).

No TensorFlow here: commands are lists of strings, and `run_job` is the restart policy:
  archive the committed tree, create the VM, copy, run `tools/pretrain.py --strategy=tpu
  --tpu=local` on all workers; on exit code 42 (SIGTERM: checkpoint saved) rerun; when the VM
  was preempted, delete, recreate, copy and rerun; any other failure on a healthy VM stops.
Every rerun resumes from the newest checkpoint in the gs:// model_dir.
"""

import dataclasses
import os
import shlex
from typing import Callable, Optional, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PREEMPTED_EXIT_CODE = (
    42  # vatt_gh.checkpoints.PREEMPTED_EXIT_CODE (not imported: no TF needed here)
)
REMOTE_DIR = "~/vatt-gh"
ARCHIVE = "/tmp/vatt-gh.tar.gz"
LOST = ("PREEMPTED", "TERMINATED", "MISSING")  # VM states after which it must be recreated


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

    def check(self):
        if not self.model_dir.startswith("gs://"):
            raise ValueError(
                f"--model_dir {self.model_dir!r} must be a gs:// path: a "
                "preempted TPU VM loses its disk, and the restart resumes from there"
            )
        if not self.gin_files:
            raise ValueError("give at least one --gin_file (e.g. gin/curriculum.gin)")

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

    def train(self):
        pretrain = [
            "python3",
            "tools/pretrain.py",
            "--strategy=tpu",
            "--tpu=local",
            f"--model_dir={self.model_dir}",
            *[f"--gin_file={f}" for f in self.gin_files],
            *[f"--gin_param={p}" for p in self.gin_params],
        ]
        remote = (
            f"mkdir -p {REMOTE_DIR} && tar xzf vatt-gh.tar.gz -C {REMOTE_DIR} && "
            f"cd {REMOTE_DIR} && pip freeze | grep -i '^tensorflow' > /tmp/tf-pins.txt; "
            f"pip install -q -e . -c /tmp/tf-pins.txt && {shlex.join(pretrain)}"
        )
        return self.gcloud("ssh", self.name, "--worker=all", f"--command={remote}")

    def state(self):
        return self.gcloud("describe", self.name, "--format=value(state)")

    def delete(self):
        return self.gcloud("delete", self.name, "--quiet")


class JobError(RuntimeError):
    """The job cannot go on (a step failed, or training failed on a healthy VM)."""


def run_job(
    job: TpuJob,
    run: Callable[[list], int],
    vm_state: Callable[[], str],
    say: Callable[[str], None] = print,
):
    """The restart policy. `run(cmd)` returns an exit code; `vm_state()` the VM's state."""

    def must(cmd):
        code = run(cmd)
        if code:
            raise JobError(f"`{shlex.join(cmd[:5])} ...` failed with exit code {code}")

    job.check()
    must(job.archive())
    must(job.create())
    must(job.copy())
    for attempt in range(job.max_restarts + 1):
        code = run(job.train())
        if code == 0:
            say(f"training finished; TensorBoard: tensorboard --logdir={job.model_dir}")
            return
        state = vm_state()
        say(f"# run {attempt + 1} ended with exit code {code}; TPU VM state {state}")
        if state in LOST:
            run(job.delete())
            must(job.create())
            must(job.copy())
        elif code != PREEMPTED_EXIT_CODE:
            raise JobError(
                f"training failed with exit code {code} on a healthy TPU VM; not "
                "restarting (see the log above)"
            )
    raise JobError(f"gave up after {job.max_restarts} restarts")
