"""PU objectives against numbers computed by hand (math module, not torch), both branches, and their gradients."""

from __future__ import annotations

import math

import pytest
import torch

from impulses.errors import ImpulsesError
from impulses.pu.losses import (
    LOSSES,
    FusedObjective,
    HeadLoss,
    bce_loss,
    get_loss,
    imbnnpu_loss,
    nnpu_loss,
    pn_loss,
    upu_loss,
    wbce_loss,
)


def sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


# a batch of 2 labeled positives and 3 unlabeled rows
G = [2.0, -1.0, 0.5, -2.0, 1.5]
S = [1, 1, 0, 0, 0]
P_ROWS = [g for g, s in zip(G, S, strict=True) if s == 1]
U_ROWS = [g for g, s in zip(G, S, strict=True) if s == 0]


def means(g_p: list[float], g_u: list[float]) -> tuple[float, float, float]:
    """mean_P ℓ(g), mean_P ℓ(−g), mean_U ℓ(−g) with ℓ(z) = σ(−z)."""
    mpp = sum(sig(-g) for g in g_p) / len(g_p)
    mpn = sum(sig(g) for g in g_p) / len(g_p)
    mun = sum(sig(g) for g in g_u) / len(g_u)
    return mpp, mpn, mun


def t(values: list[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def test_nnpu_normal_branch_is_rp_plus_rn() -> None:
    pi = 0.3
    mpp, mpn, mun = means(P_ROWS, U_ROWS)
    r_n = mun - pi * mpn
    assert r_n >= 0  # this batch takes the normal branch
    assert nnpu_loss(t(G), t(S), pi).item() == pytest.approx(pi * mpp + r_n, abs=1e-12)


def test_nnpu_corrected_branch_is_minus_gamma_rn() -> None:
    pi, gamma = 0.9, 0.7
    g = [3.0, 2.5, -3.0, -2.0, -4.0]  # confident P, U scored negative: R_n < 0
    mpp, mpn, mun = means(g[:2], g[2:])
    r_n = mun - pi * mpn
    assert r_n < 0
    assert nnpu_loss(t(g), t(S), pi, gamma=gamma).item() == pytest.approx(-gamma * r_n, abs=1e-12)
    # uPU on the same batch is never corrected: R_p + R_n, negative R_n included
    assert upu_loss(t(g), t(S), pi).item() == pytest.approx(pi * mpp + r_n, abs=1e-12)


def test_nnpu_beta_moves_the_threshold() -> None:
    pi = 0.9
    g = [3.0, 2.5, -3.0, -2.0, -4.0]
    mpp, mpn, mun = means(g[:2], g[2:])
    r_n = mun - pi * mpn
    # with beta > |R_n| the negative R_n is tolerated: the normal objective
    assert nnpu_loss(t(g), t(S), pi, beta=abs(r_n) + 0.01).item() == pytest.approx(pi * mpp + r_n, abs=1e-12)


@pytest.mark.parametrize(("pi", "pi_prime"), [(0.3, 0.5), (0.074, 0.5), (0.2, 0.3)])
def test_imbnnpu_normal_branch(pi: float, pi_prime: float) -> None:
    mpp, mpn, mun = means(P_ROWS, U_ROWS)
    r_p = pi_prime * mpp
    r_n = (1 - pi_prime) / (1 - pi) * (mun - pi * mpn)
    assert r_n >= 0
    got = imbnnpu_loss(t(G), t(S), pi, prior_prime=pi_prime).item()
    assert got == pytest.approx(r_p + r_n, abs=1e-12)


def test_imbnnpu_corrected_branch() -> None:
    pi, pi_prime, gamma = 0.8, 0.5, 1.0
    g = [3.0, 2.5, -3.0, -2.0, -4.0]
    _, mpn, mun = means(g[:2], g[2:])
    r_n = (1 - pi_prime) / (1 - pi) * (mun - pi * mpn)
    assert r_n < 0
    assert imbnnpu_loss(t(g), t(S), pi, prior_prime=pi_prime).item() == pytest.approx(-gamma * r_n, abs=1e-12)


def test_bce_wbce_pn_are_logistic_losses() -> None:
    bce = sum(softplus(-g) if s else softplus(g) for g, s in zip(G, S, strict=True)) / len(G)
    assert bce_loss(t(G), t(S)).item() == pytest.approx(bce, abs=1e-12)
    w = 3 / 2  # |U| / |P|
    wbce = sum(w * softplus(-g) if s else softplus(g) for g, s in zip(G, S, strict=True)) / len(G)
    assert wbce_loss(t(G), t(S)).item() == pytest.approx(wbce, abs=1e-12)
    w = 5.0
    wbce5 = sum(w * softplus(-g) if s else softplus(g) for g, s in zip(G, S, strict=True)) / len(G)
    assert wbce_loss(t(G), t(S), pos_weight=5.0).item() == pytest.approx(wbce5, abs=1e-12)
    # torch's own BCEWithLogitsLoss agrees (an independent implementation)
    ref = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(5.0, dtype=torch.float64))(t(G), t(S))
    assert wbce_loss(t(G), t(S), pos_weight=5.0).item() == pytest.approx(ref.item(), abs=1e-12)
    y = [1, 1, 1, 0, 0]  # pn takes the true labels, positives weighted by |N| / |P| = 2 / 3
    pn = sum(2 / 3 * softplus(-g) if v else softplus(g) for g, v in zip(G, y, strict=True)) / len(G)
    assert pn_loss(t(G), t(y)).item() == pytest.approx(pn, abs=1e-12)
    assert pn_loss(t(G), t(y), pos_weight=5.0).item() == pytest.approx(
        wbce_loss(t(G), t(y), pos_weight=5.0).item()
    )


def test_correction_branch_gradient_is_gradient_ascent_on_rn() -> None:
    """In the corrected branch d(objective)/dg_i = −γ·dR_n/dg_i, by hand: σ′ = σ(1−σ)."""
    pi, gamma = 0.9, 0.5
    g = [3.0, 2.5, -3.0, -2.0, -4.0]
    logits = t(g).requires_grad_()
    nnpu_loss(logits, t(S), pi, gamma=gamma).backward()
    n_p, n_u = 2, 3
    expected = []
    for gi, si in zip(g, S, strict=True):
        d = sig(gi) * (1 - sig(gi))
        d_rn = (-pi * d / n_p) if si else (d / n_u)  # R_n = mean_U σ(g) − π·mean_P σ(g)
        expected.append(-gamma * d_rn)
    assert logits.grad.tolist() == pytest.approx(expected, abs=1e-12)


def test_normal_branch_gradient_by_hand() -> None:
    pi = 0.3
    logits = t(G).requires_grad_()
    nnpu_loss(logits, t(S), pi).backward()
    expected = []
    for gi, si in zip(G, S, strict=True):
        d = sig(gi) * (1 - sig(gi))
        expected.append(
            (-pi * d / 2 - pi * d / 2) if si else d / 3
        )  # R_p: −π·σ′/n_P; R_n: −π·σ′/n_P or σ′/n_U
    assert logits.grad.tolist() == pytest.approx(expected, abs=1e-12)


def test_k_heads_equal_k_single_calls() -> None:
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(40, 4, generator=gen, dtype=torch.float64) * 3
    s = (torch.rand(40, 4, generator=gen) < 0.3).double()
    priors = [0.1, 0.4, 0.7, 0.9]
    for fn in (nnpu_loss, imbnnpu_loss, upu_loss):
        together = fn(z, s, torch.tensor(priors))
        alone = torch.stack([fn(z[:, k], s[:, k], priors[k]) for k in range(4)])
        torch.testing.assert_close(together, alone)
    # a shared (B,) label vector broadcasts to every head
    shared = fn(z, s[:, 0], 0.3)
    torch.testing.assert_close(shared, torch.stack([fn(z[:, k], s[:, 0], 0.3) for k in range(4)]))


@pytest.mark.parametrize("fn", [nnpu_loss, imbnnpu_loss, upu_loss])
@pytest.mark.parametrize("labels", [[0, 0, 0, 0], [1, 1, 1, 1]])
def test_batch_without_p_or_u_gives_zero_not_nan_and_not_all_negative(fn, labels: list[int]) -> None:
    logits = t([2.0, -1.0, 0.5, 3.0]).requires_grad_()
    obj = fn(logits, t(labels), 0.3)
    obj.backward()
    assert obj.item() == 0.0
    assert torch.all(logits.grad == 0)
    if not any(labels):
        # Kiryo's reference divides by max(1, n_P), which turns the batch into "U is negative"
        all_negative = sum(sig(g) for g in [2.0, -1.0, 0.5, 3.0]) / 4
        assert all_negative > 0.5 and obj.item() != pytest.approx(all_negative)


def test_only_the_head_lacking_positives_is_zeroed() -> None:
    z = t([[1.0, 1.0], [-1.0, -1.0], [0.5, 0.5]])
    s = t([[1.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    obj = nnpu_loss(z, s, 0.3)
    assert obj[1].item() == 0.0
    assert obj[0].item() == pytest.approx(nnpu_loss(z[:, 0], s[:, 0], 0.3).item())
    assert obj[0].item() != 0.0


@pytest.mark.parametrize("prior", [0.0, 1.0, -0.1, 1.5, float("nan")])
def test_prior_outside_open_unit_interval_is_an_error(prior: float) -> None:
    with pytest.raises(ImpulsesError, match="prior"):
        nnpu_loss(t(G), t(S), prior)


def test_registry_maps_cli_names_to_functions() -> None:
    assert set(LOSSES) == {"imbnnpu", "nnpu", "upu", "bce", "wbce", "pn"}
    assert get_loss("imbnnPU").fn is imbnnpu_loss
    assert LOSSES["pn"].labels == "y" and not LOSSES["bce"].uses_prior and LOSSES["nnpu"].uses_prior
    with pytest.raises(ImpulsesError, match="unknown loss 'hinge'"):
        get_loss("hinge")


def _reference(heads: list[HeadLoss], z: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Objectives of each head via the registered (autograd) functions."""
    out = []
    for k, head in enumerate(heads):
        spec = LOSSES[head.loss]
        if spec.kind == "pu":
            kw = {"beta": head.beta, "gamma": head.gamma, "prior_prime": head.prior_prime,
                  "surrogate": head.surrogate}  # fmt: skip
            out.append(spec.fn(z[:, k], s[:, k], head.prior, **kw))
        elif head.loss in ("wbce", "pn"):
            out.append(spec.fn(z[:, k], s[:, k], pos_weight=head.pos_weight))
        else:
            out.append(spec.fn(z[:, k], s[:, k]))
    return torch.stack(out)


def test_fused_gradient_equals_autograd_for_every_loss_and_branch() -> None:
    heads = [
        HeadLoss("imbnnpu", 0.3),
        HeadLoss("imbnnpu", 0.95, gamma=0.5),  # corrected on this batch
        HeadLoss("nnpu", 0.2),
        HeadLoss("nnpu", 0.97, beta=0.01, gamma=2.0),  # corrected
        HeadLoss("upu", 0.97),  # R_n < 0 but never corrected
        HeadLoss("bce"),
        HeadLoss("wbce", pos_weight=4.0),
        HeadLoss("pn", pos_weight=22 / 8),  # |N| / |P| of its column, as the trainer fills it
        HeadLoss("nnpu", 0.3),  # its column has no labeled positive in this batch
    ]
    k, b = len(heads), 30
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(b, k, generator=gen, dtype=torch.float64) * 2
    z[:, [1, 3, 4]] = torch.where(torch.arange(b)[:, None] < 8, 4.0, -4.0).double()
    s = (torch.arange(b)[:, None] < 8).double().expand(b, k).clone()
    s[:, 8] = 0
    zz = z.clone().requires_grad_()
    ref = _reference(heads, zz, s)
    ref.sum().backward()

    fused = FusedObjective(heads, device=torch.device("cpu"), dtype=torch.float64)
    n_p = s.sum(0, keepdim=True)
    n_u = b - n_p
    valid = (n_p > 0) & (n_u > 0)
    inv_p = torch.where(valid, 1 / n_p.clamp(min=1), 0.0).expand(b, k)
    inv_u = torch.where(valid, 1 / n_u.clamp(min=1), 0.0).expand(b, k)
    coef = fused.plan(s, inv_p, inv_u, torch.full((b, 1), 1 / b, dtype=torch.float64), objective=True)
    bufs = [torch.empty(b, k, dtype=torch.float64) for _ in range(2)]
    grad = fused.grad(z, coef, p=bufs[0], out=bufs[1])
    torch.testing.assert_close(grad, zz.grad, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(fused.objective(z, coef)[0], ref.detach(), rtol=1e-10, atol=1e-14)
    # the batch really exercises the corrected branch (heads 1, 3) and uPU's negative risk (head 4)
    _, mpn, mun = means([4.0] * 8, [-4.0] * (b - 8))
    assert ref[3].item() == pytest.approx(-2.0 * (mun - 0.97 * mpn))
    assert ref[1].item() == pytest.approx(-0.5 * (0.5 / 0.05) * (mun - 0.95 * mpn))
    assert ref[4].item() < 0


def logistic_means(g_p: list[float], g_u: list[float]) -> tuple[float, float, float]:
    """mean_P ℓ(g), mean_P ℓ(−g), mean_U ℓ(−g) with the logistic loss ℓ(z) = log(1 + e^(−z))."""
    mpp = sum(softplus(-g) for g in g_p) / len(g_p)
    mpn = sum(softplus(g) for g in g_p) / len(g_p)
    mun = sum(softplus(g) for g in g_u) / len(g_u)
    return mpp, mpn, mun


@pytest.mark.parametrize(("pi", "pi_prime"), [(0.3, 0.5), (0.2, 0.3)])
def test_logistic_surrogate_objectives_by_hand(pi: float, pi_prime: float) -> None:
    mpp, mpn, mun = logistic_means(P_ROWS, U_ROWS)
    g, s = t(G), t(S)
    r_n = mun - pi * mpn
    assert r_n > 0  # the normal branch
    assert nnpu_loss(g, s, pi, surrogate="logistic").item() == pytest.approx(pi * mpp + r_n)
    assert upu_loss(g, s, pi, surrogate="logistic").item() == pytest.approx(pi * mpp + r_n)
    imb = pi_prime * mpp + (1 - pi_prime) / (1 - pi) * r_n
    assert imbnnpu_loss(g, s, pi, prior_prime=pi_prime, surrogate="logistic").item() == pytest.approx(imb)
    # a prior so large that R_n < 0: the corrected branch −γ·R_n
    r_n_big = mun - 0.9 * mpn
    assert r_n_big < 0
    value = nnpu_loss(g, s, 0.9, gamma=2.0, surrogate="logistic").item()
    assert value == pytest.approx(-2.0 * r_n_big)
    with pytest.raises(ImpulsesError, match="surrogate must be one of sigmoid, logistic"):
        nnpu_loss(g, s, 0.3, surrogate="hinge")


def test_fused_logistic_surrogate_gradient_equals_autograd_in_both_branches() -> None:
    heads = [
        HeadLoss("imbnnpu", 0.3, surrogate="logistic"),
        HeadLoss("imbnnpu", 0.95, gamma=0.5, surrogate="logistic"),  # corrected on this batch
        HeadLoss("nnpu", 0.2, surrogate="logistic"),
        HeadLoss("nnpu", 0.97, beta=0.01, gamma=2.0, surrogate="logistic"),  # corrected
        HeadLoss("upu", 0.97, surrogate="logistic"),  # R_n < 0 but never corrected
        HeadLoss("nnpu", 0.2),  # a sigmoid head beside them
        HeadLoss("wbce", pos_weight=4.0),
        HeadLoss("nnpu", 0.3, surrogate="logistic"),  # no labeled positive in its column
    ]
    k, b = len(heads), 30
    gen = torch.Generator().manual_seed(2)
    z = torch.randn(b, k, generator=gen, dtype=torch.float64) * 2
    z[:, [1, 3, 4]] = torch.where(torch.arange(b)[:, None] < 8, 4.0, -4.0).double()
    s = (torch.arange(b)[:, None] < 8).double().expand(b, k).clone()
    s[:, 7] = 0
    zz = z.clone().requires_grad_()
    ref = _reference(heads, zz, s)
    ref.sum().backward()

    fused = FusedObjective(heads, device=torch.device("cpu"), dtype=torch.float64)
    n_p = s.sum(0, keepdim=True)
    n_u = b - n_p
    valid = (n_p > 0) & (n_u > 0)
    inv_p = torch.where(valid, 1 / n_p.clamp(min=1), 0.0).expand(b, k)
    inv_u = torch.where(valid, 1 / n_u.clamp(min=1), 0.0).expand(b, k)
    coef = fused.plan(s, inv_p, inv_u, torch.full((b, 1), 1 / b, dtype=torch.float64), objective=True)
    bufs = [torch.empty(b, k, dtype=torch.float64) for _ in range(2)]
    grad = fused.grad(z, coef, p=bufs[0], out=bufs[1])
    torch.testing.assert_close(grad, zz.grad, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(fused.objective(z, coef)[0], ref.detach(), rtol=1e-10, atol=1e-14)
    # both branches really happen: heads 1 and 3 corrected (−γ·R_n > 0), head 4 (uPU) negative
    _, mpn, mun = logistic_means([4.0] * 8, [-4.0] * (b - 8))
    assert mun - 0.97 * mpn < 0
    assert ref[3].item() == pytest.approx(-2.0 * (mun - 0.97 * mpn))
    assert ref[4].item() < 0
    assert ref[0].item() > 0 and ref[2].item() > 0
    assert (zz.grad[:, 7] == 0).all()
