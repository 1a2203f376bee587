"""Table 1 of the paper as markdown: our row (from `benchmark_eval`) beside the paper's own rows.

Columns in the paper's order: UCF101 top-1 / top-5, HMDB51 top-1 / top-5, Kinetics-400 top-1 /
top-5, YouCook2 median rank / R@10, MSR-VTT median rank / R@10, ESC50 top-1 / top-5. Ours are the
means over the official splits (UCF101, HMDB51) and the five folds (ESC50), and text-to-video
retrieval; a benchmark not evaluated shows "-". `PAPER_ROWS` are copied from the paper's
Table 1 (VATT and its gradient-harmonized variants: GR realignment, CL curriculum, both), per
pre-training data set; they are the paper's numbers, not ours.
"""

from typing import Dict, List, Optional, Sequence, Tuple

# (benchmark, metric key in our results, header)
COLUMNS: Tuple[Tuple[str, str, str], ...] = (
    ("ucf101", "top1", "UCF101 top-1"),
    ("ucf101", "top5", "UCF101 top-5"),
    ("hmdb51", "top1", "HMDB51 top-1"),
    ("hmdb51", "top5", "HMDB51 top-5"),
    ("kinetics400", "top1", "K400 top-1"),
    ("kinetics400", "top5", "K400 top-5"),
    ("youcook2", "t2v/median_rank", "YouCook2 MedR"),
    ("youcook2", "t2v/R@10", "YouCook2 R@10"),
    ("msrvtt", "t2v/median_rank", "MSR-VTT MedR"),
    ("msrvtt", "t2v/R@10", "MSR-VTT R@10"),
    ("esc50", "top1", "ESC50 top-1"),
    ("esc50", "top5", "ESC50 top-5"),
)

# The paper's Table 1 ("-": not reported there), in COLUMNS order.
PAPER_ROWS: Tuple[Tuple[str, Tuple[Optional[float], ...]], ...] = (
    ("HT100M: VATT", (78.53, 95.24, 57.36, 86.07, 74.71, 92.69, 93.50, 17.10, 73.00, 16.70, 71.50, 91.75)),
    ("HT100M: + GR", (78.44, 95.37, 54.38, 83.64, 76.72, 92.72, 47.00, 24.94, 68.00, 19.20, 69.00, 93.00)),
    ("HT100M: + CL", (79.10, 96.16, 56.41, 86.06, 77.25, 93.38, 40.00, 26.01, 56.00, 23.90, 72.50, 94.25)),
    ("HT100M: + Both", (79.24, 96.58, 58.24, 87.37, 76.59, 93.26, 42.00, 25.87, 54.00, 24.50, 72.05, 94.16)),
    ("HT100M+AS: VATT", (84.40, None, 63.10, None, 79.23, 94.30, 34.00, 29.00, 67.00, 23.60, 81.20, None)),
    ("HT100M+AS: + GR", (84.77, 97.38, 62.30, 90.38, 79.29, 94.32, 29.00, 31.65, 70.00, 21.40, 81.50, 97.00)),
    ("HT100M+AS: + CL", (86.04, 97.75, 65.45, 88.94, 79.89, 94.71, 33.00, 29.17, 65.50, 20.97, 82.00, 97.25)),
    ("HT100M+AS: + Both", (85.46, 97.58, 65.52, 89.74, 79.26, 94.48, 31.50, 30.26, 69.50, 19.96, 82.00, 97.00)),
    ("HT100M+AS+YT8M: VATT", (88.28, 98.73, 65.84, 91.43, 79.39, 94.56, 29.00, 29.66, 56.00, 26.90, 80.75, 97.00)),
    ("HT100M+AS+YT8M: + GR", (87.49, 98.10, 60.99, 88.35, 79.73, 94.57, 32.00, 29.56, 60.00, 27.20, 85.00, 98.00)),
    ("HT100M+AS+YT8M: + CL", (89.02, 98.33, 65.77, 92.15, 79.70, 94.80, 31.00, 31.34, 48.50, 28.70, 83.50, 97.75)),
    ("HT100M+AS+YT8M: + Both", (89.70, 98.35, 64.35, 92.08, 80.01, 94.69, 29.00, 31.86, 45.00, 29.10, 84.50, 98.00)),
)  # fmt: skip


def headline(results: Dict[str, dict]) -> Dict[str, dict]:
    """{benchmark: {metric: value}}: the mean over splits / folds, else the single split's."""
    out = {}
    for name, splits in results.items():
        summary = splits.get("mean") or next(iter(splits.values()))
        out[name] = {k: v for k, v in summary.items() if isinstance(v, (int, float))}
    return out


def our_row(results: Dict[str, dict]) -> List[Optional[float]]:
    top = headline(results)
    return [top.get(name, {}).get(key) for name, key, _ in COLUMNS]


def _cell(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.2f}"


def _row(label: str, values: Sequence[Optional[float]]) -> str:
    return "| " + " | ".join([label] + [_cell(v) for v in values]) + " |"


def _details(results: Dict[str, dict]) -> List[str]:
    lines = ["", "Ours per split / fold (percent; ranks 1 = best):", ""]
    lines.append("| benchmark | split | metrics | clips (test / listed) |")
    lines.append("| --- | --- | --- | --- |")
    for name, splits in results.items():
        for split, metrics in splits.items():
            if "t2v/R@1" in metrics:
                shown = (
                    ", ".join(f"{k} {metrics[f't2v/{k}']:.2f}" for k in ("R@1", "R@5", "R@10"))
                    + f", MedR {metrics['t2v/median_rank']:g}"
                )
                clips = f"{metrics['num_clips']} / {metrics.get('num_listed', '?')}"
            else:
                shown = f"top-1 {metrics['top1']:.2f}, top-5 {metrics['top5']:.2f}"
                clips = (
                    f"{metrics['num_test_clips']} / {metrics.get('num_listed', '?')}"
                    if "num_test_clips" in metrics
                    else ""
                )
            lines.append(f"| {name} | {split} | {shown} | {clips} |")
    return lines


def _header() -> List[str]:
    return [
        "| pre-training: method | " + " | ".join(h for _, _, h in COLUMNS) + " |",
        "|" + " --- |" * (len(COLUMNS) + 1),
    ]


def our_table(results: Dict[str, dict], label: str = "ours") -> str:
    """Our row and the per-split details (what tools/evaluate.py prints)."""
    return "\n".join(_header() + [_row(label, our_row(results))] + _details(results))


def markdown(results: Dict[str, dict], label: str = "ours") -> str:
    """table1.md: the paper's columns, our row first, then the paper's rows (labelled)."""
    lines = [
        "# Table 1",
        "",
        "UCF101 / HMDB51 / ESC50: linear classifier on frozen features, mean over the official "
        "splits / 5 folds; K400: fine-tuned (tools/finetune.py); YouCook2 / MSR-VTT: zero-shot "
        "text-to-video retrieval, median rank (lower is better) and R@10. Rows marked "
        '"paper" are the paper\'s own Table 1, not measured here.',
        "",
        *_header(),
        _row(label, our_row(results)),
    ]
    lines.extend(_row(f"paper, {name}", values) for name, values in PAPER_ROWS)
    lines.extend(_details(results))
    return "\n".join(lines) + "\n"
