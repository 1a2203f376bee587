"""Classification metrics over several views per clip (linear probes and fine-tuning): NumPy.

Multi-view testing: a clip's class scores are the mean of its windows' softmax probabilities.
Top-k counts ties against the label (pessimistic, like the retrieval ranks):

    correct@k  <=>  #{ c != label : score_c >= score_label } < k
"""

from typing import Dict, Sequence

import numpy as np

TOP_K = (1, 5)


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def average_views(probabilities: np.ndarray) -> np.ndarray:
    """(N, V, C) per-view class probabilities -> (N, C) clip scores (mean over the V views)."""
    probabilities = np.asarray(probabilities)
    if probabilities.ndim != 3:
        raise ValueError(f"need (clips, views, classes) probabilities, got {probabilities.shape}")
    return probabilities.mean(axis=1)


def label_ranks(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(N, C) scores, (N,) labels -> (N,) pessimistic 1-based rank of the true class."""
    scores = np.asarray(scores)
    labels = np.asarray(labels).astype(np.int64)
    if scores.ndim != 2 or labels.shape != scores.shape[:1]:
        raise ValueError(f"need (N, C) scores and (N,) labels, got {scores.shape}, {labels.shape}")
    if labels.min(initial=0) < 0 or labels.max(initial=0) >= scores.shape[1]:
        raise ValueError(
            f"labels must lie in [0, {scores.shape[1]}), got [{labels.min()}, {labels.max()}]"
        )
    true = scores[np.arange(len(labels)), labels][:, None]  # (N, 1)
    return (scores >= true).sum(axis=1)  # (N,) 1 + ties/above


def topk_accuracy(
    scores: np.ndarray, labels: np.ndarray, top_k: Sequence[int] = TOP_K
) -> Dict[str, float]:
    """(N, C) scores, (N,) labels -> {'top1': percent, 'top5': percent, ...}.

    k larger than the number of classes is clipped to it (top-5 of 3 classes is 100%).
    """
    ranks = label_ranks(scores, labels)
    return {f"top{k}": float(100.0 * np.mean(ranks <= k)) for k in top_k}
