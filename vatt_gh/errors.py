"""The errors a run raises with ONE line that names the flag, file or setting at fault.

TensorFlow-free, so a tool can name them before it imports the heavy modules. Also here, for
the same reason: the exit code of a pre-empted run.
"""

# SIGTERM: a checkpoint was saved at the step boundary; restart the run to resume (tpu_job does).
PREEMPTED_EXIT_CODE = 42


class LaunchError(ValueError):
    """A bad flag or configuration, found before any work starts."""


class ConfigError(ValueError):
    """A setting that makes the run impossible, found before training starts."""


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. too many non-finite steps in a row)."""
