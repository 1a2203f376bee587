"""What a tool prints to the terminal: its own lines, not TensorFlow's start-up and graph noise.

    console.define_verbose_flag()       # at import time of the tool (absl only)
    console.quiet(FLAGS.verbose)        # in main, BEFORE TensorFlow is imported

Without --verbose a run prints nothing but its own lines. Hidden: TensorFlow's C++ log (CUDA
factory registration, CPU feature and TensorRT notices, the tf.data graph rewrites' "Running
replicate on split optimization", one per input pipeline trace), TensorFlow's Python warnings
(deprecations, checkpoint restore notes), the tensorflow-addons end-of-life notice, the
google.api_core Python-version FutureWarning (also in child processes, via PYTHONWARNINGS),
gensim's INFO progress lines, and absl INFO lines. Warnings and errors of
vatt_gh's own (absl `logging.warning`) still show. `--verbose` shows all of it.
No TensorFlow here: the C++ log level is read once, when TensorFlow loads.

A run that seems stuck says where it is: `kill -USR1 <pid>` prints every Python thread's stack
to its stderr and the run goes on (`quiet` installs it, with or without --verbose).
"""

import faulthandler
import logging as py_logging
import os
import shlex
import signal
import sys
import warnings
from typing import Callable, Optional

from absl import flags
from absl import logging as absl_logging

from vatt_gh.errors import PREEMPTED_EXIT_CODE

# google.api_core's Python-version and dependency-version notices (FutureWarning), for
# PYTHONWARNINGS: the modules that issue them.
API_CORE_WARNINGS = tuple(
    f"ignore::FutureWarning:google.api_core.{m}"
    for m in ("_python_version_support", "_python_package_support")
)
QUIET_CPP_LEVEL = "3"  # TF_CPP_MIN_LOG_LEVEL: 0 all, 1 no INFO, 2 no WARNING, 3 no ERROR


def define_verbose_flag():
    flags.DEFINE_bool(
        "verbose",
        False,
        "Show TensorFlow's C++ log, its Python warnings and INFO lines (hidden by default).",
    )


def quiet(verbose: bool = False):
    """Silence TensorFlow's noise unless `verbose`; call before TensorFlow is imported.

    TF_CPP_MIN_LOG_LEVEL set by the caller's environment is kept either way. Also installs the
    SIGUSR1 stack dump (module docstring).
    """
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    if verbose:
        absl_logging.set_verbosity(absl_logging.INFO)
        return
    # Level 3: the CUDA factory lines are ERROR-level although harmless on every machine
    # without a GPU; TensorFlow's real errors reach us as Python exceptions.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", QUIET_CPP_LEVEL)
    absl_logging.set_verbosity(absl_logging.WARNING)
    py_logging.getLogger("tensorflow").setLevel(py_logging.ERROR)
    warnings.filterwarnings("ignore", module=r"tensorflow_addons\.")
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"google\.api_core\.")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    # Child processes (e.g. a Beam runner's workers) start without these filters: they read
    # PYTHONWARNINGS, whose module field is an exact name.
    inherited = [w for w in os.environ.get("PYTHONWARNINGS", "").split(",") if w]
    os.environ["PYTHONWARNINGS"] = ",".join(inherited + [*API_CORE_WARNINGS])
    py_logging.getLogger("gensim").setLevel(py_logging.WARNING)  # word2vec's INFO progress


def say(message: str):
    """One line for the user on stdout, flushed at once (progress must not wait in a buffer)."""
    print(message, flush=True)


def one_line(error: BaseException) -> str:
    """An exception as one line: gin's additions folded in (the file or binding line at fault
    kept, the `In call to configurable 'x' (<function x at 0x...>)` trail dropped)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    lines = [
        line
        for line in lines
        if not line.startswith("In call to configurable") and set(line) != {"^"}
    ]
    if not lines:
        return type(error).__name__
    head, rest = lines[0], lines[1:]
    if rest and rest[0].startswith("In "):
        rest[0] = "in " + rest[0][3:]
    return head + (f" ({': '.join(rest)})" if rest else "")


def duration(seconds: float) -> str:
    """'48 s', '2 min 31 s', '3 h 05 min'."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def exit_on_sigterm(cleanup: Optional[Callable[[], None]] = None):
    """SIGTERM (pre-emption) before training's own handler takes over: `cleanup`, then exit
    with PREEMPTED_EXIT_CODE at once, whatever the main thread is doing.

    Nothing new needs saving before the first step, and running the command again resumes.
    `os._exit`: a normal exit with TensorFlow's threads running can abort in C++ (exit 134).
    """

    def handler(signum, frame):
        del signum, frame
        if cleanup is not None:
            cleanup()
        absl_logging.flush()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(PREEMPTED_EXIT_CODE)

    signal.signal(signal.SIGTERM, handler)


def tensorboard_command(logdir: str) -> str:
    """The command that shows `logdir` in TensorBoard from this Python environment: its own
    `tensorboard` (e.g. `.venv/bin/tensorboard`, which is not on PATH unless the venv is
    activated), relative to the working directory when it lies below it."""
    found = os.path.join(os.path.dirname(sys.executable), "tensorboard")
    if not os.path.exists(found):
        return f"tensorboard --logdir={shlex.quote(logdir)}"
    relative = os.path.relpath(found)
    path = relative if not relative.startswith("..") else found
    return f"{shlex.quote(path)} --logdir={shlex.quote(logdir)}"
