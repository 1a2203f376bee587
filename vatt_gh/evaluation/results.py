"""Where evaluation results go: a JSON file, TensorBoard scalars under `eval/`, console tables.

write_json(path, metrics)                          # nested dicts kept as they are
write_scalars(os.path.join(model_dir, "eval"), step, metrics)   # eval/<name>/<metric>
print(retrieval_table(name, metrics[name]))        # also probe_table
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


def format_table(header, rows, indent: str = "  ") -> str:
    """Plain-text table: the first column left-aligned, the others right-aligned."""
    cells = [list(map(str, header))] + [list(map(str, row)) for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = []
    for row in cells:
        first = row[0].ljust(widths[0])
        rest = [cell.rjust(width) for cell, width in zip(row[1:], widths[1:])]
        lines.append(indent + "  ".join([first] + rest).rstrip())
    return "\n".join(lines)


def retrieval_table(name: str, result: dict) -> str:
    """`retrieval.retrieval_metrics` (+ num_windows) as a titled table, recalls to 0.1%."""
    windows = result.get("num_windows")
    title = f"{name}: zero-shot retrieval, {result.get('num_clips', '?')} clips" + (
        f", {windows} windows per clip averaged" if windows else ""
    )
    recalls = sorted(
        (k.split("/R@")[1] for k in result if k.startswith("t2v/R@")), key=lambda k: int(k)
    )
    rows = []
    for direction, label in (("t2v", "text -> video"), ("v2t", "video -> text")):
        rows.append(
            [label]
            + [f"{result[f'{direction}/R@{k}']:.1f}" for k in recalls]
            + [f"{result[f'{direction}/median_rank']:g}", f"{result[f'{direction}/mean_rank']:.1f}"]
        )
    header = ["recall in %"] + [f"R@{k}" for k in recalls] + ["median rank", "mean rank"]
    return title + "\n" + format_table(header, rows)


def probe_table(name: str, results: dict) -> str:
    """{modality: `probe.linear_probe_metrics`} as a titled table, accuracies to 0.1%."""
    any_result = next(iter(results.values()))
    title = (
        f"{name}: linear probe on frozen features, {any_result['num_train_clips']} training / "
        f"{any_result['num_test_clips']} test clips, chance {any_result['chance']:.1f}%"
    )
    rows = [
        [modality, f"{r['top1']:.1f}", f"{r['top5']:.1f}", f"{r['train_top1']:.1f}"]
        for modality, r in results.items()
    ]
    return title + "\n" + format_table(["accuracy in %", "top-1", "top-5", "train top-1"], rows)
