"""Two gloo processes on CPU: the gathered loss and its gradients equal one process on the global batch."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from impulses.encoders.distributed import gather_with_grad, is_distributed
from impulses.encoders.losses import debiased_contrastive_loss, nt_xent_loss

WORLD = 2
GLOBAL_BATCH = 8


def _inputs() -> tuple[torch.Tensor, torch.Tensor, torch.nn.Linear]:
    g = torch.Generator().manual_seed(7)
    x1 = torch.randn(GLOBAL_BATCH, 6, generator=g)
    x2 = x1 + 0.5 * torch.randn(GLOBAL_BATCH, 6, generator=g)
    torch.manual_seed(11)
    return x1, x2, torch.nn.Linear(6, 4)


class _BuggyGather(torch.autograd.Function):
    """The common mistake: backward returns this rank's slice of the gradient without summing over ranks."""

    @staticmethod
    def forward(ctx, x):  # type: ignore[override]
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        ctx.rows = x.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        start = dist.get_rank() * ctx.rows
        return grad[start : start + ctx.rows]


def _loss_case(rank: int, loss_name: str) -> dict[str, torch.Tensor]:
    x1, x2, linear = _inputs()
    b = GLOBAL_BATCH // WORLD
    rows = slice(rank * b, (rank + 1) * b)
    model = torch.nn.parallel.DistributedDataParallel(linear)
    z1 = model(x1[rows])
    z2 = model(x2[rows])
    z1.retain_grad()
    z2.retain_grad()
    loss = (
        debiased_contrastive_loss(z1, z2, 0.2, 0.1) if loss_name == "debiased" else nt_xent_loss(z1, z2, 0.2)
    )
    assert is_distributed()
    loss.backward()
    # the same with the buggy gather, on detached copies
    y1, y2 = z1.detach().clone().requires_grad_(), z2.detach().clone().requires_grad_()
    import impulses.encoders.losses as losses

    original = losses.gather_with_grad
    losses.gather_with_grad = _BuggyGather.apply
    try:
        debiased_contrastive_loss(y1, y2, 0.2, 0.1, gather=True).backward()
    finally:
        losses.gather_with_grad = original
    return {
        "loss": loss.detach(),
        "z1_grad": z1.grad,
        "z2_grad": z2.grad,
        "buggy_z1_grad": y1.grad,
        "weight_grad": linear.weight.grad,
        "bias_grad": linear.bias.grad,
    }


def _worker(rank: int, port: int, out_dir: str) -> None:
    """One rank: both losses on its half of the batch, then a short DDP pretraining run."""
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(WORLD),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    try:
        results = {name: _loss_case(rank, name) for name in ("debiased", "ntxent")}
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
        from tests.encoders.test_pretrain import tiny_run

        tiny_run(Path(out_dir) / "ddp")  # joins the existing group; DDP over both ranks
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run the two-process part once (forked: the children reuse the parent's imports)."""
    out = tmp_path_factory.mktemp("ddp")
    mp.start_processes(_worker, args=(_free_port(), str(out)), nprocs=WORLD, join=True, start_method="fork")
    return out


@pytest.mark.parametrize("loss_name", ["debiased", "ntxent"])
def test_two_processes_equal_one_process_on_the_global_batch(two_ranks: Path, loss_name: str) -> None:
    ranks = [torch.load(two_ranks / f"rank{r}.pt")[loss_name] for r in range(WORLD)]
    x1, x2, linear = _inputs()
    z1, z2 = linear(x1), linear(x2)
    z1.retain_grad()
    z2.retain_grad()
    loss = (
        debiased_contrastive_loss(z1, z2, 0.2, 0.1) if loss_name == "debiased" else nt_xent_loss(z1, z2, 0.2)
    )
    loss.backward()

    b = GLOBAL_BATCH // WORLD
    # each rank's loss is the mean over its anchors: their average is the global mean
    assert torch.stack([r["loss"] for r in ranks]).mean().item() == pytest.approx(loss.item(), rel=1e-6)
    for r, result in enumerate(ranks):
        rows = slice(r * b, (r + 1) * b)
        # d(mean of rank losses)/dz = (1/W) * the gradient each rank received
        torch.testing.assert_close(result["z1_grad"] / WORLD, z1.grad[rows], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(result["z2_grad"] / WORLD, z2.grad[rows], rtol=1e-5, atol=1e-7)
        # DDP averages parameter gradients over ranks: the result is the single-process gradient
        torch.testing.assert_close(result["weight_grad"], linear.weight.grad, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(result["bias_grad"], linear.bias.grad, rtol=1e-5, atol=1e-7)
        if loss_name == "debiased":
            # returning only grads[rank] loses the other rank's contribution: the test would notice
            assert not torch.allclose(result["buggy_z1_grad"] / WORLD, z1.grad[rows], rtol=1e-3, atol=1e-6)


def test_gather_is_identity_when_alone() -> None:
    x = torch.randn(3, 2)
    assert gather_with_grad(x) is x
    assert not is_distributed()


def test_ddp_pretraining_equals_single_process(two_ranks: Path, tmp_path: Path) -> None:
    """Without BatchNorm the global-batch DDP run follows the single-process trajectory step for step."""
    from impulses.encoders.checkpoint import load_checkpoint
    from tests.encoders.test_pretrain import tiny_run

    tiny_run(tmp_path / "single")
    single = load_checkpoint(tmp_path / "single")
    ddp = load_checkpoint(two_ranks / "ddp")
    assert ddp["epoch"] == single["epoch"] == 2
    for key, value in single["encoder_state"].items():
        torch.testing.assert_close(ddp["encoder_state"][key], value, rtol=1e-4, atol=1e-5)
    for a, b in zip(single["history"], ddp["history"], strict=True):
        if a["loss"] is not None:
            assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
