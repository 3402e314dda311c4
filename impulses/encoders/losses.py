"""Contrastive losses on two views' projections: NT-Xent (SimCLR) and the debiased loss of Chuang et al.

For a batch of B images with projections ``z1, z2`` (B, d), both losses L2-normalise them and treat
each of the 2B views as an anchor whose positive is the other view of its image and whose N = 2B - 2
negatives are all other views in the (global) batch. With s = similarity / temperature:

- NT-Xent: loss_i = -log(e^{s_pos} / (e^{s_pos} + sum_neg e^{s_neg})).
- Debiased (Chuang, Robinson, Lin, Torralba, Jegelka 2020, as in their reference code):
  Ng = (sum_neg e^{s_neg} - tau_plus * N * e^{s_pos}) / (1 - tau_plus), clamped below at N * e^{-1/t};
  loss_i = -log(e^{s_pos} / (e^{s_pos} + Ng)). With tau_plus = 0 this is NT-Xent.

Both are computed in log space (logsumexp; log Ng = lse_neg + log1p(-r) - log1p(-tau_plus) with
r = tau_plus * N * e^{s_pos - lse_neg}) in float32 with autocast off, so bf16/fp16 training and small
temperatures cannot overflow. Self and positive entries are excluded by index, so any batch size
works. Under torch.distributed the projections are all-gathered with a gradient-correct gather and N
counts the global batch; each rank averages over its own anchors (DDP's gradient averaging then gives
the global mean).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from impulses.encoders.distributed import gather_with_grad, is_distributed
from impulses.errors import ParameterError


def _logits(
    z1: torch.Tensor, z2: torch.Tensor, temperature: float, gather: bool | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """(2b, 2B) similarity logits of local anchors against all views, the self and positive columns, and B."""
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ParameterError(
            ("z1", "z2"), f"must both be (B, d); got {tuple(z1.shape)} and {tuple(z2.shape)}"
        )
    if temperature <= 0:
        raise ParameterError("temperature", f"must be positive, got {temperature}")
    z1 = F.normalize(z1.float(), dim=1)
    z2 = F.normalize(z2.float(), dim=1)
    b = z1.shape[0]
    gather = is_distributed() if gather is None else gather
    if gather:
        import torch.distributed as dist

        all1, all2, offset = gather_with_grad(z1), gather_with_grad(z2), dist.get_rank() * b
    else:
        all1, all2, offset = z1, z2, 0
    big_b = all1.shape[0]
    if big_b < 2:
        raise ParameterError(
            ("z1", "z2"), "need at least 2 images in the (global) batch for a contrastive loss"
        )
    logits = torch.cat([z1, z2]) @ torch.cat([all1, all2]).T / temperature
    local = torch.arange(b, device=z1.device) + offset
    self_col = torch.cat([local, local + big_b])
    pos_col = torch.cat([local + big_b, local])
    return logits, self_col, pos_col, big_b


def nt_xent_loss(
    z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5, *, gather: bool | None = None
) -> torch.Tensor:
    """SimCLR's NT-Xent loss, mean over the 2B anchors (``gather``: None = auto under torch.distributed)."""
    with torch.autocast(z1.device.type, enabled=False):
        logits, self_col, pos_col, _ = _logits(z1, z2, temperature, gather)
        logits = logits.scatter(1, self_col[:, None], float("-inf"))
        return F.cross_entropy(logits, pos_col)


def debiased_contrastive_loss(
    z1: torch.Tensor,
    z2: torch.Tensor,
    temperature: float = 0.5,
    tau_plus: float = 0.1,
    *,
    gather: bool | None = None,
) -> torch.Tensor:
    """Chuang et al.'s debiased contrastive loss, mean over the 2B anchors (see the module docstring)."""
    if not 0.0 <= tau_plus < 1.0:
        raise ParameterError("tau_plus", f"must be in [0, 1), got {tau_plus}")
    with torch.autocast(z1.device.type, enabled=False):
        logits, self_col, pos_col, big_b = _logits(z1, z2, temperature, gather)
        n_neg = 2 * big_b - 2
        rows = torch.arange(logits.shape[0], device=logits.device)
        log_pos = logits[rows, pos_col]
        neg = logits.scatter(1, self_col[:, None], float("-inf")).scatter(1, pos_col[:, None], float("-inf"))
        lse_neg = torch.logsumexp(neg, dim=1)
        # Ng = (e^lse_neg - tau+ N e^log_pos) / (1 - tau+) = e^lse_neg (1 - r) / (1 - tau+)
        r = tau_plus * n_neg * torch.exp(log_pos - lse_neg)
        positive = r < 1
        log_ng = torch.where(
            positive,
            lse_neg + torch.log1p(-torch.where(positive, r, torch.zeros_like(r))) - math.log1p(-tau_plus),
            torch.full_like(r, float("-inf")),
        )
        log_ng = torch.clamp(log_ng, min=math.log(n_neg) - 1.0 / temperature)
        return F.softplus(log_ng - log_pos).mean()  # -log(pos / (pos + Ng)) = log(1 + Ng / pos)


LOSSES = {"debiased": debiased_contrastive_loss, "ntxent": nt_xent_loss}
