"""Calibrated probabilities from PU heads, without a single negative label.

A head's logit is a score: the sigmoid loss of the paper's PU objectives is not a proper scoring
rule, so σ(logit) is not p(y=1 | x). Two routes give probabilities, both for a population whose
positive share (prevalence) P the user names:

**PU Platt scaling** (:class:`PUPlatt`), for any head. Fit g(x) = a·f(x) + b on held-out PU data
(f: the head's logit) so that σ(g) is the posterior of the unlabeled population. Notation: π =
p(y=1 | s=0), the share of positives among the unlabeled rows (the project's prior convention);
under SCAR the unlabeled rows follow p_U(x) = π·p₊(x) + (1−π)·p₋(x) and the labeled positives
p₊(x). The logistic loss ℓ(z) = log(1 + e^(−z)) has the risk on that population

    R(g) = π·E₊[ℓ(g)] + (1−π)·E₋[ℓ(−g)],

whose minimiser over all functions is g = logit p_U(y=1 | x) (the logistic loss is a proper
scoring rule), so its minimiser over the Platt family is the best calibrated sigmoid of f.
Negatives are not available, but (1−π)·E₋[h] = E_U[h] − π·E₊[h], and E₊ is a mean over the
labeled positives (SCAR), hence the unbiased PU estimate

    R̂(g) = π·mean_P ℓ(g) + [mean_U ℓ(−g) − π·mean_P ℓ(−g)].

The bracket estimates (1−π)·E₋[ℓ(−g)] ≥ 0 but can go negative on a finite sample (then the fit
would run off to overfit the labeled positives); as in nnPU (Kiryo et al. 2017) it is clipped at 0:
R̃(g) = π·mean_P ℓ(g) + max(0, bracket). Because ℓ(z) − ℓ(−z) = −z, the unclipped risk is
mean_U ℓ(−g) − π·mean_P g, convex in (a, b), and R̃ = max(R̂, π·mean_P ℓ(g)) is the maximum of
two convex functions, so convex too: L-BFGS (scipy) on standardised scores finds its minimum.

The fitted σ(g) is p(y=1 | x) for the **population of the unlabeled rows, whose positive share is
π_cal = π** (the ``prior`` of the fit), not the share among all rows: the labeled positives only
stand in for E₊, and how many of them were held out does not change the balance. For prevalence P
the posterior follows by Bayes' rule (label shift: p(x | y) unchanged):

    logit_P(x) = g(x) + log(P/(1−P)) − log(π_cal/(1−π_cal))        (:func:`shift_logits`).

**The logistic surrogate** (heads trained with the logistic loss in place of the sigmoid loss):
such a head minimises R_w(g) = w·E₊[ℓ(g)] + (1−w)·E₋[ℓ(−g)] for a class weight w, whose minimiser
is the log-odds at the balance w: imbnnPU weights the classes π′ : 1−π′ (w = π′), nnPU and uPU
π : 1−π (w = π), and the PN baseline weights positives by |N|/|P| (w = 0.5). Its logits give
p(y=1 | x) at prevalence P through :func:`shift_logits` with ``train_balance`` = w
(:func:`logit_balance`).

:func:`expected_calibration_error` measures how far probabilities are from the labels' frequencies.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from impulses.errors import ImpulsesError, ParameterError


def _balance(value: Any, name: str) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if not (np.isfinite(arr).all() and ((arr > 0) & (arr < 1)).all()):
        raise ParameterError(name, f"must be in (0, 1), got {value!r}")
    return arr


def shift_logits(logits: Any, train_balance: Any, prevalence: Any) -> np.ndarray:
    """Log-odds at class balance ``train_balance`` moved to a population with positive share ``prevalence``.

    logit + log(P/(1−P)) − log(t/(1−t)): Bayes' rule under label shift (p(x | y) unchanged).

    Args:
        logits: Log-odds (any shape) of a model whose posterior refers to positive share t.
        train_balance: t, the positive share those log-odds refer to (a float, or broadcasting
            against ``logits``, e.g. one per head): π_cal for :class:`PUPlatt`,
            :func:`logit_balance` for logistic-surrogate heads.
        prevalence: P, the positive share of the population to predict for.

    Returns:
        The shifted log-odds, float64; σ of them is p(y=1 | x) at prevalence P.
    """
    t = _balance(train_balance, "train_balance")
    p = _balance(prevalence, "prevalence")
    return np.asarray(logits, dtype=np.float64) + (np.log(p) - np.log1p(-p)) - (np.log(t) - np.log1p(-t))


def logit_balance(loss: str, prior: float | None = None, prior_prime: float = 0.5) -> float:
    """The positive share the logits of a head trained with a logistic loss refer to.

    Args:
        loss: ``imbnnpu`` (π′), ``nnpu`` / ``upu`` (π) or ``pn`` (0.5: positives weighted by |N|/|P|).
        prior: π = p(y=1 | s=0), for nnpu and upu.
        prior_prime: imbnnPU's π′.

    Returns:
        The balance to pass to :func:`shift_logits` as ``train_balance``.

    Raises:
        ParameterError: For bce/wbce (their logits are the odds of being labeled, not of the
            class) or an unknown loss, or a missing prior.
    """
    name = str(loss).lower()
    if name == "imbnnpu":
        return float(_balance(prior_prime, "prior_prime"))
    if name in ("nnpu", "upu"):
        if prior is None:
            raise ParameterError("prior", f"is required for a {name} head")
        return float(_balance(prior, "prior"))
    if name == "pn":
        return 0.5
    raise ParameterError(
        "loss",
        f"{loss!r} heads have no class balance: bce/wbce estimate the odds of being labeled, not of "
        "the class; calibrate them with PUPlatt",
    )


class PUPlatt:
    """PU Platt scaling: σ(a·f + b) fitted on held-out labeled positives and unlabeled rows only.

    The fit minimises the non-negative PU logistic risk at ``prior`` (derivation in the module
    docstring); ``predict_proba`` is then p(y=1 | f) in the unlabeled population (positive share
    π_cal = ``prior``), or at ``prevalence`` P after :func:`shift_logits`.

    Args:
        prior: π = p(y=1 | s=0) of the held-out data, the share of positives among its unlabeled rows.

    Attributes:
        coef_: a.
        intercept_: b.
        risk_: The non-negative PU logistic risk at the fit.
        n_iter_: Iterations of the optimiser.
    """

    def __init__(self, prior: float) -> None:
        _balance(prior, "prior")
        self.prior = float(prior)

    @property
    def calibration_balance(self) -> float:
        """π_cal: the positive share of the population the fitted posterior refers to (= ``prior``)."""
        return self.prior

    def fit(self, scores: Any, s: Any) -> PUPlatt:
        """Fit a and b on one head's scores (N,) and PU labels s (N,): 1 = labeled positive, 0 = unlabeled.

        Args:
            scores: The head's logits on held-out rows (not those it was trained on).
            s: PU labels of those rows.

        Returns:
            self, fitted.

        Raises:
            ParameterError: Shapes that do not match, labels outside {0, 1}, no labeled positive or
                no unlabeled row, or constant scores.
        """
        from scipy.optimize import minimize
        from scipy.special import expit, log_expit

        f = np.asarray(scores, dtype=np.float64).reshape(-1)
        lab = np.asarray(s).reshape(-1)
        if lab.shape != f.shape:
            raise ParameterError(("scores", "s"), f"must have the same length, got {f.size} and {lab.size}")
        if not (np.isfinite(f).all() and np.isin(lab, (0, 1)).all()):
            raise ParameterError(("scores", "s"), "must be finite scores and 0/1 PU labels")
        lab = lab.astype(bool)
        if lab.all() or not lab.any():
            raise ParameterError("s", "needs labeled positives (1) and unlabeled rows (0)")
        center, scale = f.mean(), f.std()
        if not scale > 0:
            raise ParameterError("scores", "are constant: nothing to calibrate")
        z_p, z_u = (f[lab] - center) / scale, (f[~lab] - center) / scale
        pi = self.prior

        def risk(theta: np.ndarray) -> tuple[float, np.ndarray]:
            alpha, beta = theta
            g_p, g_u = alpha * z_p + beta, alpha * z_u + beta
            r_p = -pi * log_expit(g_p).mean()  # π·mean_P ℓ(g)
            d_p = -pi * expit(-g_p) / z_p.size  # ∂r_p/∂g on P
            r_n = -log_expit(-g_u).mean() + pi * log_expit(-g_p).mean()  # mean_U ℓ(−g) − π·mean_P ℓ(−g)
            if r_n >= 0:
                d_p = d_p - pi * expit(g_p) / z_p.size
                d_u = expit(g_u) / z_u.size
                value = r_p + r_n
            else:
                d_u = np.zeros_like(g_u)
                value = r_p
            grad = np.array([d_p @ z_p + d_u @ z_u, d_p.sum() + d_u.sum()])
            return float(value), grad

        start = np.array([1.0, np.log(pi) - np.log1p(-pi)])
        result = minimize(risk, start, jac=True, method="L-BFGS-B")
        n_iter = int(result.nit)
        if not result.success:  # a stop at the kink of max(0, ·): polish without gradients
            polish = minimize(lambda t: risk(t)[0], result.x, method="Nelder-Mead", options={"xatol": 1e-8})
            n_iter += int(polish.nit)
            result = polish if polish.fun <= result.fun else result
        alpha, beta = result.x
        self.coef_ = float(alpha / scale)
        self.intercept_ = float(beta - alpha * center / scale)
        self.risk_ = float(result.fun)
        self.n_iter_ = n_iter
        return self

    def logit(self, scores: Any, prevalence: float | None = None) -> np.ndarray:
        """Calibrated log-odds a·f + b, at prevalence P when given (else at π_cal)."""
        if not hasattr(self, "coef_"):
            raise ImpulsesError("PUPlatt is not fitted: call fit(scores, s) on held-out PU data first")
        g = self.coef_ * np.asarray(scores, dtype=np.float64) + self.intercept_
        return g if prevalence is None else shift_logits(g, self.calibration_balance, prevalence)

    def predict_proba(self, scores: Any, prevalence: float | None = None) -> np.ndarray:
        """p(y=1 | score) of each row, same shape as ``scores``.

        Args:
            scores: The head's logits.
            prevalence: P, the positive share of the population scored; default π_cal (= ``prior``,
                the unlabeled population's).

        Returns:
            Calibrated probabilities of the positive class.
        """
        from scipy.special import expit

        return expit(self.logit(scores, prevalence))


def expected_calibration_error(probs: Any, y: Any, bins: int = 15) -> float:
    """ECE: Σ_b (n_b/N)·|mean of y in bin b − mean of p in bin b| over equal-width probability bins.

    Bin b holds the probabilities in (b/B, (b+1)/B] (the first bin also holds 0), as in Guo et al.
    (2017) for the positive class; empty bins add nothing.

    Args:
        probs: Predicted probabilities of the positive class (N,), in [0, 1].
        y: True labels (N,), 0/1 or bool.
        bins: B, the number of bins.

    Returns:
        The ECE, in [0, 1].
    """
    p = np.asarray(probs, dtype=np.float64).reshape(-1)
    t = np.asarray(y).reshape(-1)
    if p.shape != t.shape or p.size == 0:
        raise ParameterError(
            ("probs", "y"), f"must be non-empty and of the same length, got {p.size} and {t.size}"
        )
    if not (((p >= 0) & (p <= 1)).all() and np.isin(t, (0, 1)).all()):
        raise ParameterError(("probs", "y"), "must be probabilities in [0, 1] and 0/1 labels")
    if not (isinstance(bins, int) and bins >= 1):
        raise ParameterError("bins", f"must be an integer >= 1, got {bins!r}")
    idx = np.searchsorted(np.linspace(0.0, 1.0, bins + 1)[1:-1], p, side="left")  # edges go to the lower bin
    gap = np.abs(np.bincount(idx, t.astype(np.float64), bins) - np.bincount(idx, p, bins))  # per-bin sums
    return float(gap.sum() / p.size)


THRESHOLDS = ("logit0", "bayes", "rate:Q")


def parse_threshold(rule: str) -> tuple[str, float | None]:
    """A decision rule ``logit0``, ``bayes`` or ``rate:Q`` as (name, Q); Q in (0, 1] for ``rate``.

    Raises:
        ParameterError: about ``threshold``, naming the choices.
    """
    name, _, value = str(rule).strip().lower().partition(":")
    if name in ("logit0", "bayes") and not value:
        return name, None
    if name == "rate":
        try:
            share = float(value)
        except ValueError:
            share = float("nan")
        if 0 < share <= 1:
            return name, share
        raise ParameterError("threshold", f"rate:Q needs a share Q in (0, 1], got {rule!r}")
    raise ParameterError("threshold", f"must be one of {', '.join(THRESHOLDS)}, got {rule!r}")


def decide(logits: Any, rule: str, probabilities: Any = None) -> np.ndarray:
    """Decisions (N, K) bool of a decision rule, per head (column).

    - ``logit0``: logit > 0, the decision the paper evaluates (the balanced one for imbnnPU, π′ = 0.5);
    - ``bayes``: calibrated p(y=1 | x) ≥ 0.5 at the prevalence they were computed for (the Bayes
      decision for accuracy there); needs ``probabilities``;
    - ``rate:Q``: the ⌈Q·N⌉ rows with the highest logits of each head (flag a fixed share).

    Args:
        logits: Logits (N,) or (N, K).
        rule: ``logit0``, ``bayes`` or ``rate:Q``.
        probabilities: Calibrated probabilities, shaped like ``logits`` (for ``bayes``).

    Returns:
        Booleans shaped like ``logits``.

    Raises:
        ParameterError: an unknown rule, or ``bayes`` without probabilities.
    """
    name, share = parse_threshold(rule)
    z = np.asarray(logits, dtype=np.float64)
    if name == "logit0":
        return z > 0
    if name == "bayes":
        if probabilities is None:
            raise ParameterError(
                "prevalence", "is needed by the bayes threshold (it thresholds probabilities)"
            )
        return np.asarray(probabilities, dtype=np.float64) >= 0.5
    flat = z.reshape(len(z), -1)
    count = min(len(flat), int(np.ceil(share * len(flat) - 1e-9)))
    out = np.zeros(flat.shape, dtype=bool)
    top = np.argsort(-flat, axis=0, kind="stable")[:count]
    np.put_along_axis(out, top, True, axis=0)
    return out.reshape(z.shape)


def held_out_rows(S: Any, fraction: float, seed: int = 0) -> np.ndarray:
    """A seeded mask of rows to hold out for calibration, stratified by the rows' PU labels.

    Every distinct row of ``S`` (its labels across the label sets) gives ``round(fraction·count)``
    of its rows, so each label set keeps its share of labeled positives on both sides.

    Args:
        S: PU labels (N,) or (N, L), 0/1.
        fraction: The share to hold out, in (0, 1).
        seed: Seed of the draw.

    Returns:
        Boolean mask (N,): True for held-out rows.

    Raises:
        ParameterError: ``fraction`` outside (0, 1), or a side left without labeled positives.
    """
    if not 0 < fraction < 1:
        raise ParameterError("fraction", f"must be in (0, 1), got {fraction!r}")
    labels = np.asarray(S).reshape(len(S), -1)
    rng = np.random.default_rng(seed)
    held = np.zeros(len(labels), dtype=bool)
    _, group = np.unique(labels, axis=0, return_inverse=True)
    for g in range(int(group.max()) + 1 if len(group) else 0):
        rows = np.flatnonzero(group.reshape(-1) == g)
        held[rng.choice(rows, round(fraction * len(rows)), replace=False)] = True
    for j in range(labels.shape[1]):
        if not (labels[held, j].any() and labels[~held, j].any()):
            raise ParameterError(
                "fraction", f"{fraction:g} leaves label set {j} without labeled positives on one side"
            )
    return held
