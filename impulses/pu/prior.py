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

    method: str  # "bbe", "elkan-noto" or "tedn"
    prior: float
    lower: float | None = None
    upper: float | None = None
    bound: float | None = None  # half-width of BBE's interval (before clipping to [0, 1])
    details: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The estimate as a plain dict (JSON output)."""
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
def _check_pu(X: np.ndarray, s: np.ndarray, n_folds: int) -> tuple[np.ndarray, np.ndarray]:
    """``X`` as an (N, D) array and ``s`` as 0/1 int64 (N,), with at least ``n_folds`` of each label."""
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
    return X, s


def _folds(s: np.ndarray, n_folds: int, cross_fit: bool, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train rows, held-out rows) per stratified fold; only the first without ``cross_fit``."""
    from sklearn.model_selection import StratifiedKFold

    splits = list(StratifiedKFold(int(n_folds), shuffle=True, random_state=seed).split(np.zeros_like(s), s))
    return splits if cross_fit else splits[:1]


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
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, s = _check_pu(X, s, n_folds)
    logits = np.full(s.shape, np.nan)
    probs = np.full(s.shape, np.nan)
    for train, test in _folds(s, n_folds, cross_fit, seed):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter))
        model.fit(X[train], s[train])
        logits[test] = model.decision_function(X[test])
        probs[test] = model.predict_proba(X[test])[:, 1]
    return logits, probs


# --------------------------------------------------------------------------------------------------
# TEDⁿ: BBE alternated with a CVIR-trained PU classifier (Garg et al. 2021, Algorithm 2)
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TednOptions:
    """The classifier and schedule of :func:`tedn_prior`.

    Attributes:
        hidden: Width of the classifier's hidden layer (ReLU); 0 for a linear head.
        warm_epochs: Epochs of plain P-vs-U training before the first estimate.
        epochs: Epochs that alternate a BBE estimate with one CVIR epoch at it.
        batch_size: Unlabeled rows per step (each step pairs them with an equal share of the labeled).
        min_steps: Steps per epoch at least this many (smaller batches on small data), so that a
            small label set trains about as long as a large one.
        lr: Adam's learning rate.
        weight_decay: Adam's L2 penalty.
    """

    hidden: int = 0
    warm_epochs: int = 5
    epochs: int = 20
    batch_size: int = 256
    min_steps: int = 32
    lr: float = 1e-2
    weight_decay: float = 1e-4

    def check(self) -> None:
        """Raise :class:`ParameterError` naming the first field out of range."""
        for name in ("hidden", "warm_epochs", "epochs"):
            value = getattr(self, name)
            if not isinstance(value, int | np.integer) or value < 0:
                raise ParameterError(name, f"must be an integer of at least 0, got {value!r}")
        for name in ("batch_size", "min_steps"):
            value = getattr(self, name)
            if not isinstance(value, int | np.integer) or value < 1:
                raise ParameterError(name, f"must be an integer of at least 1, got {value!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ParameterError("lr", f"must be > 0, got {self.lr!r}")
        if not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            raise ParameterError("weight_decay", f"must be >= 0, got {self.weight_decay!r}")


def tedn_prior(
    X: np.ndarray,
    s: np.ndarray,
    *,
    options: TednOptions | None = None,
    n_folds: int = 2,
    cross_fit: bool = True,
    seed: int = 0,
    delta: float = 0.1,
    gamma: float = 0.01,
) -> PriorEstimate:
    """TEDⁿ (Garg et al. 2021): BBE on held-out scores of a classifier trained with CVIR at BBE's estimate.

    BBE is only as good as its classifier's top bin: it reads π off the scores where the held-out
    labeled positives are (nearly) alone. A P-vs-U classifier learns to separate the labeled
    positives from the positives hidden in U as well, which blurs that bin and biases π̂ up. TEDⁿ
    trains the classifier with CVIR (conditional value ignoring risk) instead: every epoch, the
    ``α̂`` share of the training fold's unlabeled rows with the highest scores is dropped (taken
    for the positives in U) and the classifier takes one epoch of the logistic loss on labeled
    positives (class 1) against the remaining unlabeled rows (class 0), then α̂ is re-estimated by
    BBE on the held-out fold's scores. After ``warm_epochs`` epochs of plain P-vs-U training (α̂ = 0)
    it alternates ``epochs`` times; the estimate is BBE on the final classifier's held-out scores.

    Conventions: BBE and TEDⁿ estimate the mixture proportion of the positive distribution in the
    unlabeled one, U = α·P + (1−α)·N, which is our π = p(y=1 | s=0) as it is; no conversion. The
    classifier is a linear head (``options.hidden = 0``) or one-hidden-layer MLP on standardized
    features; the loss weighs both classes equally (mean over labeled plus mean over kept unlabeled
    rows), and, as in :func:`held_out_scores`, with ``cross_fit`` there is one classifier per fold
    and BBE pools the held-out scores of all folds; without it one stratified half is held out.

    Args:
        X: Features (N, D).
        s: PU labels (N,), 1 = labeled positive, 0 = unlabeled.
        options: Classifier and schedule (:class:`TednOptions` defaults when None).
        n_folds: Stratified folds (at least 2).
        cross_fit: Train one classifier per fold, held-out scores for every row.
        seed: Seeds the folds, the initialisation and the batch order (same seed, same estimate).
        delta: BBE's confidence level.
        gamma: BBE's penalty slack.

    Returns:
        The estimate with BBE's interval from the final scores; ``details`` adds ``warm_start_prior``
        (plain BBE with the warm-started classifier), ``hidden`` and ``epochs``.

    Raises:
        ParameterError: an option, ``n_folds``, ``X``/``s`` out of range.
        ImpulsesError: fewer than ``n_folds`` labeled or unlabeled rows.
    """
    import torch

    options = options or TednOptions()
    options.check()
    X, s = _check_pu(X, s, n_folds)
    mean, std = X.mean(axis=0, dtype=np.float64), X.std(axis=0, dtype=np.float64)
    Z = torch.from_numpy(((X - mean) / np.where(std > 0, std, 1.0)).astype(np.float32))
    gen = torch.Generator().manual_seed(int(seed))
    folds = []
    for train, held in _folds(s, n_folds, cross_fit, seed):
        model = _tedn_model(Z.shape[1], options.hidden, gen)
        optimizer = _Adam(list(model.parameters()), lr=options.lr, weight_decay=options.weight_decay)
        folds.append((model, optimizer, train[s[train] == 1], train[s[train] == 0], held))

    def estimate() -> PriorEstimate:
        scores = np.full(s.shape, np.nan)
        for model, _, _, _, held in folds:
            scores[held] = _tedn_scores(model, Z[held])
        scored = np.isfinite(scores)
        return bbe_from_scores(scores[scored & (s == 1)], scores[scored & (s == 0)], delta=delta, gamma=gamma)

    def train_epoch(alpha: float) -> None:
        for model, optimizer, positives, unlabeled, _ in folds:
            n_drop = min(math.floor(alpha * unlabeled.size), unlabeled.size - 1)
            if n_drop:  # CVIR: ignore the α̂ share of unlabeled rows the classifier finds most positive
                order = np.argsort(_tedn_scores(model, Z[unlabeled]), kind="stable")
                unlabeled = unlabeled[order[: unlabeled.size - n_drop]]
            batch_size = min(options.batch_size, math.ceil(unlabeled.size / options.min_steps))
            _tedn_epoch(model, optimizer, Z, positives, unlabeled, batch_size, gen)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # steps on a few hundred rows: one thread beats several (and shares the CPU)
    try:
        for _ in range(options.warm_epochs):
            train_epoch(0.0)
        warm = estimate()
        current = warm
        for _ in range(options.epochs):
            train_epoch(current.prior)
            current = estimate()
    finally:
        torch.set_num_threads(threads)
    return PriorEstimate(
        method="tedn",
        prior=current.prior,
        lower=current.lower,
        upper=current.upper,
        bound=current.bound,
        details={
            **current.details,
            "warm_start_prior": warm.prior,
            "hidden": options.hidden,
            "epochs": options.epochs,
        },
    )


def _tedn_model(dim: int, hidden: int, gen: Any) -> Any:
    """A linear head or a one-hidden-layer ReLU MLP, nn.Linear's initialisation drawn from ``gen``."""
    import torch

    layers = (
        [torch.nn.Linear(dim, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1)]
        if hidden
        else [torch.nn.Linear(dim, 1)]
    )
    with torch.no_grad():
        for layer in layers:
            if isinstance(layer, torch.nn.Linear):
                bound = 1.0 / math.sqrt(layer.in_features)
                layer.weight.uniform_(-bound, bound, generator=gen)
                layer.bias.uniform_(-bound, bound, generator=gen)
    return torch.nn.Sequential(*layers)


def _tedn_scores(model: Any, Z: Any) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(Z).squeeze(1).double().numpy()


def _tedn_epoch(
    model: Any,
    optimizer: Any,
    Z: Any,
    positives: np.ndarray,
    unlabeled: np.ndarray,
    batch_size: int,
    gen: Any,
) -> None:
    """One pass over ``unlabeled`` (and the labeled ``positives`` spread over its steps), class-balanced logistic loss."""
    import torch
    import torch.nn.functional as F

    u_order = unlabeled[torch.randperm(unlabeled.size, generator=gen).numpy()]
    steps = max(1, math.ceil(u_order.size / batch_size))
    per_step = math.ceil(positives.size / steps)
    p_order = positives[torch.randperm(positives.size, generator=gen).numpy()]
    p_order = np.resize(p_order, steps * per_step)  # wraps around when steps do not divide the labeled
    for i in range(steps):
        u_batch = Z[u_order[i * batch_size : (i + 1) * batch_size]]
        p_batch = Z[p_order[i * per_step : (i + 1) * per_step]]
        loss = F.softplus(-model(p_batch)).mean() + F.softplus(model(u_batch)).mean()
        model.zero_grad()
        loss.backward()
        optimizer.step()


class _Adam:
    """torch.optim.Adam's update (L2 ``weight_decay`` added to the gradient).

    Written out to avoid importing torch.optim, whose import pulls in torch._dynamo (seconds).
    """

    def __init__(
        self, params: list[Any], *, lr: float, weight_decay: float, betas: tuple[float, float] = (0.9, 0.999)
    ) -> None:
        import torch

        self.params, self.lr, self.weight_decay, self.betas, self.eps = params, lr, weight_decay, betas, 1e-8
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.steps = 0

    def step(self) -> None:
        import torch

        self.steps += 1
        beta1, beta2 = self.betas
        correction1, correction2 = 1 - beta1**self.steps, 1 - beta2**self.steps
        with torch.no_grad():
            for p, m, v in zip(self.params, self.m, self.v, strict=True):
                grad = p.grad if not self.weight_decay else p.grad + self.weight_decay * p
                m.mul_(beta1).add_(grad, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                denom = (v / correction2).sqrt_().add_(self.eps)
                p.addcdiv_(m, denom, value=-self.lr / correction1)


PRIOR_METHODS = ("bbe", "elkan-noto", "tedn")


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
    tedn: TednOptions | None = None,
) -> dict[str, PriorEstimate]:
    """Estimate π = p(y=1|s=0) from features ``X`` and PU labels ``s`` with each of ``methods``.

    Args:
        X: Features (N, D).
        s: PU labels (N,), 1 = labeled positive.
        methods: Any of ``"bbe"``, ``"elkan-noto"`` (both on held-out scores of one standardized
            logistic P-vs-U classifier, :func:`held_out_scores`) and ``"tedn"`` (:func:`tedn_prior`).
        n_folds: Cross-fitting folds (at least 2).
        cross_fit: Score every row (else hold out one stratified half).
        C: Inverse L2 strength of the logistic classifier of BBE and Elkan–Noto.
        seed: Seed of the folds (and of TEDⁿ's classifier).
        delta: BBE's confidence level (also TEDⁿ's).
        gamma: BBE's penalty slack (also TEDⁿ's).
        tedn: TEDⁿ's classifier and schedule (defaults when None).

    Returns:
        ``{method: PriorEstimate}`` in the order of ``methods``.

    Raises:
        ParameterError: an unknown method or an argument out of range.
        ImpulsesError: fewer than ``n_folds`` labeled or unlabeled rows.
    """
    unknown = [m for m in methods if m not in PRIOR_METHODS]
    if unknown:
        raise ParameterError(
            "methods", f"holds unknown prior estimator(s) {unknown} (known: {', '.join(PRIOR_METHODS)})"
        )
    X, s = _check_pu(X, s, n_folds)
    results: dict[str, PriorEstimate] = {}
    if "bbe" in methods or "elkan-noto" in methods:
        logits, probs = held_out_scores(X, s, n_folds=n_folds, cross_fit=cross_fit, C=C, seed=seed)
        scored = np.isfinite(logits)
        if "bbe" in methods:
            results["bbe"] = bbe_from_scores(
                logits[scored & (s == 1)], logits[scored & (s == 0)], delta=delta, gamma=gamma
            )
        if "elkan-noto" in methods:
            results["elkan-noto"] = elkan_noto_from_probs(
                probs[scored & (s == 1)], n_labeled=int(s.sum()), n_unlabeled=int((s == 0).sum())
            )
    if "tedn" in methods:
        results["tedn"] = tedn_prior(
            X, s, options=tedn, n_folds=n_folds, cross_fit=cross_fit, seed=seed, delta=delta, gamma=gamma
        )
    return {m: results[m] for m in dict.fromkeys(methods)}


AUTO_PRIOR_METHOD = "bbe"  # smallest mean abs error over both datasets in docs/results/prior-estimators
METHOD_LABELS = {"bbe": "BBE", "elkan-noto": "Elkan–Noto", "tedn": "TEDⁿ"}


def auto_prior(
    X: np.ndarray, s: np.ndarray, *, label_set: str | None = None, method: str = AUTO_PRIOR_METHOD
) -> PriorEstimate:
    """The estimate of π = p(y=1 | s=0) from one label set's features, for ``priors="auto"``.

    The default method, :data:`AUTO_PRIOR_METHOD`, is the estimator with the smallest mean absolute
    error on embedding stores with known π (``benchmarks/prior_estimators.py``); BBE and TEDⁿ both
    give BBE's confidence interval.

    Args:
        X: Features (N, D) of the label set's rows.
        s: Its labels (N,), 1 = labeled positive.
        label_set: Its name, for the error message.
        method: ``"tedn"``, ``"bbe"`` (the ones with an interval) or ``"elkan-noto"``.

    Returns:
        The estimate (``prior`` in (0, 1)).

    Raises:
        ParameterError: about ``priors`` when the estimate is 0 or 1 (no usable prior).
    """
    estimate = estimate_prior(X, s, methods=(method,))[method]
    if not 0 < estimate.prior < 1:
        which = f" for label set {label_set}" if label_set is not None else ""
        raise ParameterError(
            "priors",
            f"auto: the {METHOD_LABELS[method]} estimate{which} is {estimate.prior:g}, not in (0, 1); "
            "give the prior as a number",
        )
    return estimate


def prior_report(
    X: np.ndarray,
    s: np.ndarray,
    y: np.ndarray | None = None,
    *,
    methods: tuple[str, ...] = ("bbe", "elkan-noto", "tedn"),
    n_folds: int = 2,
    seed: int = 0,
) -> dict[str, Any]:
    """Estimates of π for one label set (BBE, Elkan–Noto, TEDⁿ), with the class prior p(y=1) each implies.

    Args:
        X: Features (N, D).
        s: Labels (N,), 1 = labeled positive.
        y: True labels (N,), when known: the true π and each estimate's error are added.
        methods: The estimators to run (see :func:`estimate_prior`); TEDⁿ is what ``auto_prior``
            uses by default.
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
    estimates = estimate_prior(X, s, methods=tuple(methods), n_folds=n_folds, seed=seed)
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
