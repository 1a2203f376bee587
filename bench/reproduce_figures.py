"""The figures of `bench/reproduce.py` (matplotlib, Agg): the cosine's AUC along training and
the effect study's retrieval with its paired differences to `sum`."""

from typing import Dict, Sequence

import numpy as np
from reproduce_study import MODALITIES


# ------------------------------------------------------------------------------- figures
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def signal_figure(summary: Dict[str, dict], path: str, lines: Sequence[tuple], title: str) -> str:
    """AUC over training, one panel per modality kind (text / audio / both wrong), a line with
    its 95% t-interval band per (variant, word table, definition, filter) in `lines`; the legend
    sits below the panels, clear of the data."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(MODALITIES), figsize=(5 * len(MODALITIES), 4.2), sharey=True)
    colours = plt.get_cmap("tab10")
    seeds = set()
    for i, line in enumerate(lines):
        prefix = "|".join(line) + "|"
        steps = sorted(int(k.rsplit("|", 1)[1]) for k in summary if k.startswith(prefix))
        if not steps:
            continue
        for ax, kind in zip(axes, MODALITIES):
            cells = [summary[f"{prefix}{s}"].get(kind) for s in steps]
            ok = [(s, c) for s, c in zip(steps, cells) if c]
            if not ok:
                continue
            xs = [s for s, _ in ok]
            mean = [c["mean"] for _, c in ok]
            seeds.add(max(c["n"] for _, c in ok))
            label = (
                f"{'MA' if line[0] == 'agnostic' else 'MS'}, {line[1]} words, "
                f"{'own path' if line[2] == 'own_path' else 'own loss (Jacobian)'}, {line[3]}"
            )
            style = "-" if line[2] == "own_path" else "--"
            ax.plot(xs, mean, style, marker="o", color=colours(i % 10), label=label)
            if all(c["lo"] is not None for _, c in ok):
                ax.fill_between(
                    xs,
                    [c["lo"] for _, c in ok],
                    [c["hi"] for _, c in ok],
                    color=colours(i % 10),
                    alpha=0.15,
                    linewidth=0,
                )
    for ax, kind in zip(axes, MODALITIES):
        ax.axhline(0.5, color="black", linewidth=0.8, linestyle=":")
        ax.set_title(f"aligned vs {kind} wrong")
        ax.set_xlabel("training step")
        ax.set_ylim(0.0, 1.0)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("ROC AUC of cos(g_va, g_vt) (0.5 = chance)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=2, fontsize=8)
    n = ", ".join(str(s) for s in sorted(seeds)) or "0"
    fig.suptitle(f"{title}\n(mean over n = {n} seeds; band: 95% t-interval; dotted: chance)")
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def effect_figure(summary: Dict[str, dict], path: str, column: str, title: str) -> str:
    """Left: `column` per method (mean, 95% t-interval), one group per (level, granularity),
    with the class-oracle ceiling; right: the paired difference to `sum` per seed's pair."""
    plt = _plt()
    keys = list(summary)
    groups = list(dict.fromkeys(k.rsplit("|", 1)[0] for k in keys))
    labels = list(dict.fromkeys(k.rsplit("|", 1)[1] for k in keys))
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.5))
    colours = plt.get_cmap("tab10")
    width = 0.8 / max(len(labels), 1)
    ns = set()
    for j, label in enumerate(labels):
        for side, name in ((left, column), (right, f"diff {column}")):
            xs, ys, err = [], [], []
            for g, group in enumerate(groups):
                cell = summary.get(f"{group}|{label}", {}).get(name)
                if not cell:
                    continue
                ns.add(cell["n"])
                xs.append(g + (j - (len(labels) - 1) / 2) * width)
                ys.append(cell["mean"])
                lo = cell["lo"] if cell["lo"] is not None else cell["mean"]
                hi = cell["hi"] if cell["hi"] is not None else cell["mean"]
                err.append((cell["mean"] - lo, hi - cell["mean"]))
            if xs:
                side.errorbar(
                    xs,
                    ys,
                    yerr=np.array(err).T,
                    fmt="o",
                    capsize=3,
                    color=colours(j % 10),
                    label=label,
                )
    metric = column.split()[-1]
    for g, group in enumerate(groups):
        ceiling = next(
            (
                summary[k]["ceiling"]
                for k in keys
                if k.startswith(group + "|") and summary[k]["ceiling"]
            ),
            None,
        )
        if ceiling and f"t2v/{metric}" in ceiling:
            left.hlines(ceiling[f"t2v/{metric}"], g - 0.45, g + 0.45, color="grey", linestyle="--")
    names = [f"{100 * float(g.split('|')[0]):.0f}% misaligned\n{g.split('|')[1]}" for g in groups]
    for side in (left, right):
        side.set_xticks(range(len(groups)))
        side.set_xticklabels(names)
        side.grid(axis="y", alpha=0.3)
    left.set_ylabel(f"{column} on clean held-out clips (%)")
    left.set_title(f"{column} (dashed grey: class-oracle ceiling)")
    right.axhline(0.0, color="black", linewidth=0.8)
    right.set_ylabel(f"{column}: method - sum, same seed (points)")
    right.set_title("paired difference to sum")
    handles, texts = left.get_legend_handles_labels()
    fig.legend(handles, texts, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=len(labels))
    n = ", ".join(str(s) for s in sorted(ns)) or "0"
    fig.suptitle(f"{title}\n(mean and 95% t-interval over n = {n} seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path
