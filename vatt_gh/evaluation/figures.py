"""The paper's figures with matplotlib, headless (Agg backend); each function writes one PNG.

cosine_bands    Figure 4: percentile bands of cos(g_va, g_vt) over training, one panel per run
tsne_scatter    Figure 5: t-SNE of video and text embeddings (vt space)
contact_sheet   Figure 3: frames and narrations of selected triplets with their cosines
"""

from typing import Dict, List, Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from vatt_gh.evaluation.histories import CosineHistory  # noqa: E402


def _save(fig, path: str) -> str:
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def cosine_bands(
    histories: Dict[str, CosineHistory], path: str, title: str = "cos(g_va, g_vt) over pre-training"
) -> str:
    """Figure 4: per run a panel with the 5-95% and 25-75% bands and the median of the cosines
    at every summary step, and below it the fraction of negative cosines (conflicting pairs)."""
    names = list(histories)
    fig, axes = plt.subplots(
        2,
        len(names),
        figsize=(4.5 * len(names), 5.5),
        squeeze=False,
        sharex="col",
        sharey="row",
        gridspec_kw={"height_ratios": [3, 1]},
    )
    for column, name in enumerate(names):
        history = histories[name]
        levels = list(history.percentile_levels)
        p = history.percentiles
        top, bottom = axes[0, column], axes[1, column]
        x = history.steps
        for (lo, hi), alpha in (((5, 95), 0.2), ((25, 75), 0.4)):
            if lo in levels and hi in levels:
                top.fill_between(
                    x,
                    p[:, levels.index(lo)],
                    p[:, levels.index(hi)],
                    color="tab:blue",
                    alpha=alpha,
                    linewidth=0,
                    label=f"{lo}-{hi}%",
                )
        if 50 in levels:
            top.plot(x, p[:, levels.index(50)], color="tab:blue", linewidth=1.5, label="median")
        top.axhline(0.0, color="black", linewidth=0.8, linestyle="--")
        top.set_title(f"({chr(ord('a') + column)}) {name}")
        top.set_ylabel("cosine")
        top.legend(loc="lower right", fontsize=8)
        bottom.plot(x, history.fraction_negative, color="tab:red")
        bottom.set_ylim(-0.02, 1.02)
        bottom.set_ylabel("cos < 0")
        bottom.set_xlabel("step")
    fig.suptitle(title)
    return _save(fig, path)


def tsne_scatter(
    points: np.ndarray,
    modality: np.ndarray,
    path: str,
    labels: Optional[np.ndarray] = None,
    title: str = "t-SNE of the vt space",
) -> str:
    """Figure 5: (N, 2) t-SNE points with their modality ('video' / 'text'); a second panel
    coloured by class when `labels` (N,) exist (>= 0)."""
    panels = 2 if labels is not None and (np.asarray(labels) >= 0).any() else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 5), squeeze=False)
    markers = {"video": "o", "text": "^"}
    colors = {"video": "tab:blue", "text": "tab:orange"}
    ax = axes[0, 0]
    for name in ("video", "text"):
        chosen = modality == name
        ax.scatter(
            points[chosen, 0],
            points[chosen, 1],
            s=14,
            marker=markers[name],
            c=colors[name],
            label=name,
            alpha=0.8,
        )
    ax.legend()
    ax.set_title("by modality")
    if panels == 2:
        ax = axes[0, 1]
        labels = np.asarray(labels)
        for name in ("video", "text"):
            chosen = modality == name
            scatter = ax.scatter(
                points[chosen, 0],
                points[chosen, 1],
                s=14,
                marker=markers[name],
                c=labels[chosen],
                cmap="tab10",
                vmin=0,
                vmax=max(9, int(labels.max())),
                alpha=0.8,
                label=name,
            )
        ax.legend()
        ax.set_title("by class (o video, ^ text)")
        fig.colorbar(scatter, ax=ax, label="class")
    for ax in axes[0]:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title)
    return _save(fig, path)


def contact_sheet(rows: List[dict], path: str, title: str, max_caption_lines: int = 8) -> str:
    """Figure 3: one row per clip: its frames side by side, then its narrations; `rows` items are
    {'title': str, 'frames': [uint8 (H, W, 3)], 'captions': [str]}."""
    columns = max([len(r["frames"]) for r in rows] + [1])
    height = 1.25 * len(rows) + 0.8
    fig, axes = plt.subplots(
        len(rows),
        columns + 1,
        squeeze=False,
        figsize=(1.2 * columns + 4.2, height),
        gridspec_kw={"width_ratios": [1] * columns + [3.5]},
    )
    fig.subplots_adjust(
        left=0.01, right=0.99, bottom=0.01, top=1 - 0.7 / height, wspace=0.05, hspace=0.12
    )
    for r, row in enumerate(rows):
        for c in range(columns):
            ax = axes[r, c]
            ax.axis("off")
            if c < len(row["frames"]):
                ax.imshow(row["frames"][c], interpolation="nearest")
        text_ax = axes[r, columns]
        text_ax.axis("off")
        captions = row["captions"][:max_caption_lines]
        text_ax.text(
            0.0,
            1.0,
            row["title"] + "\n" + "\n".join(captions),
            va="top",
            ha="left",
            fontsize=7,
            family="monospace",
            transform=text_ax.transAxes,
        )
    fig.suptitle(title)
    return _save(fig, path)


def cosine_histogram(
    cosines: np.ndarray,
    aligned: Optional[np.ndarray],
    path: str,
    title: str = "cos(g_va, g_vt) per triplet",
) -> str:
    """Distribution of the per-triplet cosines, split into aligned / misaligned when known."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bins = np.linspace(min(-1e-3, float(np.min(cosines))), max(1e-3, float(np.max(cosines))), 31)
    if aligned is None or aligned.all() or not aligned.any():
        ax.hist(cosines, bins=bins, color="tab:blue")
    else:
        ax.hist(cosines[aligned], bins=bins, alpha=0.6, label="aligned", color="tab:green")
        ax.hist(cosines[~aligned], bins=bins, alpha=0.6, label="misaligned", color="tab:red")
        ax.legend()
    ax.axvline(0.0, color="black", linewidth=0.8, linestyle="--")
    ax.set_xlabel("cosine")
    ax.set_ylabel("triplets")
    ax.set_title(title)
    return _save(fig, path)
