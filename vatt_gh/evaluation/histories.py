"""The cos(g_va, g_vt) histograms a pre-training run logged, as percentiles over steps (Fig. 4).

`vatt_gh.loop` writes one histogram `harmonize/cosines` per summary step: the cosines of every
group of every replica at that step (one value per replica with granularity 'replica', one per
triplet with 'example'). TensorBoard stores a histogram as (buckets, 3) rows
[left edge, right edge, count]; percentiles are read off its cumulative counts, the mass of a
bucket spread uniformly over it (a zero-width bucket is a point mass).

    history = read_histograms("/runs/baseline/train")             # CosineHistory
    history.steps, history.percentiles[:, PERCENTILES.index(50)]

With few cosines per summary step (one per replica), percentiles of one step say little:
`min_count` pools consecutive summary steps until each point holds at least that many cosines.
"""

import dataclasses
import math
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf

TAG = "harmonize/cosines"
PERCENTILES = (5, 25, 50, 75, 95)


@dataclasses.dataclass(frozen=True)
class CosineHistory:
    """Per point: percentiles (S, P), fraction of negative cosines (S,), counts (S,) of cosines,
    and the summary steps pooled into it (S,); `steps` is each point's last step."""

    steps: np.ndarray
    percentiles: np.ndarray
    fraction_negative: np.ndarray
    counts: np.ndarray
    percentile_levels: Sequence[float] = PERCENTILES
    summaries_per_point: Optional[np.ndarray] = None


def histogram_percentiles(buckets: np.ndarray, levels: Sequence[float]) -> np.ndarray:
    """(K, 3) [left, right, count] buckets -> (P,) values at the percentile levels (0-100)."""
    buckets = np.asarray(buckets, np.float64)
    buckets = buckets[buckets[:, 2] > 0]
    if not len(buckets):
        return np.full(len(levels), np.nan)
    left, right, counts = buckets[:, 0], buckets[:, 1], buckets[:, 2]
    cumulative = np.cumsum(counts)
    total = cumulative[-1]
    out = []
    for level in levels:
        target = level / 100.0 * total
        i = min(int(np.searchsorted(cumulative, target, side="left")), len(counts) - 1)
        before = cumulative[i] - counts[i]
        share = np.clip((target - before) / counts[i], 0.0, 1.0)
        out.append(left[i] + share * (right[i] - left[i]))
    return np.array(out)


def fraction_below(buckets: np.ndarray, threshold: float = 0.0) -> float:
    """Share of the histogram's mass strictly below `threshold` (uniform within a bucket)."""
    buckets = np.asarray(buckets, np.float64)
    left, right, counts = buckets[:, 0], buckets[:, 1], buckets[:, 2]
    total = counts.sum()
    if total <= 0:
        return float("nan")
    width = right - left
    below = np.where(
        width > 0,
        np.clip((threshold - left) / np.where(width > 0, width, 1.0), 0.0, 1.0),
        (left < threshold).astype(np.float64),
    )
    return float((below * counts).sum() / total)


def read_histograms(
    log_dir: str,
    tag: str = TAG,
    levels: Sequence[float] = PERCENTILES,
    min_count: int = 1,
    min_points: int = 8,
) -> CosineHistory:
    """Every `tag` histogram in the event files of `log_dir` (e.g. <model_dir>/train).

    A step logged twice (a resumed run) keeps its last value. Every k consecutive summary steps
    are pooled into a point (their buckets merged), k the smallest with `min_count` cosines per
    point at the median count per step, but at most what leaves `min_points` points; a short
    remainder joins the last point. Raises FileNotFoundError / ValueError naming the directory
    when there are no event files or no such histogram.
    """
    files = sorted(tf.io.gfile.glob(f"{log_dir.rstrip('/')}/events.out.tfevents.*"))
    if not files:
        raise FileNotFoundError(f"no TensorBoard event files in {log_dir!r}")
    by_step = {}
    for path in files:
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag == tag:
                    by_step[int(event.step)] = np.asarray(tf.make_ndarray(value.tensor))
    if not by_step:
        raise ValueError(f"no {tag!r} histogram in the event files of {log_dir!r}")
    steps = sorted(by_step)
    per_step = max(1.0, float(np.median([by_step[s][:, 2].sum() for s in steps])))
    k = min(math.ceil(min_count / per_step), max(1, len(steps) // max(1, min_points)))
    groups = [steps[i : i + k] for i in range(0, len(steps), k)]
    if len(groups) > 1 and len(groups[-1]) <= k / 2:
        last = groups.pop()
        groups[-1] = groups[-1] + last
    merged = [_merge([by_step[s] for s in group]) for group in groups]
    return CosineHistory(
        steps=np.array([group[-1] for group in groups]),
        percentiles=np.stack([histogram_percentiles(b, levels) for b in merged]),
        fraction_negative=np.array([fraction_below(b, 0.0) for b in merged]),
        counts=np.array([float(b[:, 2].sum()) for b in merged]),
        percentile_levels=tuple(levels),
        summaries_per_point=np.array([len(group) for group in groups]),
    )


def _merge(histograms) -> np.ndarray:
    """Buckets of several histograms as one, ordered by left then right edge (percentiles of
    overlapping buckets are then approximate within a bucket's width)."""
    buckets = np.concatenate([np.asarray(h, np.float64).reshape(-1, 3) for h in histograms])
    return buckets[np.lexsort((buckets[:, 1], buckets[:, 0]))]
