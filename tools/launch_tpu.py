r"""Run pre-training as a Cloud TPU VM batch job that survives preemption.

    python tools/launch_tpu.py --name=vatt-both --zone=europe-west4-a --accelerator_type=v3-32 \
        --gin_file=gin/both.gin --model_dir=gs://BUCKET/runs/both --dry_run

Steps (printed with --dry_run, run with gcloud otherwise):
  1. create a (spot) TPU VM with TensorFlow 2.15.1,
  2. copy this checkout's committed tree (git archive HEAD) to every worker,
  3. install it (keeping the image's TensorFlow) and run
     `tools/pretrain.py --strategy=tpu --tpu=local` on all workers,
  4. on exit code 42 (SIGTERM: checkpoint saved) rerun; if the VM was preempted, delete it,
     recreate it, copy and rerun; every run resumes from the newest checkpoint in --model_dir.
--model_dir must be on GCS: a preempted TPU VM loses its disk. TensorBoard: point it at the
bucket (`tensorboard --logdir=gs://BUCKET/runs`).
"""
import os
import shlex
import subprocess
import sys

from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PREEMPTED_EXIT_CODE = 42  # vatt_gh.loop.PREEMPTED_EXIT_CODE (not imported: no TF needed here)

flags.DEFINE_string("name", None, "TPU VM name.")
flags.DEFINE_string("zone", None, "GCP zone, e.g. europe-west4-a.")
flags.DEFINE_string("project", None, "GCP project (default: gcloud's).")
flags.DEFINE_string("accelerator_type", "v3-8", "TPU type, e.g. v3-8, v3-32, v4-64.")
flags.DEFINE_string("version", "tpu-vm-tf-2.15.1-pjrt",
                    "TPU VM runtime (use the -pod- variant for multi-host slices).")
flags.DEFINE_bool("spot", True, "Spot (preemptible) capacity.")
flags.DEFINE_multi_string("gin_file", [], "Gin files for tools/pretrain.py.")
flags.DEFINE_multi_string("gin_param", [], "Gin bindings for tools/pretrain.py.")
flags.DEFINE_string("model_dir", None, "gs:// run directory (checkpoints, TensorBoard).")
flags.DEFINE_integer("max_restarts", 20, "Give up after this many restarts.")
flags.DEFINE_bool("dry_run", False, "Print the commands instead of running them.")
flags.mark_flags_as_required(["name", "zone", "model_dir"])
FLAGS = flags.FLAGS

REMOTE_DIR = "~/vatt-gh"
ARCHIVE = "/tmp/vatt-gh.tar.gz"


def gcloud(*args):
    project = [f"--project={FLAGS.project}"] if FLAGS.project else []
    return ["gcloud", "compute", "tpus", "tpu-vm", *args, f"--zone={FLAGS.zone}", *project]


def create_command():
    return gcloud("create", FLAGS.name, f"--accelerator-type={FLAGS.accelerator_type}",
                  f"--version={FLAGS.version}", *(["--spot"] if FLAGS.spot else []))


def archive_command():
    return ["git", "-C", REPO, "archive", "--format=tar.gz", f"--output={ARCHIVE}", "HEAD"]


def copy_command():
    return gcloud("scp", ARCHIVE, f"{FLAGS.name}:vatt-gh.tar.gz", "--worker=all")


def train_command():
    pretrain = ["python3", "tools/pretrain.py", "--strategy=tpu", "--tpu=local",
                f"--model_dir={FLAGS.model_dir}",
                *[f"--gin_file={f}" for f in FLAGS.gin_file],
                *[f"--gin_param={p}" for p in FLAGS.gin_param]]
    remote = (f"mkdir -p {REMOTE_DIR} && tar xzf vatt-gh.tar.gz -C {REMOTE_DIR} && "
              f"cd {REMOTE_DIR} && pip freeze | grep -i '^tensorflow' > /tmp/tf-pins.txt; "
              f"pip install -q -e . -c /tmp/tf-pins.txt && {shlex.join(pretrain)}")
    return gcloud("ssh", FLAGS.name, "--worker=all", f"--command={remote}")


def state_command():
    return gcloud("describe", FLAGS.name, "--format=value(state)")


def delete_command():
    return gcloud("delete", FLAGS.name, "--quiet")


def run(cmd):
    """Run (or print) one command; returns its exit code."""
    print("$ " + shlex.join(cmd), flush=True)
    if FLAGS.dry_run:
        return 0
    return subprocess.run(cmd).returncode


def must(cmd):
    code = run(cmd)
    if code:
        raise SystemExit(f"error: `{shlex.join(cmd[:5])} ...` failed with exit code {code}")


def state():
    if FLAGS.dry_run:
        return "READY"
    out = subprocess.run(state_command(), capture_output=True, text=True)
    return out.stdout.strip() or "MISSING"


def main(argv):
    del argv
    if not FLAGS.model_dir.startswith("gs://"):
        raise SystemExit(f"error: --model_dir {FLAGS.model_dir!r} must be a gs:// path: a "
                         "preempted TPU VM loses its disk, and the restart resumes from there")
    if not FLAGS.gin_file:
        raise SystemExit("error: give at least one --gin_file (e.g. gin/curriculum.gin)")
    must(archive_command())
    must(create_command())
    must(copy_command())
    for attempt in range(FLAGS.max_restarts + 1):
        code = run(train_command())
        if code == 0:
            print("training finished; TensorBoard: tensorboard --logdir=" + FLAGS.model_dir)
            return
        vm_state = state()
        print(f"# run {attempt + 1} ended with exit code {code}; TPU VM state {vm_state}")
        if vm_state in ("PREEMPTED", "TERMINATED", "MISSING"):
            run(delete_command())
            must(create_command())
            must(copy_command())
        elif code != PREEMPTED_EXIT_CODE:
            raise SystemExit(f"error: training failed with exit code {code} on a healthy TPU "
                             "VM; not restarting (see the log above)")
    raise SystemExit(f"error: gave up after {FLAGS.max_restarts} restarts")


if __name__ == "__main__":
    app.run(main)
