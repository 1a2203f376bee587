r"""Run pre-training as a Cloud TPU VM batch job that survives preemption.

    python tools/launch_tpu.py --name=vatt-both --zone=europe-west4-a --accelerator_type=v3-32 \
        --version=tpu-vm-tf-2.15.1-pod-pjrt --gin_file=gin/both.gin \
        --model_dir=gs://BUCKET/runs/both --dry_run

Before anything is created it checks, with one line each: the image and accelerator type agree;
nothing the run reads (gin/, vatt_gh/, tools/, setup.py) has uncommitted changes (the VMs get
the committed tree, `git archive HEAD`); the gin files parse and the run's data, vocabulary and
word-vector paths are not gin/data's gs://YOUR_BUCKET placeholders (pretrain.py's message).
Then it creates a (spot) TPU VM on a TensorFlow 2.15.1 image (Ubuntu 22.04, Python 3.10, the TPU
build of TensorFlow preinstalled), copies the committed tree to every host and installs it into
the image's python3 (keeping that TensorFlow), then starts training once, on worker 0: single
host (v3-8, v4-8, `-pjrt` image) with `--tpu=local` and the PJRT environment, pod slice (`-pod-`
image) with `--tpu=<name>` and `TPU_LOAD_LIBRARY=0`; it restarts after preemption (see
vatt_gh/tpu_job.py for the recipe, its source and the policy). --model_dir must be on GCS.
--dry_run prints the image it assumes and every command in full (with its environment), and runs
none of them. TensorBoard: `.venv/bin/tensorboard --logdir=gs://BUCKET/runs`.
"""

import shlex
import subprocess

from absl import app, flags

from vatt_gh import console, tpu_job

flags.DEFINE_string("name", None, "TPU VM name.")
flags.DEFINE_string("zone", None, "GCP zone, e.g. europe-west4-a.")
flags.DEFINE_string("project", None, "GCP project (default: gcloud's).")
flags.DEFINE_string("accelerator_type", "v3-8", "TPU type, e.g. v3-8, v3-32, v4-64.")
flags.DEFINE_string(
    "version",
    "tpu-vm-tf-2.15.1-pjrt",
    "TPU VM image: tpu-vm-tf-2.15.1-pjrt (one host) or tpu-vm-tf-2.15.1-pod-pjrt (pod slice).",
)
flags.DEFINE_bool("spot", True, "Spot (preemptible) capacity.")
flags.DEFINE_multi_string("gin_file", [], "Gin files for tools/pretrain.py.")
flags.DEFINE_multi_string("gin_param", [], "Gin bindings for tools/pretrain.py.")
flags.DEFINE_string("model_dir", None, "gs:// run directory (checkpoints, TensorBoard).")
flags.DEFINE_integer("max_restarts", 20, "Give up after this many restarts.")
flags.DEFINE_bool("dry_run", False, "Print the commands instead of running them.")
flags.mark_flags_as_required(["name", "zone", "model_dir"])
console.define_verbose_flag()
flags.adopt_module_key_flags(console)  # --verbose, listed by --help
FLAGS = flags.FLAGS


def check_run_config():
    """The run's gin as pretrain.py will read it on the VM: it parses, and its data,
    vocabulary and word-vector paths are not placeholders (the demo's synthetic data is made
    on the VM). Imports TensorFlow: after console.quiet."""
    import gin
    from vatt_gh import configs, provision
    from vatt_gh.data.configs import PretrainConfig
    from vatt_gh.errors import ConfigError

    configs.parse_gin(FLAGS.gin_file, FLAGS.gin_param)
    try:
        synthetic = gin.query_parameter("pretrain.synthetic_data")
    except ValueError:  # not bound
        synthetic = None
    if synthetic is not None:
        return
    try:
        config = PretrainConfig()
    except ValueError as e:
        raise ConfigError(str(e).splitlines()[0]) from None
    provision.check_no_placeholders(config)


def main(argv):
    del argv
    console.quiet(FLAGS.verbose)
    job = tpu_job.TpuJob(
        name=FLAGS.name,
        zone=FLAGS.zone,
        model_dir=FLAGS.model_dir,
        gin_files=FLAGS.gin_file,
        gin_params=FLAGS.gin_param,
        project=FLAGS.project,
        accelerator_type=FLAGS.accelerator_type,
        version=FLAGS.version,
        spot=FLAGS.spot,
        max_restarts=FLAGS.max_restarts,
    )

    def run(cmd):
        print("$ " + shlex.join(cmd), flush=True)
        return 0 if FLAGS.dry_run else subprocess.run(cmd).returncode

    def vm_state():
        if FLAGS.dry_run:
            return "READY"
        out = subprocess.run(job.state(), capture_output=True, text=True)
        return out.stdout.strip() or "MISSING"

    try:
        job.check()
        tpu_job.check_committed()
        check_run_config()
        tpu_job.run_job(job, run, vm_state, dry_run=FLAGS.dry_run)
    except (ValueError, tpu_job.JobError) as e:  # also the run's LaunchError, ConfigError
        raise SystemExit(f"error: {console.one_line(e)}") from None


if __name__ == "__main__":
    app.run(main)
