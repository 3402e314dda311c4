"""Test-set metrics per head: accuracy, F1, ROC-AUC and average precision (scikit-learn's, imported when used).

Scores are logits; the decision is ``logit > 0`` (the sign rule of the reference code, where a logit
of exactly 0 counts as negative). F1 is that of the positive class, 0 when a head predicts no
positive and the test set has none (``zero_division=0``).

A test set with only one class has no ROC curve: ``auc`` and ``ap`` are then **NaN** (not an
error, so a sweep still reports accuracy and F1), and :func:`evaluate_heads` says so in the
``note`` of each row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from impulses.errors import ParameterError

METRICS = ("accuracy", "f1", "auc", "ap")


def _check(scores: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64)
    scores = scores[:, None] if scores.ndim == 1 else scores
    y = np.asarray(y).reshape(-1)
    if scores.ndim != 2 or scores.shape[0] != y.shape[0]:
        raise ParameterError(("scores", "y"), f"do not fit: {scores.shape[0]} scores but {y.shape[0]} labels")
    if not np.isin(y, (0, 1)).all():
        raise ParameterError("y", "must hold only 0 and 1")
    return scores, y.astype(np.int64)


def evaluate_heads(
    scores: np.ndarray, y: np.ndarray, names: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """One dict per head (column of ``scores``): accuracy, f1, auc, ap (NaN for a one-class test set)."""
    from sklearn.metrics import accuracy_score, average_precision_score, f1_score, roc_auc_score

    scores, y = _check(scores, y)
    one_class = np.unique(y).size < 2
    rows = []
    for k in range(scores.shape[1]):
        pred = (scores[:, k] > 0).astype(np.int64)
        row: dict[str, Any] = {"head": names[k] if names is not None else k}
        row["accuracy"] = float(accuracy_score(y, pred))
        row["f1"] = float(f1_score(y, pred, zero_division=0))
        if one_class:
            row["auc"] = row["ap"] = float("nan")
            row["note"] = f"test set has only class {int(y[0]) if y.size else '-'}: auc and ap are undefined"
        else:
            row["auc"] = float(roc_auc_score(y, scores[:, k]))
            row["ap"] = float(average_precision_score(y, scores[:, k]))
        rows.append(row)
    return rows


def fast_auc(scores: np.ndarray, y: np.ndarray) -> np.ndarray:
    """ROC-AUC of every column at once (Mann-Whitney U with average ranks for ties), NaN for one class.

    Equals :func:`sklearn.metrics.roc_auc_score` per column; used for per-epoch histories where
    calling scikit-learn K times per epoch would cost more than the training.
    """
    scores, y = _check(scores, y)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return np.full(scores.shape[1], np.nan)
    rank_sum = average_ranks(scores)[y == 1].sum(0)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def average_ranks(scores: np.ndarray) -> np.ndarray:
    """1-based ranks of each column's values, ties sharing their average rank (scipy's ``rankdata``)."""
    scores = np.asarray(scores, dtype=np.float64)
    n, k = scores.shape
    order = np.argsort(scores, axis=0, kind="stable")
    ranks = np.empty((n, k), dtype=np.float64)
    for j in range(k):
        sorted_j = scores[order[:, j], j]
        # runs of equal values: each gets the mean of the positions it spans (1-based)
        starts = np.flatnonzero(np.concatenate([[True], sorted_j[1:] != sorted_j[:-1]]))
        ends = np.concatenate([starts[1:], [n]])
        mean_rank = (starts + ends + 1) / 2.0
        ranks[order[:, j], j] = np.repeat(mean_rank, ends - starts)
    return ranks
