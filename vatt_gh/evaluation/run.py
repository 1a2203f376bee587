"""What every evaluation tool checks about its flags: `EvalError` and record patterns.

A run is opened with `vatt_gh.configs.open_run` (its operative gin, the user's gin, then its
checkpoint). Every failure is an `EvalError` with one line naming the flag or file at fault.
"""

import tensorflow as tf

from vatt_gh.data.read import list_files


class EvalError(ValueError):
    """A bad flag, file or configuration, found before (or while) evaluating."""


def check_pattern(flag: str, pattern: str) -> str:
    """The pattern, or EvalError naming the flag when it matches no file."""
    try:
        list_files(pattern)
    except (ValueError, FileNotFoundError, tf.errors.OpError) as e:
        raise EvalError(f"--{flag}: {e}") from None
    return pattern
