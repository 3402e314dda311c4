"""Test-set metrics per head: accuracy, F1, ROC-AUC and average precision, in NumPy (equal to scikit-learn's).

scikit-learn is not imported: its import (with scipy) takes longer than training one head, and
``impulses train-head`` should wait only for training. The values equal scikit-learn's
``accuracy_score``, ``f1_score``, ``roc_auc_score`` and ``average_precision_score`` (tested).

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
    scores, y = _check(scores, y)
    one_class = np.unique(y).size < 2
    pos = y.astype(bool)[:, None]
    pred = scores > 0
    tp = (pred & pos).sum(0)
    wrong = (pred != pos).sum(0)
    accuracy = (pred == pos).mean(0) if y.size else np.zeros(scores.shape[1])
    f1 = np.where(2 * tp + wrong > 0, 2 * tp / np.maximum(2 * tp + wrong, 1), 0.0)
    auc = ap = np.full(scores.shape[1], np.nan)
    if not one_class:
        auc, ap = fast_auc(scores, y), average_precision(scores, y)
    rows = []
    for k in range(scores.shape[1]):
        row: dict[str, Any] = {"head": names[k] if names is not None else k}
        row.update(accuracy=float(accuracy[k]), f1=float(f1[k]), auc=float(auc[k]), ap=float(ap[k]))
        if one_class:
            row["note"] = f"test set has only class {int(y[0]) if y.size else '-'}: auc and ap are undefined"
        rows.append(row)
    return rows


def average_precision(scores: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Average precision of every column (scikit-learn's ``average_precision_score``), NaN without positives.

    AP = Σ (Rₙ − Rₙ₋₁) Pₙ over the distinct score thresholds, highest first; tied scores form one
    threshold.
    """
    scores, y = _check(scores, y)
    n_pos = int(y.sum())
    out = np.full(scores.shape[1], np.nan)
    if n_pos == 0:
        return out
    for k in range(scores.shape[1]):
        order = np.argsort(-scores[:, k], kind="stable")
        s_k, y_k = scores[order, k], y[order]
        last = np.flatnonzero(np.concatenate([s_k[1:] != s_k[:-1], [True]]))  # end of each tie run
        tps = np.cumsum(y_k)[last]
        precision = tps / (last + 1)
        recall_gain = np.diff(tps, prepend=0) / n_pos
        out[k] = float(np.sum(recall_gain * precision))
    return out


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
