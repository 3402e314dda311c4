"""Model selection on PU data: criteria computed from labeled positives and unlabeled rows only.

A user with PU labels ``s`` (1 = labeled positive, 0 = unlabeled) and no negatives can still rank
heads on held-out PU data. Every criterion here is "higher is better" and takes scores of one head
(N,) or of K heads (N, K) at once (then returns (K,) values). The setting is SCAR (labeled
positives are a random sample of the positives) and π = p(y=1 | s=0) is the share of positives
among the unlabeled rows (the project's prior convention), so the unlabeled rows are a π mixture:
p_U(x) = π·p(x | y=1) + (1−π)·p(x | y=0), while the labeled positives follow p(x | y=1).

- :func:`pu_auc`: ROC-AUC of labeled positives against unlabeled rows. AUC_PU = π/2 + (1−π)·AUC_PN
  (a labeled positive beats an unlabeled positive half of the time, an unlabeled negative with
  probability AUC_PN), so it ranks heads as the PN AUC does; :func:`implied_pn_auc` inverts it.
- :func:`lee_liu`: Lee & Liu (2003), recall² / P(ŷ=1), proportional to precision·recall.
- :func:`pu_risk_accuracy`, :func:`pu_balanced_accuracy`: accuracy and balanced accuracy from the
  unbiased PU estimate of the 0-1 risk (du Plessis et al. 2014).
- :func:`bootstrap_interval`: percentile intervals of any of them.
- :func:`pu_scorer` / :data:`PU_SCORERS`: the criteria as scikit-learn scorers for
  :class:`~impulses.pu.estimator.PUClassifier` in :class:`~sklearn.model_selection.GridSearchCV`.

Pure numpy (and scipy's ranks through :func:`impulses.pu.metrics.fast_auc`); scikit-learn is only
imported for weighted AUCs.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from impulses.errors import ParameterError

Values = float | np.ndarray  # one head: float; K heads: (K,)


# ---------------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------------
def _labels(s: Any, n: int | None = None) -> np.ndarray:
    """PU labels as a bool (N,) array (True = labeled positive), validated."""
    arr = np.asarray(s)
    if arr.ndim == 2 and 1 in arr.shape:  # a column or row vector
        arr = arr.reshape(-1)
    if arr.ndim != 1:
        raise ParameterError("s", f"must be a 1-D array of 0/1 PU labels, got shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise ParameterError("s", f"has {arr.shape[0]} labels but there are {n} scores")
    if not np.isin(arr, (0, 1)).all():
        raise ParameterError("s", "must hold 0 (unlabeled) or 1 (labeled positive) only")
    return arr.astype(bool)


def _scores(scores: Any, name: str = "scores") -> tuple[np.ndarray, bool]:
    """Scores as float64 (N, K) and whether the caller gave one head (N,)."""
    arr = np.asarray(scores, dtype=np.float64)
    if arr.ndim not in (1, 2):
        raise ParameterError(name, f"must have shape (N,) or (N, K), got {arr.shape}")
    return (arr[:, None], True) if arr.ndim == 1 else (arr, False)


def _prior(prior: Any, k: int, name: str = "prior") -> np.ndarray:
    """A float or (K,) priors as (K,) float64, each in (0, 1)."""
    if prior is None:
        raise ParameterError(name, "is required (π = p(y=1 | s=0), a value in (0, 1))")
    try:
        arr = np.broadcast_to(np.asarray(prior, dtype=np.float64), (k,))
    except (TypeError, ValueError):
        arr = None
    if arr is None or not (np.isfinite(arr).all() and ((arr > 0) & (arr < 1)).all()):
        raise ParameterError(name, f"must be in (0, 1), a float or one per head ({k} heads), got {prior!r}")
    return arr


def _out(values: np.ndarray, one: bool) -> Values:
    return float(values[0]) if one else values


def _need_both(s: np.ndarray) -> bool:
    return bool(s.any() and not s.all())


# ---------------------------------------------------------------------------------------------
# criteria
# ---------------------------------------------------------------------------------------------
def pu_auc(scores: Any, s: Any, sample_weight: Any = None) -> Values:
    """ROC-AUC of the labeled positives against the unlabeled rows (ties count one half).

    Args:
        scores: Scores (N,) or (N, K), higher meaning more likely positive (logits).
        s: PU labels (N,): 1 = labeled positive, 0 = unlabeled.
        sample_weight: Optional row weights (N,).

    Returns:
        AUC_PU per head; NaN where ``s`` holds only one kind of row. Under SCAR
        AUC_PU = π/2 + (1−π)·AUC_PN.
    """
    x, one = _scores(scores)
    lab = _labels(s, x.shape[0])
    if not _need_both(lab):
        return _out(np.full(x.shape[1], np.nan), one)
    if sample_weight is None:
        from impulses.pu.metrics import fast_auc

        return _out(fast_auc(x, lab.astype(np.int64)), one)
    from sklearn.metrics import roc_auc_score

    w = np.asarray(sample_weight, dtype=np.float64).reshape(-1)
    return _out(np.array([roc_auc_score(lab, x[:, k], sample_weight=w) for k in range(x.shape[1])]), one)


def implied_pn_auc(pu_auc: Any, prior: Any) -> Values:
    """The PN AUC that a PU-AUC implies under SCAR: (AUC_PU − π/2) / (1 − π).

    Args:
        pu_auc: AUC_PU, a float or (K,).
        prior: π = p(y=1 | s=0), a float or (K,).

    Returns:
        The AUC_PN estimate (not clipped: sampling noise can take it outside [0, 1]).
    """
    auc = np.asarray(pu_auc, dtype=np.float64)
    pi = _prior(prior, max(auc.size, np.size(prior)))
    out = (auc - pi / 2) / (1 - pi)
    return float(out[0]) if auc.ndim == 0 and np.ndim(prior) == 0 else out


def lee_liu(decisions: Any, s: Any) -> Values:
    """Lee & Liu's criterion recall² / P(ŷ=1), from PU data only.

    recall = mean of ŷ over the labeled positives (under SCAR, the recall on all positives) and
    P(ŷ=1) = mean of ŷ over the unlabeled rows. Since P(y=1 | ŷ=1) = π·recall / P(ŷ=1) on the
    unlabeled population, recall² / P(ŷ=1) = precision·recall / π: it ranks heads by
    precision·recall, with no negative label needed.

    Args:
        decisions: Predictions ŷ (N,) or (N, K), 0/1 or bool (e.g. ``logits > 0``).
        s: PU labels (N,): 1 = labeled positive, 0 = unlabeled.

    Returns:
        The criterion per head; 0 when nothing is predicted positive, NaN when the labeled
        positives are (recall > 0) but no unlabeled row is (P(ŷ=1) = 0: undefined), or when ``s``
        holds only one kind of row.
    """
    d = np.asarray(decisions)
    if d.dtype != bool and not np.isin(d, (0, 1)).all():
        raise ParameterError("decisions", "must be 0/1 or bool predictions (threshold the scores first)")
    x, one = _scores(d.astype(np.float64), "decisions")
    lab = _labels(s, x.shape[0])
    if not _need_both(lab):
        return _out(np.full(x.shape[1], np.nan), one)
    recall = x[lab].mean(0)
    rate = x[~lab].mean(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = np.where(
            rate > 0, recall**2 / np.where(rate > 0, rate, 1.0), np.where(recall > 0, np.nan, 0.0)
        )
    return _out(value, one)


def pu_error_rates(scores: Any, s: Any, prior: Any, *, threshold: float = 0.0) -> tuple[Values, Values]:
    """The false-negative and false-positive rates of ``scores > threshold``, estimated from PU data.

    Under SCAR the labeled positives follow p(x | y=1), so FNR = P(ŷ=0 | y=1) is the share of
    labeled positives predicted negative. The unlabeled rows are a π mixture, so
    P_U(ŷ=1) = π·(1 − FNR) + (1−π)·FPR, hence FPR = (P_U(ŷ=1) − π·(1 − FNR)) / (1 − π). Finite
    samples can make that estimate negative (or above 1); it is clipped to [0, 1], the counterpart
    of nnPU's non-negative correction of the negative risk.

    Args:
        scores: Scores (N,) or (N, K).
        s: PU labels (N,): 1 = labeled positive, 0 = unlabeled.
        prior: π = p(y=1 | s=0), a float or one per head (K,).
        threshold: Rows with ``scores > threshold`` are predicted positive.

    Returns:
        (FNR, FPR) per head; NaN where ``s`` holds only one kind of row.
    """
    x, one = _scores(scores)
    lab = _labels(s, x.shape[0])
    pi = _prior(prior, x.shape[1])
    if not _need_both(lab):
        nan = np.full(x.shape[1], np.nan)
        return _out(nan, one), _out(nan, one)
    pred = x > threshold
    fnr = 1.0 - pred[lab].mean(0)
    positive_rate_u = pred[~lab].mean(0)
    fpr = np.clip((positive_rate_u - pi * (1 - fnr)) / (1 - pi), 0.0, 1.0)
    return _out(fnr, one), _out(fpr, one)


def pu_risk_accuracy(
    scores: Any, s: Any, prior: Any, *, threshold: float = 0.0, prevalence: Any = None
) -> Values:
    """Accuracy of ``scores > threshold`` estimated from PU data: 1 − the PU estimate of the 0-1 risk.

    With FNR and FPR from :func:`pu_error_rates`, the 0-1 risk on a population whose positive share
    is P is R = P·FNR + (1−P)·FPR. By default P = π, the unlabeled population; there (before
    clipping FPR) R = P_U(ŷ=1) − π + 2π·FNR, the unbiased PU risk of du Plessis et al. (2014):
    mean over U of [ŷ=1] plus π times mean over P of ([ŷ=0] − [ŷ=1]).

    Args:
        scores: Scores (N,) or (N, K).
        s: PU labels (N,): 1 = labeled positive, 0 = unlabeled.
        prior: π = p(y=1 | s=0), a float or one per head (K,).
        threshold: Rows with ``scores > threshold`` are predicted positive.
        prevalence: P, the positive share of the population the accuracy is for (default π).

    Returns:
        1 − R per head; NaN where ``s`` holds only one kind of row.
    """
    fnr, fpr = pu_error_rates(scores, s, prior, threshold=threshold)
    k = np.size(fnr)
    p = _prior(
        prior if prevalence is None else prevalence, k, "prior" if prevalence is None else "prevalence"
    )
    acc = 1.0 - (p * np.asarray(fnr) + (1 - p) * np.asarray(fpr))
    return float(acc[0]) if np.ndim(fnr) == 0 else acc


def pu_balanced_accuracy(scores: Any, s: Any, prior: Any, *, threshold: float = 0.0) -> Values:
    """Balanced accuracy 1 − (FNR + FPR)/2 of ``scores > threshold``, FNR and FPR from :func:`pu_error_rates`.

    Args:
        scores: Scores (N,) or (N, K).
        s: PU labels (N,): 1 = labeled positive, 0 = unlabeled.
        prior: π = p(y=1 | s=0), a float or one per head (K,).
        threshold: Rows with ``scores > threshold`` are predicted positive.

    Returns:
        The balanced accuracy per head (it does not depend on the prevalence); NaN where ``s``
        holds only one kind of row.
    """
    fnr, fpr = pu_error_rates(scores, s, prior, threshold=threshold)
    out = 1.0 - (np.asarray(fnr) + np.asarray(fpr)) / 2
    return float(out) if np.ndim(fnr) == 0 else out


# ---------------------------------------------------------------------------------------------
# intervals
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Interval:
    """A criterion's value on the data and its bootstrap percentile interval (floats or (K,) arrays)."""

    estimate: Values
    low: Values
    high: Values


def bootstrap_interval(
    fn: Callable[..., Values],
    scores: Any,
    s: Any,
    *args: Any,
    n: int = 200,
    seed: int = 0,
    level: float = 0.95,
    **kwargs: Any,
) -> Interval:
    """``fn(scores, s, *args, **kwargs)`` with a percentile bootstrap interval.

    Each of the ``n`` replicates resamples the labeled positives and the unlabeled rows with
    replacement, separately (a held-out PU split fixes how many of each it has), and evaluates
    ``fn`` on them; the interval is the replicates' (1 − level)/2 and (1 + level)/2 quantiles,
    ignoring NaN replicates.

    Args:
        fn: A criterion taking ``(scores, s, ...)``, e.g. :func:`pu_auc` or :func:`lee_liu`.
        scores: Its first argument (N,) or (N, K) (for :func:`lee_liu`, the decisions).
        s: PU labels (N,).
        *args: Further positional arguments of ``fn`` (e.g. the prior).
        n: Bootstrap replicates.
        seed: Seed of the resampling.
        level: Coverage of the interval, in (0, 1).
        **kwargs: Keyword arguments of ``fn``.

    Returns:
        The estimate on the data and the interval.
    """
    if not (isinstance(n, int) and n >= 1):
        raise ParameterError("n", f"must be an integer >= 1, got {n!r}")
    if not 0 < level < 1:
        raise ParameterError("level", f"must be in (0, 1), got {level!r}")
    x = np.asarray(scores)
    lab = _labels(s, x.shape[0] if x.ndim else None)
    estimate = fn(x, lab.astype(np.int8), *args, **kwargs)
    rng = np.random.default_rng(seed)
    pos, unl = np.flatnonzero(lab), np.flatnonzero(~lab)
    reps = []
    for _ in range(n):
        rows = (
            np.concatenate([rng.choice(pos, pos.size), rng.choice(unl, unl.size)])
            if pos.size and unl.size
            else np.arange(lab.size)
        )
        reps.append(np.asarray(fn(x[rows], lab[rows].astype(np.int8), *args, **kwargs), dtype=np.float64))
    stacked = np.stack(reps)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: NaN bounds
        low, high = np.nanquantile(stacked, [(1 - level) / 2, (1 + level) / 2], axis=0)
    if np.ndim(estimate) == 0:
        return Interval(float(estimate), float(low), float(high))
    return Interval(np.asarray(estimate), low, high)


# ---------------------------------------------------------------------------------------------
# selection and scikit-learn scorers
# ---------------------------------------------------------------------------------------------
CRITERIA = ("pu-auc", "lee-liu", "pu-accuracy", "pu-balanced-accuracy")


def criterion(name: str, logits: Any, s: Any, prior: Any = None, *, threshold: float = 0.0) -> Values:
    """The PU criterion ``name`` of heads with ``logits`` (N,) or (N, K) on PU labels ``s``.

    Args:
        name: One of :data:`CRITERIA`: ``pu-auc`` (:func:`pu_auc`), ``lee-liu`` (:func:`lee_liu` of
            ``logits > threshold``), ``pu-accuracy`` (:func:`pu_risk_accuracy`) or
            ``pu-balanced-accuracy`` (:func:`pu_balanced_accuracy`).
        logits: Scores (N,) or (N, K).
        s: PU labels (N,): 1 = labeled positive, 0 = unlabeled.
        prior: π = p(y=1 | s=0), a float or one per head; needed by the accuracies only.
        threshold: The decision threshold on the logits.

    Returns:
        The criterion per head (higher is better).
    """
    if name == "pu-auc":
        return pu_auc(logits, s)
    if name == "lee-liu":
        return lee_liu(np.asarray(logits) > threshold, s)
    if name == "pu-accuracy":
        return pu_risk_accuracy(logits, s, prior, threshold=threshold)
    if name == "pu-balanced-accuracy":
        return pu_balanced_accuracy(logits, s, prior, threshold=threshold)
    raise ParameterError("name", f"must be one of {', '.join(CRITERIA)}, got {name!r}")


class PUScorer:
    """A scikit-learn scorer ``scorer(estimator, X, y)``: a PU criterion of a fitted binary classifier.

    ``y`` holds PU labels in the estimator's encoding: rows equal to its ``pos_label_`` (for
    other classifiers: ``classes_[1]``) are labeled positives, the rest unlabeled. The logits are
    ``decision_function(X)``, oriented towards that label. Works on a
    :class:`~sklearn.pipeline.Pipeline` ending in such a classifier.

    Args:
        name: One of :data:`CRITERIA`.
        prior: π for the accuracies; ``None`` takes the final estimator's ``prior`` parameter. A
            grid over the prior should give it, or each model is judged at its own assumed π.
    """

    def __init__(self, name: str, prior: float | None = None) -> None:
        if name not in CRITERIA:
            raise ParameterError("name", f"must be one of {', '.join(CRITERIA)}, got {name!r}")
        if prior is not None:
            _prior(prior, 1)
        self.name = name
        self.prior = prior

    def __repr__(self) -> str:
        return f"pu_scorer({self.name!r}, prior={self.prior!r})"

    def __call__(self, estimator: Any, X: Any, y: Any, sample_weight: Any = None) -> float:
        """The criterion on ``(X, y)``, a float (NaN when ``y`` holds only one kind of row)."""
        final = estimator[-1] if hasattr(estimator, "steps") else estimator
        classes = np.asarray(final.classes_)
        if classes.size != 2:
            raise ParameterError("estimator", f"must be a binary classifier, it has {classes.size} classes")
        pos = getattr(final, "pos_label_", classes[1])
        logits = np.asarray(estimator.decision_function(X), dtype=np.float64).reshape(-1)
        if pos == classes[0]:
            logits = -logits
        s = (np.asarray(y).reshape(-1) == pos).astype(np.int8)
        if sample_weight is not None:
            if self.name != "pu-auc":
                raise ParameterError("sample_weight", f"is not supported by the {self.name} criterion")
            return float(pu_auc(logits, s, sample_weight=sample_weight))
        needs_prior = self.name in ("pu-accuracy", "pu-balanced-accuracy")
        prior = self.prior if self.prior is not None or not needs_prior else getattr(final, "prior", None)
        return float(criterion(self.name, logits, s, prior))


def pu_scorer(name: str, prior: float | None = None) -> PUScorer:
    """A scorer for ``GridSearchCV(..., scoring=pu_scorer("pu-auc"))``; see :class:`PUScorer`.

    Args:
        name: One of :data:`CRITERIA`.
        prior: π for ``pu-accuracy`` / ``pu-balanced-accuracy`` (default: the estimator's prior).

    Returns:
        The scorer (higher is better).
    """
    return PUScorer(name, prior)


#: Every criterion as a scorer (accuracies at each estimator's own prior), for multi-metric searches.
PU_SCORERS: dict[str, PUScorer] = {name: PUScorer(name) for name in CRITERIA}
