"""PU objectives (uPU, nnPU, imbalanced nnPU) and the baselines (BCE, weighted BCE, PN), vectorised over K heads.

Notation, per head: g are the logits, P the rows labeled positive (s = 1), U the unlabeled rows
(s = 0), means are taken over those rows of the batch, and ℓ is the **surrogate loss**: the sigmoid
loss ℓ(z) = σ(−z) (``surrogate="sigmoid"``, the papers' and the default) or the logistic loss
ℓ(z) = log(1 + e^(−z)) = softplus(−z) (``surrogate="logistic"``).

- **nnPU** (Kiryo et al. 2017): R_p = π·mean_P ℓ(g), R_n = mean_U ℓ(−g) − π·mean_P ℓ(−g).
- **imbnnPU** (Su, Chen & Xu 2021, Eq. 5): R_p = π′·mean_P ℓ(g),
  R_n = (1−π′)/(1−π)·(mean_U ℓ(−g) − π·mean_P ℓ(−g)).
- Both return the reference algorithms' training objective: R_p + R_n when R_n ≥ −β, else −γ·R_n
  (its gradient is the gradient-ascent step on R_n that keeps the negative risk non-negative).
- **uPU**: R_p + R_n of nnPU, never corrected.

π (``prior``) is p(y=1 | s=0), the share of positives among the unlabeled rows.

**What the logits mean (why the logistic surrogate).** Under SCAR the labeled positives are drawn
from p₊(x) and the unlabeled rows from p_U(x) = π·p₊(x) + (1−π)·p₋(x), so mean_U ℓ(−g) − π·mean_P ℓ(−g)
estimates (1−π)·E₋[ℓ(−g)]. nnPU/uPU therefore estimate the weighted risk
R_w(g) = w·E₊[ℓ(g)] + (1−w)·E₋[ℓ(−g)] with w = π, and imbnnPU (R_p = π′·…, R_n scaled by
(1−π′)/(1−π)) the same risk with w = π′. Pointwise in x, R_w is minimised by the g(x) minimising
w·p₊(x)·ℓ(g) + (1−w)·p₋(x)·ℓ(−g). With the logistic loss (a proper scoring rule) the minimiser is
g(x) = log(w·p₊(x) / ((1−w)·p₋(x))): the log-odds p(y=1 | x) of a population whose positive share
is w (the *balance*, :func:`impulses.pu.calibration.logit_balance`: π′ for imbnnPU, π for
nnPU/uPU). Bayes' rule under label shift (p(x | y) fixed) moves it to a population with positive
share P: logit_P(x) = g(x) + log(P/(1−P)) − log(w/(1−w))
(:func:`impulses.pu.calibration.shift_logits`), and σ(logit_P) is p(y=1 | x) at prevalence P. The
sigmoid loss is not proper (its pointwise minimiser is ±∞, the sign of the log-odds), so
sigmoid-loss logits are scores: they rank and their sign is the balanced decision, but σ of them is
no probability; calibrate those with :class:`impulses.pu.calibration.PUPlatt`. (nnPU's correction
changes the minimiser only where the estimated negative risk would go below −β, i.e. where the
head overfits; at the population level the negative risk is ≥ 0 and the argument holds.)

**Batches without a labeled positive or without an unlabeled row.** The risk estimators above need
both kinds of rows; reference code divides by max(1, n_P), which on such a batch turns R_n into
mean_U ℓ(−g), i.e. silently treats every unlabeled row as negative. Here the objective of such a
head is exactly 0 with zero gradient ("no information in this batch"), never NaN; the trainer
(:func:`impulses.pu.heads.train_heads`) also skips that head's optimizer step and counts the batch.

The baselines use the logistic loss of :class:`torch.nn.BCEWithLogitsLoss` (mean over the batch) and
are defined on any batch: ``bce`` treats unlabeled rows as negative, ``wbce`` weights positives by
|U|/|P| unless ``pos_weight`` is given, ``pn`` is wBCE on the **true labels y** given in its ``s``
argument (positives weighted by |N|/|P|: the supervised upper bound).

:data:`LOSSES` maps the CLI's ``--loss NAME`` to a :class:`LossSpec`. :class:`FusedObjective`
evaluates the same objectives for K heads with closed-form gradients (no autograd), for the trainer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from impulses.errors import ParameterError
from impulses.runtime import as_numpy

if TYPE_CHECKING:
    import torch

    Prior = float | Sequence[float] | torch.Tensor

# torch is imported by the functions that use it: the numba kernels' runs (plan only) never need it
SURROGATES = ("sigmoid", "logistic")


def check_surrogate(surrogate: str, param: str = "surrogate") -> str:
    """``surrogate`` lowered, if it is one of :data:`SURROGATES`.

    Raises:
        ParameterError: about ``param``, naming the choices.
    """
    name = str(surrogate).lower()
    if name not in SURROGATES:
        raise ParameterError(param, f"must be one of {', '.join(SURROGATES)}, got {surrogate!r}")
    return name


# ---------------------------------------------------------------------------------------------
# shapes and validation
# ---------------------------------------------------------------------------------------------
def _as_2d(logits: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """(B,) or (B, K) logits and (B,) or (B, K) labels -> (B, K) both, and whether to squeeze K."""
    import torch

    squeeze = logits.dim() == 1
    g = logits.unsqueeze(1) if squeeze else logits
    if g.dim() != 2:
        raise ValueError(f"logits must have shape (B,) or (B, K), got {tuple(logits.shape)}")
    labels = torch.as_tensor(s, device=g.device)
    labels = labels.unsqueeze(1) if labels.dim() == 1 else labels
    if labels.dim() != 2 or labels.shape[0] != g.shape[0] or labels.shape[1] not in (1, g.shape[1]):
        raise ValueError(
            f"labels of shape {tuple(torch.as_tensor(s).shape)} do not fit logits {tuple(logits.shape)}"
        )
    return g, labels.to(g.dtype).expand_as(g), squeeze


def _per_head(value: Prior | None, k: int, like: torch.Tensor, name: str) -> torch.Tensor:
    """A float or a (K,) sequence as a (K,) tensor on ``like``'s device and dtype."""
    import torch

    t = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    if t.dim() == 0:
        return t.expand(k)
    if t.shape != (k,):
        raise ValueError(f"{name} must be a float or have shape ({k},), got {tuple(t.shape)}")
    return t


def check_prior(prior: Prior | None, name: str = "prior", *, param: str | None = None) -> None:
    """Every prior must lie strictly inside (0, 1): π = 1 divides by zero, π = 0 is not PU learning.

    Raises:
        ParameterError: about ``param`` (default ``name``); with ``param``, ``name`` says which
            prior within it (``"head 0 (nnpu): prior"``).
    """
    where = "" if param is None else f"{name} "
    if prior is None:
        raise ParameterError(param or name, f"{where}is required by the PU losses (a value in (0, 1))")
    values = as_numpy(prior, np.float64).reshape(-1)
    bad = values[(values <= 0) | (values >= 1) | ~np.isfinite(values)]
    if bad.size:
        raise ParameterError(param or name, f"{where}{bad[0]:g} is not in (0, 1)")


def _finish(obj: torch.Tensor, squeeze: bool) -> torch.Tensor:
    return obj[0] if squeeze else obj


# ---------------------------------------------------------------------------------------------
# PU objectives (autograd-capable reference implementations)
# ---------------------------------------------------------------------------------------------
def _pu_means(g: torch.Tensor, s: torch.Tensor, surrogate: str = "sigmoid") -> tuple[torch.Tensor, ...]:
    """Per head: mean_P ℓ(g), mean_P ℓ(−g), mean_U ℓ(−g), and whether the batch has both P and U."""
    import torch
    import torch.nn.functional as F

    n_p = s.sum(0)
    n_u = (1 - s).sum(0)
    valid = (n_p > 0) & (n_u > 0)
    inv_p = torch.where(n_p > 0, 1 / n_p.clamp(min=1), torch.zeros_like(n_p))
    inv_u = torch.where(n_u > 0, 1 / n_u.clamp(min=1), torch.zeros_like(n_u))
    if check_surrogate(surrogate) == "logistic":  # ℓ(g) = softplus(−g), ℓ(−g) = softplus(g)
        pos, p = F.softplus(-g), F.softplus(g)
    else:  # ℓ(g) = σ(−g), ℓ(−g) = σ(g)
        pos, p = torch.sigmoid(-g), torch.sigmoid(g)
    mean_p_pos = (s * pos).sum(0) * inv_p
    mean_p_neg = (s * p).sum(0) * inv_p
    mean_u_neg = ((1 - s) * p).sum(0) * inv_u
    return mean_p_pos, mean_p_neg, mean_u_neg, valid


def _non_negative(
    r_p: torch.Tensor, r_n: torch.Tensor, beta: torch.Tensor, gamma: torch.Tensor
) -> torch.Tensor:
    import torch

    return torch.where(r_n >= -beta, r_p + r_n, -gamma * r_n)


def nnpu_loss(
    logits: torch.Tensor,
    s: torch.Tensor,
    prior: Prior,
    *,
    prior_prime: Prior = 0.5,
    beta: Prior = 0.0,
    gamma: Prior = 1.0,
    surrogate: str = "sigmoid",
) -> torch.Tensor:
    """Non-negative PU objective (Kiryo et al. 2017), shape () or (K,); ``prior_prime`` is not used.

    ``surrogate`` is the loss ℓ: ``"sigmoid"`` (the paper's) or ``"logistic"`` (logits estimate the
    log-odds at balance π; module docstring).
    """
    check_prior(prior)
    g, lab, squeeze = _as_2d(logits, s)
    k = g.shape[1]
    pi = _per_head(prior, k, g, "prior")
    mpp, mpn, mun, valid = _pu_means(g, lab, surrogate)
    r_p = pi * mpp
    r_n = mun - pi * mpn
    obj = _non_negative(r_p, r_n, _per_head(beta, k, g, "beta"), _per_head(gamma, k, g, "gamma"))
    return _finish(obj.where(valid, obj.new_zeros(())), squeeze)


def imbnnpu_loss(
    logits: torch.Tensor,
    s: torch.Tensor,
    prior: Prior,
    *,
    prior_prime: Prior = 0.5,
    beta: Prior = 0.0,
    gamma: Prior = 1.0,
    surrogate: str = "sigmoid",
) -> torch.Tensor:
    """Imbalanced non-negative PU objective (Su, Chen & Xu 2021, Eq. 5), shape () or (K,).

    ``surrogate`` is the loss ℓ: ``"sigmoid"`` (the paper's) or ``"logistic"`` (logits estimate the
    log-odds at balance π′; module docstring).
    """
    check_prior(prior)
    check_prior(prior_prime, "prior_prime")
    g, lab, squeeze = _as_2d(logits, s)
    k = g.shape[1]
    pi = _per_head(prior, k, g, "prior")
    pp = _per_head(prior_prime, k, g, "prior_prime")
    mpp, mpn, mun, valid = _pu_means(g, lab, surrogate)
    r_p = pp * mpp
    r_n = (1 - pp) / (1 - pi) * (mun - pi * mpn)
    obj = _non_negative(r_p, r_n, _per_head(beta, k, g, "beta"), _per_head(gamma, k, g, "gamma"))
    return _finish(obj.where(valid, obj.new_zeros(())), squeeze)


def upu_loss(
    logits: torch.Tensor,
    s: torch.Tensor,
    prior: Prior,
    *,
    prior_prime: Prior = 0.5,
    beta: Prior = 0.0,
    gamma: Prior = 1.0,
    surrogate: str = "sigmoid",
) -> torch.Tensor:
    """Unbiased PU risk R_p + R_n of nnPU, never corrected; ``prior_prime``, ``beta``, ``gamma`` are not used.

    ``surrogate``: ``"sigmoid"`` or ``"logistic"`` (logits estimate the log-odds at balance π).
    """
    check_prior(prior)
    g, lab, squeeze = _as_2d(logits, s)
    pi = _per_head(prior, g.shape[1], g, "prior")
    mpp, mpn, mun, valid = _pu_means(g, lab, surrogate)
    obj = pi * mpp + mun - pi * mpn
    return _finish(obj.where(valid, obj.new_zeros(())), squeeze)


# ---------------------------------------------------------------------------------------------
# baselines (logistic loss)
# ---------------------------------------------------------------------------------------------
def _weighted_bce(g: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Mean over rows of w·y·softplus(−g) + (1−y)·softplus(g): BCEWithLogitsLoss(pos_weight=w) per head."""
    import torch.nn.functional as F

    return (w * y * F.softplus(-g) + (1 - y) * F.softplus(g)).mean(0)


def bce_loss(logits: torch.Tensor, s: torch.Tensor, prior: Prior | None = None) -> torch.Tensor:
    """Binary cross-entropy with unlabeled rows taken as negative (the naive baseline); ``prior`` is ignored."""
    g, lab, squeeze = _as_2d(logits, s)
    return _finish(_weighted_bce(g, lab, g.new_ones(())), squeeze)


def wbce_loss(
    logits: torch.Tensor, s: torch.Tensor, prior: Prior | None = None, *, pos_weight: Prior | None = None
) -> torch.Tensor:
    """BCE with positives weighted by ``pos_weight`` (default |U|/|P| of the given labels, per head)."""
    g, lab, squeeze = _as_2d(logits, s)
    if pos_weight is None:
        n_p = lab.sum(0)
        w = (g.shape[0] - n_p) / n_p.clamp(min=1)
    else:
        w = _per_head(pos_weight, g.shape[1], g, "pos_weight")
    return _finish(_weighted_bce(g, lab, w), squeeze)


def pn_loss(
    logits: torch.Tensor, y: torch.Tensor, prior: Prior | None = None, *, pos_weight: Prior | None = None
) -> torch.Tensor:
    """Weighted BCE on the TRUE labels y (not s): the PN upper bound a PU method can at best reach.

    Positives are weighted by |N|/|P| of the given labels unless ``pos_weight`` is given (the
    paper's upper bound is wBCE on the true labels, so it is not hurt by the class imbalance).
    """
    return wbce_loss(logits, y, pos_weight=pos_weight)


# ---------------------------------------------------------------------------------------------
# registry
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LossSpec:
    """A named objective: its function, whether it needs a prior, and which labels it trains on."""

    name: str
    fn: Callable[..., torch.Tensor]
    uses_prior: bool
    labels: str  # "s": PU labels (1 = labeled positive, 0 = unlabeled); "y": true labels
    kind: str  # "pu": PU risk (sigmoid or logistic surrogate); "bce": logistic loss
    summary: str


LOSSES: dict[str, LossSpec] = {
    spec.name: spec
    for spec in (
        LossSpec("imbnnpu", imbnnpu_loss, True, "s", "pu", "imbalanced non-negative PU (Su et al. 2021)"),
        LossSpec("nnpu", nnpu_loss, True, "s", "pu", "non-negative PU (Kiryo et al. 2017)"),
        LossSpec("upu", upu_loss, True, "s", "pu", "unbiased PU, never corrected (du Plessis et al.)"),
        LossSpec("bce", bce_loss, False, "s", "bce", "BCE, unlabeled taken as negative"),
        LossSpec("wbce", wbce_loss, False, "s", "bce", "BCE with positive weight |U|/|P|"),
        LossSpec(
            "pn", pn_loss, False, "y", "bce", "weighted BCE on the true labels y (supervised upper bound)"
        ),
    )
}


def get_loss(name: str) -> LossSpec:
    """The registered loss ``name``; an unknown name is a user error listing the choices."""
    try:
        return LOSSES[name.lower()]
    except KeyError:
        raise ParameterError("loss", f"must be one of {', '.join(LOSSES)}: unknown loss {name!r}") from None


# ---------------------------------------------------------------------------------------------
# the trainer's fused objective: K heads, closed-form gradients
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class HeadLoss:
    """One head's objective: a registered loss name and its hyperparameters."""

    loss: str
    prior: float | None = None
    prior_prime: float = 0.5
    beta: float = 0.0
    gamma: float = 1.0
    pos_weight: float | None = None  # wbce only; the trainer fills |U|/|P| of the whole training set
    surrogate: str = "sigmoid"  # PU losses: "sigmoid" or "logistic"; the baselines are logistic anyway


class FusedObjective:
    """The objectives of K heads on a sequence of batches, with dObjective/dlogits in closed form.

    Everything that depends only on the labels is folded, once per epoch (:meth:`plan`), into per-row
    coefficient matrices, so one batch costs a handful of (B, K) tensor ops (:meth:`grad`).

    PU heads: write R_p = a·mean_P σ(−g) and R_n = c·(mean_U σ(g) − π·mean_P σ(g)) (nnPU/uPU: a = π,
    c = 1; imbnnPU: a = π′, c = (1−π′)/(1−π)). Then R_n = Σ_i r_i·σ(g_i) with r_i = c/n_U on U rows
    and −c·π/n_P on P rows, and dR_p/dσ(g_i) = −a/n_P on P rows. With σ′ = σ(1 − σ), the gradient on
    row i is σ′·(r_i − [s_i]·a/n_P) when R_n ≥ −β and σ′·(−γ·r_i) otherwise (uPU never corrects).
    A head whose batch lacks P or U gets n_P⁻¹ = n_U⁻¹ = 0, hence zero coefficients and zero gradient.

    PU heads with the logistic surrogate: R_n = Σ_i r_i·softplus(g_i) (same r_i), R_p =
    Σ_i rp_i·softplus(−g_i) with rp_i = [s_i]·a/n_P; softplus′ = σ, so the gradient on row i is
    σ·(r_i + rp_i) − rp_i when R_n ≥ −β and σ·(−γ·r_i) otherwise. :meth:`plan` stores r + rp in
    ``normal`` and −rp in ``neg_v`` for those heads (the numba kernels read them the same way).

    Logistic heads (bce, wbce, pn): the gradient of mean_i w·y_i·softplus(−g_i) + (1−y_i)·softplus(g_i)
    is σ(g_i)·u_i − v_i with u_i = (1 + (w−1)·y_i)/B and v_i = w·y_i/B.

    With ``device`` None the per-head constants are float32 numpy rows and :meth:`plan` takes numpy
    arrays (the numba kernels' runs, which need no torch); with a torch device they are tensors
    there, for :meth:`plan`, :meth:`grad` and :meth:`objective` on tensors.
    """

    def __init__(self, heads: Sequence[HeadLoss], *, device: Any = None, dtype: Any = None):
        def row(values: Sequence[float]) -> Any:
            if device is None:
                return np.array([list(values)], dtype=np.float32)
            import torch

            return torch.tensor(
                [list(values)], dtype=torch.float32 if dtype is None else dtype, device=device
            )

        specs = [get_loss(h.loss) for h in heads]
        is_pu = [spec.kind == "pu" for spec in specs]
        self.k = len(heads)
        self.dtype = dtype
        self.any_pu = any(is_pu)
        self.any_bce = not all(is_pu)
        self.mixed = self.any_pu and self.any_bce
        a, c, pi = [], [], []
        for h, spec, pu in zip(heads, specs, is_pu, strict=True):
            p = h.prior if pu else 0.5
            pi.append(p)
            if spec.name == "imbnnpu":
                a.append(h.prior_prime)
                c.append((1 - h.prior_prime) / (1 - p))
            else:
                a.append(p if pu else 0.0)
                c.append(1.0 if pu else 0.0)
        corrects = [spec.name in ("nnpu", "imbnnpu") for spec in specs]
        self.pu_col = row([1.0 if pu else 0.0 for pu in is_pu]) > 0
        self.a = row(a)
        self.c = row(c)
        self.c_pi = self.c * row(pi)
        # uPU: threshold -inf, so R_n >= threshold always holds and the objective is never corrected
        self.neg_beta = row(
            [-h.beta if corr else float("-inf") for h, corr in zip(heads, corrects, strict=True)]
        )
        self.neg_gamma = row([-h.gamma for h in heads])
        self.w = row([1.0 if h.pos_weight is None else float(h.pos_weight) for h in heads])
        logistic = [
            pu and check_surrogate(h.surrogate) == "logistic" for h, pu in zip(heads, is_pu, strict=True)
        ]
        self.logistic = logistic  # per head: a PU head with the logistic surrogate
        self.any_logistic_pu = any(logistic)
        self.log_col = row([1.0 if lg else 0.0 for lg in logistic]) > 0

    def plan(
        self,
        s: torch.Tensor,
        inv_p: torch.Tensor,
        inv_u: torch.Tensor,
        inv_b: torch.Tensor,
        *,
        objective: bool = True,
    ) -> dict:
        """Per-row coefficients for labels ``s`` (N, K), given each row's batch n_P⁻¹, n_U⁻¹ (N, K), B⁻¹ (N, 1).

        Returns (N, K) matrices, sliced per batch by the caller: ``r`` (R_n = Σ r·ℓ(−g)), ``normal``
        and ``corrected`` (the gradient's coefficient of σ′, or of σ for logistic-surrogate PU heads,
        in each branch), ``u`` and ``neg_v`` (logistic heads: gradient σ·u − v; logistic-surrogate
        PU heads: ``neg_v`` = −rp, the normal branch's offset), and with ``objective`` ``rp``
        (R_p = Σ rp·ℓ(g)), which only :meth:`objective` needs.
        """
        out: dict[str, Any] = {}
        xp = np if isinstance(s, np.ndarray) else _torch()  # where and zeros_like alike in both
        if self.any_pu:
            rp = s * inv_p * self.a
            r = (1 - s) * inv_u * self.c - s * inv_p * self.c_pi
            normal = xp.where(self.log_col, r + rp, r - rp) if self.any_logistic_pu else r - rp
            out.update(r=r, normal=normal, corrected=r * self.neg_gamma)
            if objective:
                out["rp"] = rp
        if self.any_bce:
            wy = s * self.w
            out.update(u=(1 + wy - s) * inv_b, neg_v=-wy * inv_b)
        if self.any_logistic_pu:
            neg_rp = -s * inv_p * self.a
            out["neg_v"] = xp.where(self.log_col, neg_rp, out["neg_v"]) if "neg_v" in out else neg_rp
            if "u" not in out:
                out["u"] = xp.zeros_like(neg_rp)
        return out

    def grad(self, z: torch.Tensor, coef: dict, *, p: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """dObjective/dlogits (B, K) into ``out``, given one batch's slices of :meth:`plan`'s matrices.

        ``p`` is a (B, K) scratch buffer (it holds σ(z) afterwards).
        """
        import torch

        torch.sigmoid(z, out=p)
        if self.any_logistic_pu:
            corrected = self._corrected_logistic(z, p, coef)
            coefficient = torch.where(corrected, coef["corrected"], coef["normal"])
            logistic_pu = coefficient * p + torch.where(corrected, 0.0, coef["neg_v"])
            torch.ops.aten.sigmoid_backward.grad_input(coefficient, p, grad_input=out)
            torch.where(self.log_col, logistic_pu, out, out=out)
        elif self.any_pu:
            torch.where(self._corrected(p, coef, out), coef["corrected"], coef["normal"], out=out)
            torch.ops.aten.sigmoid_backward.grad_input(out, p, grad_input=out)  # coefficient · σ(1 − σ)
        if self.mixed:
            bce = torch.addcmul(coef["neg_v"], p, coef["u"])
            torch.where(self.pu_col, out, bce, out=out)
        elif self.any_bce:
            torch.addcmul(coef["neg_v"], p, coef["u"], out=out)
        return out

    def _negative_risk(self, p: torch.Tensor, coef: dict, tmp: torch.Tensor) -> torch.Tensor:
        return _torch().mul(p, coef["r"], out=tmp).sum(0, keepdim=True)

    def _corrected(self, p: torch.Tensor, coef: dict, tmp: torch.Tensor) -> torch.Tensor:
        return self._negative_risk(p, coef, tmp) < self.neg_beta

    def _negative_loss(self, z: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """ℓ(−g) per (row, head): σ(g), or softplus(g) for logistic-surrogate PU heads."""
        torch = _torch()
        return torch.where(self.log_col, torch.nn.functional.softplus(z), p) if self.any_logistic_pu else p

    def _corrected_logistic(self, z: torch.Tensor, p: torch.Tensor, coef: dict) -> torch.Tensor:
        r_n = (self._negative_loss(z, p) * coef["r"]).sum(0, keepdim=True)
        return r_n < self.neg_beta

    def objective(self, z: torch.Tensor, coef: dict) -> torch.Tensor:
        """The (1, K) objectives on one batch (the values the registered loss functions give)."""
        import torch
        import torch.nn.functional as F

        p = torch.sigmoid(z)
        out = torch.zeros((1, self.k), dtype=z.dtype, device=z.device)
        if self.any_pu:
            r_n = (self._negative_loss(z, p) * coef["r"]).sum(0, keepdim=True)
            positive_loss = (
                torch.where(self.log_col, F.softplus(-z), 1 - p) if self.any_logistic_pu else 1 - p
            )
            r_p = (coef["rp"] * positive_loss).sum(0, keepdim=True)
            pu = torch.where(r_n < self.neg_beta, self.neg_gamma * r_n, r_p + r_n)
            out = torch.where(self.pu_col, pu, out)
        if self.any_bce:
            # softplus(−g) = softplus(g) − g, so the loss is Σ u·softplus(g) − v·g (bce columns only:
            # logistic-surrogate PU columns keep their PU value)
            bce = (coef["u"] * F.softplus(z) + coef["neg_v"] * z).sum(0, keepdim=True)
            out = torch.where(self.pu_col, out, bce)
        return out


def _torch() -> Any:
    """The torch module, imported on first use (see the module's imports)."""
    import torch

    return torch
