"""torchrun integration: process-group setup from the environment and a gradient-correct all-gather.

The contrastive loss needs every rank's projections as negatives. ``torch.distributed.all_gather``
has no gradient, and the usual hand-written fix that returns only ``grads[rank]`` in backward drops
the gradient that the OTHER ranks' losses send to this rank's projections. :func:`gather_with_grad`
all-reduces (sums) the gathered gradients first, then keeps this rank's slice: with DDP's gradient
averaging, the parameter gradients equal a single process's on the global batch.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from impulses.runtime import DistInfo


def init_distributed(device: torch.device) -> DistInfo:
    """Join the torchrun process group (NCCL on CUDA, gloo on CPU) when WORLD_SIZE > 1."""
    info = DistInfo.from_env()
    if info.distributed and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    if dist.is_initialized():
        info = DistInfo(dist.get_rank(), dist.get_world_size(), info.local_rank)
    return info


def is_distributed() -> bool:
    """True inside an initialised process group with more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    """Wait for every rank (a no-op when running alone)."""
    if is_distributed():
        dist.barrier()


class _GatherWithGrad(torch.autograd.Function):
    """Forward: concatenate every rank's (b, ...) tensor. Backward: sum the gradients over ranks, keep ours."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x)
        ctx.rows = x.shape[0]
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)  # every rank's loss depends on our rows
        start = dist.get_rank() * ctx.rows
        return grad[start : start + ctx.rows]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """All ranks' ``x`` concatenated along dim 0 in rank order, differentiable; ``x`` itself when alone.

    Every rank must pass the same shape (the pretraining loader drops the last partial batch).
    """
    if not is_distributed():
        return x
    return _GatherWithGrad.apply(x)


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """Mean of a tensor over ranks (for reporting; no gradient)."""
    if not is_distributed():
        return value
    value = value.detach().clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / dist.get_world_size()
