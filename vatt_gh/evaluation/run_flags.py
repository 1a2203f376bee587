"""The flags every evaluation tool uses to open a pre-training run (see `configs.open_run`).

absl only, no TensorFlow, so a tool's flag errors and --help stay fast.
"""

from absl import flags


def define_run_flags(
    model_dir_help="Pre-training run (operative_config.gin, checkpoints/).",
    gin_param_help="Gin bindings applied last.",
):
    """--model_dir, --checkpoint, --gin_file, --gin_param."""
    flags.DEFINE_string("model_dir", None, model_dir_help)
    flags.DEFINE_string("checkpoint", None, "Checkpoint prefix; default: the newest in the run.")
    flags.DEFINE_multi_string("gin_file", [], "Gin files applied after the run's operative config.")
    flags.DEFINE_multi_string("gin_param", [], gin_param_help)
