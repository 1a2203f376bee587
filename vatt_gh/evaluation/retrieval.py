"""Zero-shot video-text retrieval metrics (paper Section 4.3, docs/evaluation.md): pure NumPy.

Clip `i`'s video and text embeddings (vt space) are a matching pair; every other clip is a
negative. Scores are cosine similarities of L2-normalised embeddings.

Ties are counted against the query (pessimistic rank):

    rank_i = 1 + #{ j != i : score(i, j) >= score(i, i) }

so a collapsed model that gives every candidate the same score ranks every query last, not first.
Recall@K is the percentage of queries with rank <= K; the median rank is `np.median` of the ranks
(it may end in .5 for an even number of queries).
"""

from typing import Dict, Sequence

import numpy as np

RECALL_AT = (1, 5, 10)


def l2_normalize(x: np.ndarray, axis: int = -1, eps: float = 1e-12) -> np.ndarray:
    """x / |x| along `axis` (a zero vector stays zero)."""
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), eps)


def similarity_matrix(queries: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """(N, D), (M, D) -> (N, M) cosine similarities."""
    return l2_normalize(queries) @ l2_normalize(candidates).T


def pessimistic_ranks(scores: np.ndarray) -> np.ndarray:
    """(N, N) scores, the positive of row i in column i -> (N,) int ranks, 1 = best.

    A candidate that ties with the positive is counted as ranked above it.
    """
    scores = np.asarray(scores)
    if scores.ndim != 2 or scores.shape[0] != scores.shape[1]:
        raise ValueError(f"scores must be a square (N, N) matrix, got {scores.shape}")
    positive = np.diagonal(scores)[:, None]  # (N, 1)
    at_least = scores >= positive  # (N, N), diagonal True
    return at_least.sum(axis=1).astype(np.int64)  # 1 + others >= positive


def recall_metrics(ranks: Sequence[int], recall_at: Sequence[int] = RECALL_AT) -> Dict[str, float]:
    """(N,) ranks -> {'R@K': percent of ranks <= K, 'median_rank', 'mean_rank'}."""
    ranks = np.asarray(ranks)
    out = {f"R@{k}": float(100.0 * np.mean(ranks <= k)) for k in recall_at}
    out["median_rank"] = float(np.median(ranks))
    out["mean_rank"] = float(np.mean(ranks))
    return out


def retrieval_metrics(
    video_embeddings: np.ndarray, text_embeddings: np.ndarray, recall_at: Sequence[int] = RECALL_AT
) -> Dict[str, float]:
    """(N, D) video and (N, D) text embeddings of N clips -> text-to-video and video-to-text metrics.

    Keys: 't2v/R@1', 't2v/R@5', 't2v/R@10', 't2v/median_rank', 't2v/mean_rank', the same for
    'v2t/', and 'num_clips'.
    """
    video_embeddings = np.asarray(video_embeddings)
    text_embeddings = np.asarray(text_embeddings)
    if video_embeddings.shape != text_embeddings.shape or video_embeddings.ndim != 2:
        raise ValueError(
            f"need (N, D) video and text embeddings of the same shape, got "
            f"{video_embeddings.shape} and {text_embeddings.shape}"
        )
    scores = similarity_matrix(text_embeddings, video_embeddings)  # (N text, N video)
    out = {"num_clips": int(scores.shape[0])}
    for direction, matrix in (("t2v", scores), ("v2t", scores.T)):
        for name, value in recall_metrics(pessimistic_ranks(matrix), recall_at).items():
            out[f"{direction}/{name}"] = value
    return out
