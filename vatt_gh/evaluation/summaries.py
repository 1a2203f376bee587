"""Where evaluation results go: a JSON file and TensorBoard scalars under `eval/`.

write_json(path, metrics)                          # nested dicts kept as they are
write_scalars(os.path.join(model_dir, "eval"), step, metrics)   # eval/<name>/<metric>
"""

import json
import math
import numbers
import os
from typing import Dict, Iterator, Tuple

import tensorflow as tf


def flatten(metrics: dict, prefix: str = "") -> Iterator[Tuple[str, object]]:
    """{'youcook2': {'t2v/R@1': 3.0}} -> ('youcook2/t2v/R@1', 3.0), depth first."""
    for key, value in metrics.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, dict):
            yield from flatten(value, name)
        else:
            yield name, value


def write_json(path: str, metrics: dict) -> str:
    """Writes `metrics` (JSON-serialisable; NaN becomes null) and returns the path."""

    def clean(value):
        if isinstance(value, dict):
            return {str(k): clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return int(value)
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            return None if math.isnan(float(value)) else float(value)
        return value

    directory = os.path.dirname(path)
    if directory:
        tf.io.gfile.makedirs(directory)
    with tf.io.gfile.GFile(path, "w") as f:
        json.dump(clean(metrics), f, indent=2, sort_keys=True)
    return path


def write_scalars(log_dir: str, step: int, metrics: dict, prefix: str = "eval") -> Dict[str, float]:
    """Every finite number in `metrics` as a scalar `<prefix>/<flattened name>` at `step`."""
    written = {}
    writer = tf.summary.create_file_writer(log_dir)
    with writer.as_default(step=step):
        for name, value in flatten(metrics):
            if (
                isinstance(value, numbers.Real)
                and not isinstance(value, bool)
                and math.isfinite(float(value))
            ):
                tf.summary.scalar(f"{prefix}/{name}", float(value))
                written[f"{prefix}/{name}"] = float(value)
    writer.close()
    return written
