"""Accuracy metrics, computed by full (exact) ranking of score matrices.

All functions take plain arrays so they can be checked on hand-made cases. Ties are counted
against the method (pessimistic): an item whose score equals the ground truth's score ranks
ahead of it. So two items with identical codes cannot both be found at rank 1, and a method that
scores everything equal gets recall 0, not 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def target_ranks(S: np.ndarray, targets: np.ndarray, exclude: np.ndarray | None = None) -> np.ndarray:
    """0-based pessimistic rank of ``targets[i]`` in row i of ``S`` (higher score = better).

    rank = number of other columns with a score >= the target's score (excluding column
    ``exclude[i]`` if given, e.g. the query itself)."""
    S = np.asarray(S)
    targets = np.asarray(targets, dtype=np.int64)
    rows = np.arange(S.shape[0])
    t = S[rows, targets][:, None]
    ge = S >= t
    ge[rows, targets] = False
    if exclude is not None:
        ge[rows, np.asarray(exclude, dtype=np.int64)] = False
    return ge.sum(axis=1)


def recall_at(ranks: np.ndarray, ks: Sequence[int]) -> dict[int, float]:
    """Fraction of queries whose ground truth ranks within the top k, for each k."""
    ranks = np.asarray(ranks)
    return {int(k): float((ranks < k).mean()) for k in ks}


def paired_recall(S: np.ndarray, ks: Sequence[int] = (1, 5, 10)) -> dict[int, float]:
    """Text->image recall@k where query i's ground truth is gallery item i (S is (n, n))."""
    n = S.shape[0]
    return recall_at(target_ranks(S, np.arange(n)), ks)


def topk_excluding_self(S: np.ndarray, k: int, self_index: np.ndarray | None) -> np.ndarray:
    """Indices of the k highest scores per row, never returning ``self_index[i]`` in row i.
    Ties at the k-th place are broken by column order (stable)."""
    S = np.array(S, dtype=np.float64, copy=True)
    if self_index is not None:
        S[np.arange(S.shape[0]), np.asarray(self_index, dtype=np.int64)] = -np.inf
    order = np.argsort(-S, axis=1, kind="stable")
    return order[:, :k]


def knn_recall(S_true: np.ndarray, S_approx: np.ndarray, k: int = 10, self_index: np.ndarray | None = None) -> float:
    """Mean |top-k(S_approx) ∩ top-k(S_true)| / k over rows (queries); ``self_index[i]`` (the
    query's own gallery column) is excluded from both lists."""
    a = topk_excluding_self(S_true, k, self_index)
    b = topk_excluding_self(S_approx, k, self_index)
    hits = [np.intersect1d(a[i], b[i], assume_unique=True).size for i in range(a.shape[0])]
    return float(np.mean(hits) / k)


def zero_shot(S_class_item: np.ndarray, labels: np.ndarray, ks: Sequence[int] = (1, 5)) -> dict[int, float]:
    """Zero-shot top-k accuracy. ``S_class_item`` (C, n): score of class prompt c against item i;
    ``labels`` (n,) true class index of each item."""
    return recall_at(target_ranks(np.asarray(S_class_item).T, labels), ks)


def nn1_accuracy(S: np.ndarray, labels: np.ndarray, self_index: np.ndarray | None = None) -> float:
    """Leave-one-out 1-NN label accuracy: query i (row) takes the label of its best-scoring
    gallery column other than ``self_index[i]``. Ties go to the lowest column index."""
    nn = topk_excluding_self(S, 1, self_index)[:, 0]
    labels = np.asarray(labels)
    qlabels = labels if self_index is None else labels[np.asarray(self_index)]
    return float((labels[nn] == qlabels).mean())


def mean_cosine(X: np.ndarray, X_hat: np.ndarray) -> float:
    """Mean cosine similarity between corresponding rows."""
    X = np.asarray(X, dtype=np.float64)
    X_hat = np.asarray(X_hat, dtype=np.float64)
    num = (X * X_hat).sum(axis=1)
    den = np.linalg.norm(X, axis=1) * np.linalg.norm(X_hat, axis=1)
    return float(np.mean(num / np.maximum(den, 1e-12)))
