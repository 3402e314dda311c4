"""Class-prior estimation from PU data: BBE (Garg et al. 2021) and Elkan–Noto (2008), plus prior conversions.

Both estimators return π = p(y=1 | s=0), the share of positives among the unlabeled samples, which
is the project's prior convention. For BBE that is exactly the quantity it estimates: the mixture
proportion of the positive distribution in the unlabeled distribution (under SCAR, labeled
positives are a random sample of all positives, so U = π·P + (1−π)·N).

Both need held-out scores of a P-vs-U classifier. We use a standardized linear logistic regression
(scikit-learn) and *cross-fitting*: the samples are split into ``n_folds`` stratified folds and every
sample is scored by the model trained on the other folds, so all labeled positives count towards
the estimate (the paper holds out a single split; ``cross_fit=False`` does that, half/half).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from impulses.errors import ImpulsesError, ParameterError


# --------------------------------------------------------------------------------------------------
# Conversions between the overall class prior p(y=1) and π = p(y=1 | s=0)
# --------------------------------------------------------------------------------------------------
def prior_from_class_prior(class_prior: float, label_frequency: float) -> float:
    """π = p(y=1|s=0) from p = p(y=1) and c = p(s=1|y=1): π = (1−c)·p / (1−c·p)."""
    _check_unit("class_prior", class_prior)
    _check_unit("label_frequency", label_frequency)
    denominator = 1.0 - label_frequency * class_prior
    if denominator <= 0:
        raise ImpulsesError("class_prior = label_frequency = 1: every sample is labeled, π is undefined")
    return (1.0 - label_frequency) * class_prior / denominator


def class_prior_from_prior(prior: float, label_frequency: float) -> float:
    """p(y=1) from π = p(y=1|s=0) and c, the inverse of :func:`prior_from_class_prior`: p = π / (1 − c + c·π)."""
    _check_unit("prior", prior)
    _check_unit("label_frequency", label_frequency)
    denominator = 1.0 - label_frequency + label_frequency * prior
    if denominator <= 0:
        raise ImpulsesError("label_frequency = 1 with prior = 0: p(y=1) is undefined")
    return prior / denominator


def _check_unit(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0 or math.isnan(value):
        raise ParameterError(name, f"= {value}: must be in [0, 1]")


# --------------------------------------------------------------------------------------------------
# Estimators on held-out classifier scores
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PriorEstimate:
    """An estimate of π = p(y=1 | s=0); BBE adds its confidence interval ``[lower, upper]``."""

    method: str  # "bbe" or "elkan-noto"
    prior: float
    lower: float | None = None
    upper: float | None = None
    bound: float | None = None  # half-width of BBE's interval (before clipping to [0, 1])
    details: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def bbe_from_scores(
    p_scores: np.ndarray, u_scores: np.ndarray, *, delta: float = 0.1, gamma: float = 0.01
) -> PriorEstimate:
    """Best-bin estimation (Garg et al. 2021, Algorithm 1) on held-out scores of labeled positives and unlabeled.

    For every threshold c among the scores, q̂_p(c) and q̂_u(c) are the shares of P and U scoring at
    least c; ĉ minimises q̂_u/q̂_p + (1+γ)·ε/q̂_p with ε = √(log(4/δ)/2n_p) + √(log(4/δ)/2n_u), and the
    estimate is q̂_u(ĉ)/q̂_p(ĉ) ± (1+γ)·ε/q̂_p(ĉ). The authors' code uses log(1/δ) in ε; we follow the
    paper. Higher scores must mean "more positive".
    """
    p = np.sort(np.asarray(p_scores, dtype=np.float64).ravel())
    u = np.sort(np.asarray(u_scores, dtype=np.float64).ravel())
    if p.size == 0 or u.size == 0:
        raise ImpulsesError(f"BBE needs held-out labeled and unlabeled scores (got {p.size} and {u.size})")
    if not (np.isfinite(p).all() and np.isfinite(u).all()):
        raise ImpulsesError("BBE: the classifier's scores hold NaN or Inf")
    if not (0.0 < delta < 1.0 and gamma >= 0.0):
        raise ParameterError(
            ("delta", "gamma"), f"must be 0 < delta < 1 and gamma >= 0 (got {delta}, {gamma})"
        )
    thresholds = np.unique(np.concatenate([p, u]))
    q_p = (p.size - np.searchsorted(p, thresholds, side="left")) / p.size
    q_u = (u.size - np.searchsorted(u, thresholds, side="left")) / u.size
    eps = math.sqrt(math.log(4.0 / delta) / (2 * p.size)) + math.sqrt(math.log(4.0 / delta) / (2 * u.size))
    # q̂_p > 0 at every threshold: the largest threshold is at most max(p) or max(u); guard the latter.
    objective = np.where(q_p > 0, (q_u + (1.0 + gamma) * eps) / np.maximum(q_p, 1e-300), np.inf)
    best = int(np.argmin(objective))
    estimate = float(q_u[best] / q_p[best])
    bound = float((1.0 + gamma) * eps / q_p[best])
    return PriorEstimate(
        method="bbe",
        prior=min(1.0, estimate),
        lower=max(0.0, estimate - bound),
        upper=min(1.0, estimate + bound),
        bound=bound,
        details={
            "threshold": float(thresholds[best]),
            "q_p": float(q_p[best]),
            "q_u": float(q_u[best]),
            "n_p": int(p.size),
            "n_u": int(u.size),
            "delta": delta,
            "gamma": gamma,
        },
    )


def elkan_noto_from_probs(p_probs: np.ndarray, n_labeled: int, n_unlabeled: int) -> PriorEstimate:
    """Elkan & Noto (2008): c = mean g(x) over held-out labeled positives, g(x) ≈ p(s=1 | x).

    With N = n_L + n_U samples, p(y=1) = n_L / (c·N); in our convention π = p(y=1|s=0) =
    (n_L/c − n_L) / n_U = (1−c)/c · n_L/n_U, the same as ``prior_from_class_prior(n_L/(c·N), c)``.
    """
    probs = np.asarray(p_probs, dtype=np.float64).ravel()
    if probs.size == 0:
        raise ImpulsesError("Elkan–Noto needs held-out scores of labeled positives (got none)")
    if n_unlabeled < 1:
        raise ImpulsesError("Elkan–Noto: the label set has no unlabeled sample")
    c = float(probs.mean())
    if not c > 0.0:
        raise ImpulsesError(
            "Elkan–Noto: the classifier gives the labeled positives p(s=1|x) = 0; no estimate"
        )
    n = n_labeled + n_unlabeled
    return PriorEstimate(
        method="elkan-noto",
        prior=float(min(1.0, (1.0 - c) / c * n_labeled / n_unlabeled)),
        details={"label_frequency": c, "class_prior": float(min(1.0, n_labeled / (c * n)))},
    )


# --------------------------------------------------------------------------------------------------
# The P-vs-U classifier and the estimate from features
# --------------------------------------------------------------------------------------------------
def held_out_scores(
    X: np.ndarray,
    s: np.ndarray,
    *,
    n_folds: int = 2,
    cross_fit: bool = True,
    C: float = 0.1,
    seed: int = 0,
    max_iter: int = 1000,
) -> tuple[np.ndarray, np.ndarray]:
    """Held-out logit and p(s=1|x) of a standardized logistic P-vs-U classifier for every row (NaN where unscored).

    With ``cross_fit`` every row is scored by the model fitted on the other ``n_folds − 1`` folds;
    without it one stratified half trains and only the other half is scored (the paper's protocol).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X = np.asarray(X)
    s = np.asarray(s).astype(np.int64).ravel()
    if X.ndim != 2 or X.shape[0] != s.shape[0]:
        raise ParameterError(("X", "s"), f"do not fit: X has shape {X.shape} but s has {s.shape[0]} entries")
    if not np.isin(s, (0, 1)).all():
        raise ParameterError("s", "must be 0 (unlabeled) or 1 (labeled positive)")
    if int(n_folds) < 2:
        raise ParameterError("n_folds", f"must be at least 2, got {n_folds}")
    folds = int(n_folds)
    n_lab, n_unl = int(s.sum()), int((s == 0).sum())
    if min(n_lab, n_unl) < folds:
        raise ImpulsesError(
            f"prior estimation needs at least {folds} labeled and {folds} unlabeled samples "
            f"(got {n_lab} labeled, {n_unl} unlabeled)"
        )
    logits = np.full(s.shape, np.nan)
    probs = np.full(s.shape, np.nan)
    splits = list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(np.zeros_like(s), s))
    for train, test in splits if cross_fit else splits[:1]:
        model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter))
        model.fit(X[train], s[train])
        logits[test] = model.decision_function(X[test])
        probs[test] = model.predict_proba(X[test])[:, 1]
    return logits, probs


def estimate_prior(
    X: np.ndarray,
    s: np.ndarray,
    *,
    methods: tuple[str, ...] = ("bbe", "elkan-noto"),
    n_folds: int = 2,
    cross_fit: bool = True,
    C: float = 0.1,
    seed: int = 0,
    delta: float = 0.1,
    gamma: float = 0.01,
) -> dict[str, PriorEstimate]:
    """Estimate π = p(y=1|s=0) from features ``X`` and PU labels ``s`` with each of ``methods``."""
    unknown = [m for m in methods if m not in ("bbe", "elkan-noto")]
    if unknown:
        raise ParameterError(
            "methods", f"holds unknown prior estimator(s) {unknown} (known: bbe, elkan-noto)"
        )
    s = np.asarray(s).astype(np.int64).ravel()
    logits, probs = held_out_scores(X, s, n_folds=n_folds, cross_fit=cross_fit, C=C, seed=seed)
    scored = np.isfinite(logits)
    results: dict[str, PriorEstimate] = {}
    if "bbe" in methods:
        results["bbe"] = bbe_from_scores(
            logits[scored & (s == 1)], logits[scored & (s == 0)], delta=delta, gamma=gamma
        )
    if "elkan-noto" in methods:
        results["elkan-noto"] = elkan_noto_from_probs(
            probs[scored & (s == 1)], n_labeled=int(s.sum()), n_unlabeled=int((s == 0).sum())
        )
    return results


def auto_prior(X: np.ndarray, s: np.ndarray, *, label_set: str | None = None) -> PriorEstimate:
    """The BBE estimate of π = p(y=1 | s=0) from one label set's features (Garg et al. 2021), for ``priors="auto"``.

    Args:
        X: Features (N, D) of the label set's rows.
        s: Its labels (N,), 1 = labeled positive.
        label_set: Its name, for the error message.

    Returns:
        The estimate (``prior`` in (0, 1), with BBE's interval).

    Raises:
        ParameterError: about ``priors`` when the estimate is 0 or 1 (no usable prior).
    """
    estimate = estimate_prior(X, s, methods=("bbe",))["bbe"]
    if not 0 < estimate.prior < 1:
        which = f" for label set {label_set}" if label_set is not None else ""
        raise ParameterError(
            "priors",
            f"auto: the BBE estimate{which} is {estimate.prior:g}, not in (0, 1); give the prior as a number",
        )
    return estimate


def prior_report(
    X: np.ndarray, s: np.ndarray, y: np.ndarray | None = None, *, n_folds: int = 2, seed: int = 0
) -> dict[str, Any]:
    """BBE and Elkan–Noto estimates of π for one label set, with the class prior p(y=1) each implies.

    Args:
        X: Features (N, D).
        s: Labels (N,), 1 = labeled positive.
        y: True labels (N,), when known: the true π and each estimate's error are added.
        n_folds: Cross-fitting folds of the P-vs-U classifier (at least 2).
        seed: Seed of the folds.

    Returns:
        ``{"n_labeled", "n_unlabeled", "convention", "estimates": {method: {...PriorEstimate,
        "class_prior", "error"}}, "true_prior", "true_class_prior"}``; p(y=1) comes from
        :func:`class_prior_from_prior` at the label frequency c the estimate implies.

    Raises:
        ParameterError: ``n_folds`` < 2, or ``s`` not 0/1.
    """
    if int(n_folds) < 2:
        raise ParameterError("n_folds", f"must be at least 2, got {n_folds}")
    s = np.asarray(s).astype(np.int64).ravel()
    estimates = estimate_prior(X, s, n_folds=n_folds, seed=seed)
    n_l, n_u = int(s.sum()), int((s == 0).sum())
    true_prior = None
    if y is not None:
        y = np.asarray(y).astype(np.int64).ravel()
        true_prior = float(y[s == 0].mean()) if n_u else None

    def class_prior(prior: float) -> float:
        # c = p(s=1|y=1) = n_L / (n_L + π·n_U): the label frequency that π implies for these counts
        positives = n_l + prior * n_u
        if prior <= 0 or positives <= 0:  # no unlabeled positive: p(y=1) is the labeled share
            return n_l / max(n_l + n_u, 1)
        return class_prior_from_prior(prior, n_l / positives)

    report: dict[str, Any] = {
        "n_labeled": n_l,
        "n_unlabeled": n_u,
        "convention": "prior = p(y=1 | s=0), the share of positives among the unlabeled",
        "estimates": {},
        "true_prior": true_prior,
        "true_class_prior": None if true_prior is None else class_prior(true_prior),
    }
    for name, est in estimates.items():
        entry = est.as_dict()
        entry["class_prior"] = class_prior(est.prior)
        entry["error"] = None if true_prior is None else est.prior - true_prior
        report["estimates"][name] = entry
    return report
