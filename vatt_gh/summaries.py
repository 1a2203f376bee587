"""Host-side TensorBoard summaries of a training run (its gin config: vatt_gh/run_config.py).

    writer = make_writer(model_dir, strategy)       # <model_dir>/train on the one writer
    write_summaries(writer, step, logs)             # logs: numpy values the step returned
    write_data_errors(writer, step, totals)         # data/skipped/<reason>

Summaries are written on the host from values the step returns, so they work on TPU.
"""

import os
from typing import Dict

import numpy as np
import tensorflow as tf

from vatt_gh import cluster
from vatt_gh.data.rejects import REASON_NAMES

HISTOGRAMS = ("cosines",)  # gathered over every step since the previous summary
NOT_SCALARS = HISTOGRAMS + ("step_applied", "nonfinite")


def make_writer(model_dir: str, strategy):
    """A summary writer for <model_dir>/train (chief) or <model_dir>/workers/<task>/train."""
    if cluster.is_chief(strategy):
        log_dir = os.path.join(model_dir, "train")
    else:
        log_dir = os.path.join(model_dir, "workers", cluster.task_name(strategy), "train")
    return tf.summary.create_file_writer(log_dir)


def write_summaries(writer, step: int, logs: dict):
    """Histograms under harmonize/ (HISTOGRAMS), every other scalar under train/."""
    with writer.as_default(step=step):
        for name, value in logs.items():
            if name in HISTOGRAMS:
                if np.size(value):  # sum / reweight measure their cosines at monitor steps
                    tf.summary.histogram(f"harmonize/{name}", value)
            elif name not in NOT_SCALARS:
                tf.summary.scalar(f"train/{name}", value)
    writer.flush()


def write_data_errors(writer, step: int, totals: Dict[str, int]):
    """`data/skipped/<reason>`: records rejected since the start, per reason (zeros included)."""
    with writer.as_default(step=step):
        for name in REASON_NAMES.values():
            tf.summary.scalar(f"data/skipped/{name}", totals.get(name, 0))
    writer.flush()
