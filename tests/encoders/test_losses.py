"""The contrastive losses against hand-computed values and a port of the published reference code."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from impulses.encoders.losses import debiased_contrastive_loss, nt_xent_loss
from impulses.errors import ParameterError


def reference_loss(
    out_1: torch.Tensor, out_2: torch.Tensor, temperature: float, debiased: bool, tau_plus: float
):
    """Chuang et al.'s published criterion (github.com/chingyaoc/DCL, main.py), on normalised inputs."""
    out_1, out_2 = F.normalize(out_1, dim=1), F.normalize(out_2, dim=1)
    batch_size = out_1.shape[0]
    negative_mask = torch.ones((batch_size, 2 * batch_size), dtype=bool)
    for i in range(batch_size):
        negative_mask[i, i] = 0
        negative_mask[i, i + batch_size] = 0
    mask = torch.cat((negative_mask, negative_mask), 0)
    out = torch.cat([out_1, out_2], dim=0)
    neg = torch.exp(torch.mm(out, out.t().contiguous()) / temperature)
    neg = neg.masked_select(mask).view(2 * batch_size, -1)
    pos = torch.exp(torch.sum(out_1 * out_2, dim=-1) / temperature)
    pos = torch.cat([pos, pos], dim=0)
    if debiased:
        n = batch_size * 2 - 2
        ng = (-tau_plus * n * pos + neg.sum(dim=-1)) / (1 - tau_plus)
        ng = torch.clamp(ng, min=n * np.e ** (-1 / temperature))
    else:
        ng = neg.sum(dim=-1)
    return (-torch.log(pos / (pos + ng))).mean()


def test_hand_computed_two_images() -> None:
    # view 1: a = (1, 0), b = (0.6, 0.8); view 2: c = (0.8, 0.6), d = (-1, 0) (c, d given at other lengths:
    # the losses normalise). Positives a-c, b-d; each anchor's N = 2 negatives are the other image's views.
    z1 = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    z2 = torch.tensor([[1.6, 1.2], [-3.0, 0.0]])
    t, tau = 0.5, 0.5
    pos = {"a": 0.8, "b": -0.6, "c": 0.8, "d": -0.6}  # cosines a.c, b.d
    negs = {
        "a": [0.6, -1.0],
        "b": [0.6, 0.96],
        "c": [0.96, -0.8],
        "d": [-1.0, -0.8],
    }  # a.b a.d | b.a b.c | ...
    ntxent, debiased, clamped = 0.0, 0.0, 0
    for k in "abcd":
        p = math.exp(pos[k] / t)
        neg_sum = sum(math.exp(s / t) for s in negs[k])
        ntxent += -math.log(p / (p + neg_sum)) / 4
        raw = (neg_sum - tau * 2 * p) / (1 - tau)
        clamped += raw < 2 * math.exp(-1 / t)
        ng = max(raw, 2 * math.exp(-1 / t))
        debiased += -math.log(p / (p + ng)) / 4
    assert clamped == 2  # anchors a and d hit the clamp at N e^{-1/t}, b and c do not
    assert nt_xent_loss(z1, z2, temperature=t).item() == pytest.approx(ntxent, abs=1e-6)
    assert debiased_contrastive_loss(z1, z2, temperature=t, tau_plus=tau).item() == pytest.approx(
        debiased, abs=1e-6
    )


@pytest.mark.parametrize("batch", [2, 3, 7, 64])
@pytest.mark.parametrize("temperature", [0.5, 0.1])
@pytest.mark.parametrize("tau_plus", [0.0, 0.1, 0.5])
def test_equals_reference_code_float32(batch: int, temperature: float, tau_plus: float) -> None:
    g = torch.Generator().manual_seed(batch * 1000 + int(temperature * 10) + int(tau_plus * 100))
    z1 = torch.randn(batch, 16, generator=g, dtype=torch.float64)
    z2 = z1 + 0.7 * torch.randn(batch, 16, generator=g, dtype=torch.float64)
    expected_d = reference_loss(z1, z2, temperature, True, tau_plus).item()
    expected_n = reference_loss(z1, z2, temperature, False, tau_plus).item()
    got_d = debiased_contrastive_loss(z1.float(), z2.float(), temperature, tau_plus).item()
    got_n = nt_xent_loss(z1.float(), z2.float(), temperature).item()
    assert abs(got_d - expected_d) < 1e-5
    assert abs(got_n - expected_n) < 1e-5


def test_gradients_equal_reference_code() -> None:
    g = torch.Generator().manual_seed(3)
    z1 = torch.randn(16, 8, generator=g, dtype=torch.float64)
    z2 = z1 + 0.3 * torch.randn(16, 8, generator=g, dtype=torch.float64)
    grads = []
    for fn in (
        lambda a, b: reference_loss(a, b, 0.2, True, 0.3),
        lambda a, b: debiased_contrastive_loss(a, b, 0.2, 0.3),
    ):
        a, b = z1.clone().requires_grad_(), z2.clone().requires_grad_()
        fn(a, b).backward()
        grads.append(torch.cat([a.grad, b.grad]))
    assert torch.allclose(grads[0], grads[1], atol=1e-10, rtol=1e-7)


def test_tau_plus_zero_is_the_simclr_loss() -> None:
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(32, 10, generator=g), torch.randn(32, 10, generator=g)
    for t in (0.5, 0.1):
        a = debiased_contrastive_loss(z1, z2, t, tau_plus=0.0)
        b = nt_xent_loss(z1, z2, t)
        assert a.item() == pytest.approx(b.item(), rel=1e-6)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_finite_in_low_precision_at_small_temperature(dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(1)
    base = torch.randn(128, 128, generator=g)
    z1 = base.to(dtype).requires_grad_()
    z2 = (base + 0.01 * torch.randn(128, 128, generator=g)).to(dtype).requires_grad_()  # near-identical views
    # in the raw-exp formulation e^{1/t} with t = 0.05 is 4.9e8: beyond fp16's range
    for loss_fn in (
        lambda a, b: debiased_contrastive_loss(a, b, 0.1, 0.1),
        lambda a, b: nt_xent_loss(a, b, 0.05),
    ):
        loss = loss_fn(z1, z2)
        loss.backward()
        assert torch.isfinite(loss)
        assert torch.isfinite(z1.grad).all() and torch.isfinite(z2.grad).all()
        z1.grad = z2.grad = None
    reference = reference_loss(base.double(), base.double() + 0, 0.1, True, 0.1)
    assert torch.isfinite(reference)


def test_under_bf16_autocast_matches_float32() -> None:
    g = torch.Generator().manual_seed(2)
    z1, z2 = torch.randn(64, 32, generator=g), torch.randn(64, 32, generator=g)
    exact = debiased_contrastive_loss(z1, z2, 0.1, 0.1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = debiased_contrastive_loss(z1, z2, 0.1, 0.1)
    assert mixed.dtype == torch.float32
    assert mixed.item() == pytest.approx(exact.item(), rel=1e-6)


def test_batch_order_does_not_matter() -> None:
    g = torch.Generator().manual_seed(4)
    z1, z2 = torch.randn(9, 5, generator=g), torch.randn(9, 5, generator=g)
    perm = torch.randperm(9, generator=g)
    a = debiased_contrastive_loss(z1, z2)
    b = debiased_contrastive_loss(z1[perm], z2[perm])
    assert a.item() == pytest.approx(b.item(), rel=1e-6)


def test_bad_arguments() -> None:
    z = torch.randn(4, 3)
    with pytest.raises(ParameterError, match=r"^tau_plus must be in \[0, 1\), got 1\.0"):
        debiased_contrastive_loss(z, z, tau_plus=1.0)
    with pytest.raises(ParameterError, match=r"^temperature must be positive"):
        nt_xent_loss(z, z, temperature=0.0)
    with pytest.raises(ParameterError, match=r"^z1 and z2 need at least 2"):
        debiased_contrastive_loss(z[:1], z[:1])
    with pytest.raises(ValueError, match=r"^z1 and z2 must both be \(B, d\)"):  # a ValueError, as before
        nt_xent_loss(z, z[:3])
