"""The errors a run raises with ONE line that names the flag, file or setting at fault.

TensorFlow-free, so a tool can name them before it imports the heavy modules. Also here, for
the same reason: the exit code of a pre-empted run.
"""

# The exit code of a run stopped by SIGTERM (pre-emption): its checkpoint is saved, and
# running the same command again resumes it. The Cloud TPU job reruns on it (tpu_job.py).
PREEMPTED_EXIT_CODE = 42


class LaunchError(ValueError):
    """A bad flag or configuration, found before any work starts."""


class ConfigError(ValueError):
    """A setting that makes the run impossible, found before training starts."""


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. too many non-finite steps in a row)."""
