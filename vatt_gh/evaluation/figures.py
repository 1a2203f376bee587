"""The paper's figures with matplotlib, headless (Agg backend); each function writes one PNG.

cosine_bands    Figure 4: percentile bands of cos(g_va, g_vt) over training, one panel per run
tsne_scatter    Figure 5: t-SNE of video and text embeddings (vt space)
contact_sheet   Figure 3: frames and narrations of selected triplets with their cosines
"""

from typing import Dict, List, Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from vatt_gh.evaluation.histories import CosineHistory


def _save(fig, path: str) -> str:
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def cosine_bands(
    histories: Dict[str, CosineHistory], path: str, title: str = "cos(g_va, g_vt) over pre-training"
) -> str:
    """Figure 4: per run a panel with the 5-95% and 25-75% bands and the median of the cosines
    at every point (a summary step, or several pooled), and below it the fraction of negative
    cosines (conflicting pairs). One legend under the panels, clear of the data; each panel says
    how many cosines a point summarises."""
    names = list(histories)
    fig, axes = plt.subplots(
        2,
        len(names),
        figsize=(4.8 * len(names), 6.0),
        squeeze=False,
        sharex="col",
        sharey="row",
        gridspec_kw={"height_ratios": [3, 1.2]},
    )
    handles = {}
    for column, name in enumerate(names):
        history = histories[name]
        levels = list(history.percentile_levels)
        p = history.percentiles
        top, bottom = axes[0, column], axes[1, column]
        x = history.steps
        for (lo, hi), alpha in (((5, 95), 0.25), ((25, 75), 0.5)):
            if lo in levels and hi in levels:
                handles[f"{lo}-{hi}% of the cosines"] = top.fill_between(
                    x,
                    p[:, levels.index(lo)],
                    p[:, levels.index(hi)],
                    color="tab:blue",
                    alpha=alpha,
                    linewidth=0,
                    step=None,
                )
        if 50 in levels:
            (handles["median"],) = top.plot(
                x,
                p[:, levels.index(50)],
                color="tab:blue",
                linewidth=1.5,
                marker="." if len(x) < 30 else None,
            )
        handles["0 (orthogonal)"] = top.axhline(0.0, color="black", linewidth=0.8, linestyle="--")
        top.set_title(f"({chr(ord('a') + column)}) {name}\n{_points_caption(history)}", fontsize=9)
        top.set_ylabel("cos(g_va, g_vt)")
        top.grid(alpha=0.3)
        bottom.plot(
            x, history.fraction_negative, color="tab:red", marker="." if len(x) < 30 else None
        )
        bottom.set_ylim(-0.05, 1.05)
        bottom.set_ylabel("share < 0")
        bottom.set_xlabel("training step")
        bottom.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.legend(
        list(handles.values()),
        list(handles),
        loc="lower center",
        ncol=len(handles),
        fontsize=8,
        frameon=False,
    )
    return _save(fig, path)


def _points_caption(history: CosineHistory) -> str:
    """'30 points, 20 cosines each (pooled over 20 summary steps)' and the like."""
    counts = np.asarray(history.counts)
    per = (
        f"{counts.min():.0f}"
        if counts.min() == counts.max()
        else f"{counts.min():.0f}-{counts.max():.0f}"
    )
    text = f"{len(counts)} points, {per} cosine{'s' if counts.max() != 1 else ''} each"
    pooled = history.summaries_per_point
    if pooled is not None and np.max(pooled) > 1:
        lo, hi = int(np.min(pooled)), int(np.max(pooled))
        text += f",\neach pooling {lo if lo == hi else f'{lo}-{hi}'} summary steps"
    return text


def tsne_scatter(
    points: np.ndarray,
    modality: np.ndarray,
    path: str,
    labels: Optional[np.ndarray] = None,
    title: str = "t-SNE of the vt space",
) -> str:
    """Figure 5: (N, 2) t-SNE points with their modality ('video' / 'text'); a second panel
    coloured by class when `labels` (N,) exist (>= 0), one colour per class that occurs."""
    panels = 2 if labels is not None and (np.asarray(labels) >= 0).any() else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 5.6), squeeze=False)
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
            label=f"{name} ({int(chosen.sum())})",
            alpha=0.8,
        )
    ax.set_title("by modality")
    _legend_below(ax, ncol=2)
    if panels == 2:
        ax = axes[0, 1]
        labels = np.asarray(labels)
        classes = np.unique(labels[labels >= 0])
        index = np.searchsorted(classes, labels)  # class -> 0..C-1, one colour each
        cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20", len(classes))
        norm = matplotlib.colors.BoundaryNorm(np.arange(len(classes) + 1) - 0.5, len(classes))
        for name in ("video", "text"):
            chosen = (modality == name) & (labels >= 0)
            scatter = ax.scatter(
                points[chosen, 0],
                points[chosen, 1],
                s=14,
                marker=markers[name],
                c=index[chosen],
                cmap=cmap,
                norm=norm,
                alpha=0.8,
            )
        ax.set_title(f"by class ({len(classes)} classes; o video, ^ text)")
        bar = fig.colorbar(scatter, ax=ax, ticks=np.arange(len(classes)), fraction=0.05)
        bar.ax.set_yticklabels([str(c) for c in classes])
        bar.set_label("class label")
    for ax in axes[0]:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel("t-SNE 1 (no units)")
        ax.set_ylabel("t-SNE 2 (no units)")
    fig.suptitle(title)
    return _save(fig, path)


def _legend_below(ax, ncol: int):
    """A legend under the axes, so it never covers points."""
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=ncol, frameon=False)


def contact_sheet(rows: List[dict], path: str, title: str, max_caption_lines: int = 8) -> str:
    """Figure 3: one row per clip: its frames side by side, then its narrations; `rows` items are
    {'title': str, 'frames': [uint8 (H, W, 3)], 'captions': [str]}."""
    columns = max([len(r["frames"]) for r in rows] + [1])
    height = 1.25 * len(rows) + 1.1
    fig, axes = plt.subplots(
        len(rows),
        columns + 1,
        squeeze=False,
        figsize=(1.2 * columns + 4.2, height),
        gridspec_kw={"width_ratios": [1] * columns + [3.5]},
    )
    fig.subplots_adjust(
        left=0.01, right=0.99, bottom=0.01, top=1 - 1.0 / height, wspace=0.05, hspace=0.12
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
    fig, ax = plt.subplots(figsize=(6.5, 4))
    bins = np.linspace(min(-1e-3, float(np.min(cosines))), max(1e-3, float(np.max(cosines))), 31)
    if aligned is None or aligned.all() or not aligned.any():
        ax.hist(cosines, bins=bins, color="tab:blue", label=f"all ({len(cosines)})")
    else:
        ax.hist(  # stacked: each bar is the total, split into its two kinds
            [cosines[aligned], cosines[~aligned]],
            bins=bins,
            stacked=True,
            color=["tab:green", "tab:red"],
            label=[f"aligned ({int(aligned.sum())})", f"misaligned ({int((~aligned).sum())})"],
        )
    ax.axvline(0.0, color="black", linewidth=0.8, linestyle="--")
    ax.set_xlabel("cos(g_va, g_vt) of a triplet")
    ax.set_ylabel("triplets per bin")
    ax.set_title(title, fontsize=10)
    _legend_below(ax, ncol=2)
    return _save(fig, path)
