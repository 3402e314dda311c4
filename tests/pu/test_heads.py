"""train_heads against an independent autograd + torch.optim.Adam loop, and K heads together against K runs alone."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score, roc_auc_score

import impulses.pu.kernels as kernels_module
import impulses.pu.trainer as trainer_module
from impulses.errors import ImpulsesError, ParameterError
from impulses.pu.generator import TorchStream
from impulses.pu.heads import HeadSpec, load_heads, save_heads, store_encoder, train_heads
from impulses.pu.losses import LOSSES
from impulses.pu.sweep import head_grid
from impulses.pu.trainer import epoch_order as _epoch_order
from impulses.pu.trainer import linear_init

KERNELS = pytest.mark.parametrize("kernel", ["fused", "torch"])
CPU_KERNELS = pytest.mark.parametrize("kernel", ["fused", "torch", "wide"])


def pu_data(
    n: int = 600, d: int = 12, seed: int = 0, c: float = 0.3
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.25).astype(np.int64)
    X = rng.normal(size=(n, d)).astype(np.float32)
    X[y == 1, :3] += 1.5
    s = ((y == 1) & (rng.random(n) < c)).astype(np.int64)
    return X, s, y


def reference_train(
    X: np.ndarray,
    s: np.ndarray,
    head: HeadSpec,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    stats: dict | None = None,
    shuffle_seed: int | None = None,
) -> tuple[np.ndarray, float, int]:
    """The paper's code path: nn.Linear, autograd, torch.optim.Adam, batches in row order.

    A PU head skips the optimizer step on a batch without a labeled positive or unlabeled row.
    ``stats["corrected"]`` counts nnPU steps that took the correction branch (R_n < −β).
    With ``shuffle_seed``, each epoch's batches follow ``torch.randperm(N)`` drawn from a generator
    seeded with it: the order train_heads documents.
    """
    torch.manual_seed(head.seed)
    model = torch.nn.Linear(X.shape[1], 1)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    spec = LOSSES[head.loss]
    Xt, st = torch.from_numpy(X), torch.from_numpy(s).float()
    pos_weight = float((st == 0).sum() / st.sum())
    skipped = 0
    gen = torch.Generator().manual_seed(shuffle_seed) if shuffle_seed is not None else None
    for _ in range(epochs):
        order = torch.randperm(len(X), generator=gen) if gen is not None else torch.arange(len(X))
        for idx in torch.split(order, batch_size):
            xb, sb = Xt[idx], st[idx]
            opt.zero_grad(set_to_none=True)
            if spec.kind == "pu" and (sb.sum() == 0 or sb.sum() == len(sb)):
                skipped += 1
                continue
            out = model(xb)[:, 0]
            if spec.kind == "pu":
                loss = spec.fn(
                    out, sb, head.prior, prior_prime=head.prior_prime, beta=head.beta, gamma=head.gamma,
                    surrogate=head.surrogate,
                )  # fmt: skip
                p = torch.nn.functional.softplus(out) if head.surrogate == "logistic" else torch.sigmoid(out)
                r_n = p[sb == 0].mean() - head.prior * p[sb == 1].mean()
                if stats is not None and head.loss == "nnpu" and r_n < -head.beta:
                    stats["corrected"] = stats.get("corrected", 0) + 1
            elif head.loss in ("wbce", "pn"):  # weight |U|/|P| (|N|/|P| for pn's y) of the whole set
                loss = spec.fn(out, sb, pos_weight=pos_weight)
            else:
                loss = spec.fn(out, sb)
            loss.backward()
            opt.step()
    return model.weight.detach().numpy()[0], float(model.bias.item()), skipped


def test_linear_init_is_torch_default_linear_init() -> None:
    for seed in (0, 7):
        torch.manual_seed(seed)
        lin = torch.nn.Linear(33, 1)
        w, b = linear_init(33, seed)
        assert w.dtype == b.dtype == np.float32
        assert np.array_equal(lin.weight[0].detach().numpy(), w) and np.array_equal(
            lin.bias.detach().numpy(), b
        )


@pytest.mark.parametrize(
    "head",
    [
        HeadSpec("imbnnpu", 0.15, seed=3),
        HeadSpec("nnpu", 0.9, seed=1),  # a too-large prior: the correction branch fires
        HeadSpec("upu", 0.15),
        HeadSpec("bce", seed=2),
        HeadSpec("wbce"),
        HeadSpec("pn", seed=4),  # given y in place of s: wBCE with |N|/|P| of the whole set
        HeadSpec("imbnnpu", 0.15, seed=3, surrogate="logistic"),
        HeadSpec("nnpu", 0.9, seed=1, surrogate="logistic"),  # both branches with the logistic loss
    ],
    ids=lambda h: h.loss + ("-logistic" if h.surrogate == "logistic" else ""),
)
@pytest.mark.parametrize("fused_adam", [True, False], ids=["fused-adam", "masked-adam"])
@CPU_KERNELS
def test_one_head_equals_autograd_adam_reference(
    head: HeadSpec, fused_adam: bool, kernel: str, monkeypatch
) -> None:
    monkeypatch.setattr(trainer_module, "USE_FUSED_ADAM", fused_adam)
    X, s, _ = pu_data()
    stats: dict = {}
    w_ref, b_ref, _ = reference_train(X, s, head, epochs=6, batch_size=64, lr=3e-3, stats=stats)
    if head.loss == "nnpu":
        assert 0 < stats["corrected"] < 60  # both branches were taken
    result = train_heads(X, s, [head], epochs=6, batch_size=64, lr=3e-3, shuffle=False, kernel=kernel)
    assert result.config["kernel"] == kernel
    np.testing.assert_allclose(result.W[:, 0], w_ref, atol=2e-6)
    assert result.b[0] == pytest.approx(b_ref, abs=2e-6)
    assert result.steps[0] == 6 * 10


@pytest.mark.parametrize(
    "head", [HeadSpec("imbnnpu", 0.15, seed=3), HeadSpec("wbce", seed=1)], ids=lambda h: h.loss
)
@CPU_KERNELS
def test_shuffled_head_equals_reference_with_the_same_permutations(head: HeadSpec, kernel: str) -> None:
    X, s, _ = pu_data()
    w_ref, b_ref, _ = reference_train(X, s, head, epochs=4, batch_size=64, lr=3e-3, shuffle_seed=5)
    result = train_heads(X, s, [head], epochs=4, batch_size=64, lr=3e-3, shuffle_seed=5, kernel=kernel)
    np.testing.assert_allclose(result.W[:, 0], w_ref, atol=2e-6)
    assert result.b[0] == pytest.approx(b_ref, abs=2e-6)


def test_skipped_batches_match_a_reference_that_skips_the_step() -> None:
    X, s, _ = pu_data(n=400, c=0.3)
    s[:] = 0
    s[[5, 70, 150, 290, 295]] = 1  # labeled positives in batches 0, 1, 2, 4 of 50 rows; none in 3, 5, 6, 7
    head = HeadSpec("imbnnpu", 0.2, seed=4)
    w_ref, b_ref, skipped = reference_train(X, s, head, epochs=3, batch_size=50, lr=1e-2)
    result = train_heads(X, s, [head], epochs=3, batch_size=50, lr=1e-2, shuffle=False)
    assert skipped == 3 * 4
    assert result.skipped_batches[0] == skipped and result.steps[0] == 3 * 8 - skipped
    np.testing.assert_allclose(result.W[:, 0], w_ref, atol=2e-6)
    assert result.b[0] == pytest.approx(b_ref, abs=2e-6)


@KERNELS
def test_k_heads_together_equal_each_head_trained_alone(kernel: str, monkeypatch) -> None:
    # heads whose step counts differ take the masked Adam update; make the lone runs take it too
    monkeypatch.setattr(trainer_module, "USE_FUSED_ADAM", False)
    X, s, y = pu_data(n=500)
    rng = np.random.default_rng(5)
    s2 = ((y == 1) & (rng.random(len(y)) < 0.1)).astype(np.int64)  # a sparser second label set
    labels = np.stack([s, s2, y], axis=1)
    heads = [
        HeadSpec("imbnnpu", 0.1, seed=0, column=0),
        HeadSpec("imbnnpu", 0.3, seed=1, column=1),
        HeadSpec("nnpu", 0.5, seed=2, column=0, gamma=0.5),
        HeadSpec("upu", 0.2, seed=3, column=1),
        HeadSpec("bce", seed=4, column=0),
        HeadSpec("wbce", seed=5, column=1),
        HeadSpec("pn", seed=6, column=2),
    ]
    kw = {"epochs": 4, "batch_size": 32, "lr": 1e-2, "shuffle_seed": 11, "kernel": kernel}
    together = train_heads(X, labels, heads, **kw)
    assert together.skipped_batches[1] > 0  # the sparse label set leaves batches without P
    for k, head in enumerate(heads):
        alone = train_heads(X, labels, [head], **kw)
        if kernel == "fused":  # each (row, head) dot product is computed alone: bit for bit
            np.testing.assert_array_equal(alone.W[:, 0], together.W[:, k], err_msg=head.loss)
            assert alone.b[0] == together.b[k]
        else:  # MKL's blocking depends on K: equal to float32 rounding
            np.testing.assert_allclose(alone.W[:, 0], together.W[:, k], atol=1e-5, err_msg=head.loss)
            assert alone.b[0] == pytest.approx(together.b[k], abs=1e-5)
        assert alone.skipped_batches[0] == together.skipped_batches[k]
    # different shuffle seeds give different weights (the order really is shuffled)
    other = train_heads(X, labels, heads[:1], **{**kw, "shuffle_seed": 12})
    assert np.abs(other.W[:, 0] - together.W[:, 0]).max() > 1e-4


def test_epoch_order_is_a_fresh_permutation_each_epoch() -> None:
    gen = TorchStream(0)
    first, sizes = _epoch_order(1000, 256, gen, None)
    second, _ = _epoch_order(1000, 256, gen, None)
    assert sizes == [256, 256, 256, 232]
    assert sorted(first.tolist()) == list(range(1000)) and sorted(second.tolist()) == list(range(1000))
    assert not np.array_equal(first, second)
    # the orders torch.randperm draws from a generator seeded the same way
    torch_gen = torch.Generator().manual_seed(0)
    assert np.array_equal(first, torch.randperm(1000, generator=torch_gen).numpy())
    assert np.array_equal(second, torch.randperm(1000, generator=torch_gen).numpy())


def test_stratified_batches_each_hold_their_share_of_positives() -> None:
    strata = np.zeros(1000, dtype=bool)
    strata[np.random.default_rng(0).choice(1000, 30, replace=False)] = True
    order, sizes = _epoch_order(1000, 256, TorchStream(0), strata)
    assert sorted(order.tolist()) == list(range(1000))  # every row once
    assert len(sizes) == 4 and sum(sizes) == 1000
    counts = [int(strata[b].sum()) for b in np.split(order, np.cumsum(sizes)[:-1])]
    assert counts == [8, 8, 7, 7]
    # fewer positives than batches: positives are drawn again so that every batch has one
    few = np.zeros(1000, dtype=bool)
    few[[3, 500]] = True
    order, sizes = _epoch_order(1000, 100, TorchStream(0), few)
    assert [int(few[b].sum()) for b in np.split(order, np.cumsum(sizes)[:-1])] == [1] * 10


def test_stratified_training_never_skips() -> None:
    X, s, _ = pu_data(n=400)
    s[:] = 0
    s[[5, 70, 150]] = 1
    plain = train_heads(X, s, [HeadSpec("nnpu", 0.2)], epochs=2, batch_size=40)
    strat = train_heads(X, s, [HeadSpec("nnpu", 0.2)], epochs=2, batch_size=40, stratified=True)
    assert plain.skipped_batches[0] > 0
    assert strat.skipped_batches[0] == 0 and strat.steps[0] == 2 * 10


def test_history_records_test_metrics_per_epoch() -> None:
    X, s, _ = pu_data()
    Xt, _, yt = pu_data(seed=1)
    result = train_heads(
        X, s, [HeadSpec("imbnnpu", 0.2), HeadSpec("bce")], epochs=4, batch_size=64, lr=1e-2,
        X_test=Xt, y_test=yt, eval_every=2, track_loss=True,
    )  # fmt: skip
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4]  # train loss every epoch, test every 2nd
    assert "auc" not in result.history[0] and "auc" in result.history[1]
    scores = result.decision_function(Xt)
    last = result.history[-1]
    for k in range(2):
        assert last["auc"][k] == pytest.approx(roc_auc_score(yt, scores[:, k]))
        assert last["f1"][k] == pytest.approx(f1_score(yt, scores[:, k] > 0))
    assert np.all(np.isfinite(last["train_loss"])) and np.all(np.isfinite(last["test_loss"]))


@pytest.mark.parametrize(
    "order", [{}, {"shuffle": False}, {"stratified": True}], ids=["shuffled", "in-order", "stratified"]
)
@KERNELS
def test_float16_features_train_exactly_like_their_float32_values(order: dict, kernel: str) -> None:
    """Float16 features stay float16 in memory and are widened per batch: the same arithmetic."""
    X, s, _ = pu_data(d=300)  # wide enough for vectorised loops and a partial column block
    X16 = X.astype(np.float16)
    heads = [HeadSpec("imbnnpu", 0.2), HeadSpec("nnpu", 0.25, seed=3), HeadSpec("bce", seed=1)]
    order = {**order, "kernel": kernel}
    a = train_heads(X16, s, heads, epochs=2, batch_size=64, **order)
    b = train_heads(X16.astype(np.float32), s, heads, epochs=2, batch_size=64, **order)
    assert (a.config["feature_dtype"], b.config["feature_dtype"]) == ("float16", "float32")
    np.testing.assert_array_equal(a.W, b.W)
    np.testing.assert_array_equal(a.b, b.b)
    # forcing float16 on float32 input rounds the features once, then trains on those values
    c = train_heads(X, s, heads, epochs=2, batch_size=64, feature_dtype="float16", **order)
    np.testing.assert_array_equal(c.W, a.W)


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
@pytest.mark.parametrize(
    "order", [{}, {"shuffle": False}, {"stratified": True}], ids=["shuffled", "in-order", "stratified"]
)
def test_prefetching_batches_on_a_second_thread_changes_nothing(dtype, order: dict) -> None:
    X, s, _ = pu_data(n=700)
    heads = [HeadSpec("imbnnpu", 0.2), HeadSpec("wbce", seed=2)]
    runs = [
        train_heads(X.astype(dtype), s, heads, epochs=3, batch_size=64, prefetch=on, kernel="torch", **order)
        for on in (True, False)
    ]
    assert [r.config["prefetch"] for r in runs] == [True, False]
    np.testing.assert_array_equal(runs[0].W, runs[1].W)
    np.testing.assert_array_equal(runs[0].b, runs[1].b)


@pytest.mark.parametrize(
    "order", [{}, {"shuffle": False}, {"stratified": True}], ids=["shuffled", "in-order", "stratified"]
)
def test_fused_kernel_weights_do_not_depend_on_the_thread_count(order: dict) -> None:
    X, s, _ = pu_data(n=700, d=300)
    heads = [HeadSpec("imbnnpu", 0.2), HeadSpec("nnpu", 0.3, seed=1), HeadSpec("wbce", seed=2)]
    runs = [
        train_heads(X.astype(np.float16), s, heads, epochs=3, batch_size=64, threads=n, **order)
        for n in (1, 2, 3)
    ]
    assert [r.config["threads"] for r in runs] == [1, 2, 3] or trainer_module.available_cpus() < 3
    for run in runs[1:]:
        np.testing.assert_array_equal(run.W, runs[0].W)
        np.testing.assert_array_equal(run.b, runs[0].b)


def test_fused_trainers_in_two_python_threads_give_their_sequential_weights() -> None:
    from concurrent.futures import ThreadPoolExecutor

    X, s, _ = pu_data(n=600, d=200)
    jobs = [([HeadSpec("imbnnpu", 0.2, seed=k)], {"shuffle_seed": k, "threads": 2}) for k in range(4)]
    alone = [train_heads(X, s, heads, epochs=3, batch_size=64, **kw) for heads, kw in jobs]
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(train_heads, X, s, h, epochs=3, batch_size=64, **kw) for h, kw in jobs]
        together = [f.result() for f in futures]
    for a, b in zip(alone, together, strict=True):
        np.testing.assert_array_equal(a.W, b.W)
        np.testing.assert_array_equal(a.b, b.b)


def test_fused_and_torch_kernels_agree_to_float_rounding() -> None:
    X, s, _ = pu_data(n=900, d=520)
    heads = [HeadSpec("imbnnpu", 0.2), HeadSpec("nnpu", 0.9, seed=1), HeadSpec("bce", seed=2)]
    kw = {"epochs": 5, "batch_size": 100, "lr": 1e-2, "stratified": True, "track_loss": True}
    fused = train_heads(X.astype(np.float16), s, heads, kernel="fused", **kw)
    torch_kernel = train_heads(X.astype(np.float16), s, heads, kernel="torch", **kw)
    assert (fused.config["kernel"], torch_kernel.config["kernel"]) == ("fused", "torch")
    assert not np.array_equal(fused.W, torch_kernel.W)  # two different summation orders ...
    np.testing.assert_allclose(fused.W, torch_kernel.W, atol=2e-5)  # ... the same training
    np.testing.assert_allclose(fused.b, torch_kernel.b, atol=2e-5)
    for a, b in zip(fused.history, torch_kernel.history, strict=True):  # the objective at every step
        np.testing.assert_allclose(a["train_loss"], b["train_loss"], rtol=1e-5)
    assert fused.history[-1]["train_loss"][0] < fused.history[0]["train_loss"][0]


def test_fused_kernel_steps_only_heads_with_p_and_u_in_the_batch() -> None:
    """A batch without a labeled positive for one label set: that head skips it, the others step."""
    X, s, _ = pu_data(n=400, d=40)
    sparse = np.zeros_like(s)
    sparse[[5, 70, 150, 290, 295]] = 1  # no labeled positive in 4 of the 8 in-order batches of 50
    labels = np.stack([sparse, s], axis=1)
    heads = [HeadSpec("imbnnpu", 0.2, column=0), HeadSpec("nnpu", 0.2, seed=1, column=1)]
    kw = {"epochs": 3, "batch_size": 50, "lr": 1e-2, "shuffle": False}
    fused = train_heads(X, labels, heads, kernel="fused", **kw)
    torch_kernel = train_heads(X, labels, heads, kernel="torch", **kw)
    assert fused.skipped_batches.tolist() == torch_kernel.skipped_batches.tolist()
    assert fused.skipped_batches[0] == 12 and fused.skipped_batches[1] < 12
    assert fused.steps.tolist() == (24 - fused.skipped_batches).tolist()
    w_ref, b_ref, skipped = reference_train(X, sparse, heads[0], epochs=3, batch_size=50, lr=1e-2)
    assert skipped == 12
    np.testing.assert_allclose(fused.W[:, 0], w_ref, atol=2e-6)
    assert fused.b[0] == pytest.approx(b_ref, abs=2e-6)
    np.testing.assert_allclose(fused.W, torch_kernel.W, atol=2e-5)


def relative_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per head (column): max |a − b| over the head's weights and bias, relative to max |b|."""
    return np.abs(a - b).max(axis=0) / np.abs(b).max(axis=0)


@pytest.mark.parametrize("kernel", ["fused", "wide"])
def test_heads_in_a_wide_group_are_within_1e6_of_each_head_trained_alone(kernel: str) -> None:
    """Eleven heads (two register tiles and three left over), both nnPU branches, both surrogates, a label set that leaves
    batches without a labeled positive, a batch size and feature count that are not multiples of 4."""
    X, s, y = pu_data(n=640, d=301)
    rng = np.random.default_rng(5)
    sparse = ((y == 1) & (rng.random(len(y)) < 0.06)).astype(np.int64)
    labels = np.stack([s, sparse, y], axis=1)
    heads = [
        HeadSpec("imbnnpu", 0.1, seed=0, column=0),
        HeadSpec("imbnnpu", 0.3, seed=1, column=1),
        HeadSpec("nnpu", 0.9, seed=2, column=0),  # a too-large prior: the correction branch fires
        HeadSpec("nnpu", 0.25, seed=3, column=1, gamma=0.5),
        HeadSpec("upu", 0.2, seed=4, column=0),
        HeadSpec("bce", seed=5, column=0),
        HeadSpec("wbce", seed=6, column=1),
        HeadSpec("pn", seed=7, column=2),
        HeadSpec("imbnnpu", 0.2, seed=8, column=1),
        HeadSpec("nnpu", 0.9, seed=9, column=0, surrogate="logistic"),
        HeadSpec("imbnnpu", 0.2, seed=10, column=1, surrogate="logistic"),
    ]
    kw = {"epochs": 4, "batch_size": 61, "lr": 1e-2, "shuffle_seed": 11}
    together = train_heads(X.astype(np.float16), labels, heads, kernel=kernel, **kw)
    assert together.config["kernel"] == kernel
    assert together.skipped_batches[1] > 0  # the sparse label set leaves batches without P
    alone_W, alone_b = np.empty_like(together.W), np.empty_like(together.b)
    stats: dict = {}
    for k, head in enumerate(heads):
        alone = train_heads(X.astype(np.float16), labels, [head], **kw)  # auto: the fused kernel
        assert alone.config["kernel"] == "fused"
        alone_W[:, k], alone_b[k] = alone.W[:, 0], alone.b[0]
        assert alone.skipped_batches[0] == together.skipped_batches[k]
        assert alone.steps[0] == together.steps[k]
    reference_train(
        X.astype(np.float16).astype(np.float32), s, heads[2], epochs=4, batch_size=61, lr=1e-2,
        stats=stats, shuffle_seed=11,
    )  # fmt: skip
    assert stats["corrected"] > 0  # the nnPU head did take the correction branch
    rel = relative_difference(np.vstack([together.W, together.b]), np.vstack([alone_W, alone_b]))
    assert rel.max() <= 1e-6, rel
    if kernel == "wide":  # a different summation order: equal to rounding, not bit for bit
        assert rel.max() > 0


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_wide_kernel_weights_do_not_depend_on_the_thread_count(dtype) -> None:
    X, s, _ = pu_data(n=500, d=200)
    heads = [HeadSpec("imbnnpu", 0.1 + 0.05 * k, seed=k) for k in range(6)]
    runs = [
        train_heads(X.astype(dtype), s, heads, epochs=2, batch_size=64, threads=n, kernel="wide")
        for n in (1, 2)
    ]
    np.testing.assert_array_equal(runs[0].W, runs[1].W)
    np.testing.assert_array_equal(runs[0].b, runs[1].b)


def test_auto_kernel_is_fused_for_few_heads_on_the_cpu() -> None:
    X, s, _ = pu_data(n=100)
    few = [HeadSpec("imbnnpu", 0.2, seed=k) for k in range(kernels_module.FUSED_MAX_HEADS)]
    fused = train_heads(X, s, few, epochs=1)
    assert fused.config["kernel"] == "fused"
    assert fused.config["threads"] == 1  # 12 features: one column block, one thread
    wide, _, _ = pu_data(n=100, d=3 * 256)
    threads = train_heads(wide, s, few[:1], epochs=1).config["threads"]
    assert threads == min(3, trainer_module.available_cpus())  # one thread per block, at most the cores
    many = [*few, HeadSpec("bce")]
    assert train_heads(X, s, many, epochs=1).config["kernel"] == "wide"
    with pytest.raises(ImpulsesError, match="kernel must be one of"):
        train_heads(X, s, few, epochs=1, kernel="cuda")
    with pytest.raises(ParameterError, match="kernel fused runs on the CPU, not cuda") as info:
        kernels_module.check_kernel("fused", torch.device("cuda"))  # refused before any work
    assert info.value.params == ("kernel",)


def test_without_numba_auto_falls_back_to_the_torch_kernel(monkeypatch) -> None:
    import impulses.pu.kernels as kernels

    monkeypatch.setattr(kernels, "AVAILABLE", False)
    X, s, _ = pu_data(n=100)
    assert train_heads(X, s, [HeadSpec("imbnnpu", 0.2)], epochs=1).config["kernel"] == "torch"
    many = [HeadSpec("imbnnpu", 0.2, seed=k) for k in range(kernels_module.FUSED_MAX_HEADS + 1)]
    assert train_heads(X, s, many, epochs=1).config["kernel"] == "torch"
    with pytest.raises(ImpulsesError, match="needs numba"):
        train_heads(X, s, [HeadSpec("imbnnpu", 0.2)], epochs=1, kernel="fused")


def test_feature_dtype_is_checked() -> None:
    X, s, _ = pu_data(n=50)
    with pytest.raises(ImpulsesError, match="feature_dtype must be one of"):
        train_heads(X, s, [HeadSpec("bce")], epochs=1, feature_dtype="int8")
    with pytest.raises(ImpulsesError, match="bfloat16 is for CUDA"):
        train_heads(X, s, [HeadSpec("bce")], epochs=1, feature_dtype="bfloat16")


@pytest.mark.parametrize(
    ("heads", "labels", "match"),
    [
        ([HeadSpec("imbnnpu", 1.2)], None, "not in"),
        ([HeadSpec("nnpu", None)], None, "prior is required"),
        ([HeadSpec("imbnnpu", 0.2)], "zeros", "no labeled positive"),
        ([HeadSpec("imbnnpu", 0.2)], "twos", "must be 0 or 1"),
        ([HeadSpec("hinge")], None, "unknown loss"),
        ([HeadSpec("bce", column=3)], None, "column 3"),
        ([], None, "no heads"),
    ],
)
def test_bad_input_is_an_impulses_error(heads, labels, match: str) -> None:
    X, s, _ = pu_data(n=50)
    if labels == "zeros":
        s = np.zeros_like(s)
    elif labels == "twos":
        s = s * 2
    with pytest.raises(ImpulsesError, match=match):
        train_heads(X, s, heads, epochs=1)


def test_head_grid_deduplicates_prior_free_losses() -> None:
    grid = head_grid(["imbnnpu", "bce", "pn"], [0.1, 0.2], [0.5, 1.0], [0, 1], ["s_0", "s_1"])
    pu = [g for g in grid if g.spec.loss == "imbnnpu"]
    assert len(pu) == 2 * 2 * 2 * 2  # priors x distortions x seeds x label sets
    assert len([g for g in grid if g.spec.loss == "bce"]) == 2 * 2  # seeds x label sets
    pn = [g for g in grid if g.spec.loss == "pn"]
    assert len(pn) == 2 and {g.label_set for g in pn} == {"y"} and {g.spec.column for g in pn} == {2}
    assert {g.spec.prior for g in pu} == {0.05, 0.1, 0.2}
    assert len({g.spec.name for g in grid}) == len(grid)
    with pytest.raises(ParameterError, match=r"10 x prior 0.2 = 2, not in") as info:
        head_grid(["nnpu"], [0.2], [10.0], [0], ["s"])
    assert info.value.params == ("distortions", "priors")
    with pytest.raises(ImpulsesError, match="needs a prior"):
        head_grid(["nnpu"], [], [1.0], [0], ["s"])


def test_heads_file_round_trip(tmp_path) -> None:
    X, s, _ = pu_data(n=100)
    result = train_heads(X, s, [HeadSpec("bce", name="b0"), HeadSpec("imbnnpu", 0.2, name="i0")], epochs=1)
    path = save_heads(tmp_path / "h" / "heads.pt", result, store_dim=12)
    loaded = load_heads(path)
    np.testing.assert_array_equal(loaded.W, result.W)
    np.testing.assert_array_equal(loaded.decision_function(X), result.decision_function(X))
    assert loaded.heads == result.heads and loaded.names == ["b0", "i0"]
    assert loaded.meta == {"store_dim": 12} and loaded.config == result.config
    assert loaded.skipped_batches.tolist() == result.skipped_batches.tolist()
    assert [p.name for p in path.parent.iterdir()] == ["heads.pt"]  # no temporary file left
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ImpulsesError, match="not a heads file"):
        load_heads(tmp_path / "junk.pt")
    with pytest.raises(ImpulsesError, match="no such heads file"):
        load_heads(tmp_path / "missing.pt")


def test_score_store_gives_one_logit_column_per_head(tmp_path) -> None:
    from impulses.embed.store import EmbeddingStore

    X, s, _ = pu_data(n=100)
    result = train_heads(X, s, [HeadSpec("bce", name="b0"), HeadSpec("imbnnpu", 0.2)], epochs=1)
    store = EmbeddingStore.write(tmp_path / "s.h5", X, [f"r{i}" for i in range(100)], dtype="float32")
    scores = result.score_store(store, batch_rows=30)
    assert scores.columns == ["id", "b0", "head1"] and scores["id"].to_list()[:2] == ["r0", "r1"]
    expected = X @ result.W + result.b
    np.testing.assert_allclose(scores.select("b0", "head1").to_numpy(), expected, rtol=1e-5, atol=1e-5)
    narrow = EmbeddingStore.write(tmp_path / "n.h5", X[:, :5], [f"r{i}" for i in range(100)])
    with pytest.raises(ParameterError, match="has dim 5, but the heads were trained on dim 12") as info:
        result.score_store(EmbeddingStore.open(narrow.path))
    assert info.value.params == ("store",)


class FakeStore:
    """A store as check_store sees it: dim, meta (root attributes) and path."""

    def __init__(self, dim: int, path: str, **meta: object) -> None:
        self.dim, self.path, self.meta = dim, path, meta


def test_check_store_refuses_another_encoder_or_transform_naming_both(tmp_path) -> None:
    X, s, _ = pu_data(n=100)
    result = train_heads(X, s, [HeadSpec("imbnnpu", 0.2)], epochs=1)
    transform = {"image_size": 8, "mean": [0.5]}
    train = FakeStore(12, "train.h5", encoder="smallcnn", encoder_sha256="a" * 64, transform=transform)
    result.meta["store_encoder"] = store_encoder(train)
    assert result.meta["store_encoder"] == {
        "encoder": "smallcnn",
        "encoder_sha256": "a" * 64,
        "transform": transform,
    }
    result.check_store(
        FakeStore(12, "same.h5", encoder="smallcnn", encoder_sha256="a" * 64, transform=dict(transform))
    )
    other = FakeStore(12, "other.h5", encoder="resnet18", encoder_sha256="b" * 64, transform=transform)
    with pytest.raises(ParameterError, match=r"^allow_other_encoder is needed to score other.h5: it was embedded "
                       r"by resnet18 \(weights sha256 bbbbbbbbbbbb\), but the heads were trained on a store "
                       r"embedded by smallcnn \(weights sha256 aaaaaaaaaaaa\)") as info:  # fmt: skip
        result.check_store(other)
    assert info.value.params == ("allow_other_encoder",)
    result.check_store(other, allow_other_encoder=True)
    resized = FakeStore(
        12, "big.h5", encoder="smallcnn", encoder_sha256="a" * 64, transform={"image_size": 32}
    )
    with pytest.raises(ParameterError, match=r'transform {"image_size": 32}.*transform {"image_size": 8'):
        result.check_store(resized)
    with pytest.raises(ParameterError, match="has dim 5, but the heads were trained on dim 12"):
        result.check_store(FakeStore(5, "n.h5"), allow_other_encoder=True)
    # the record and a calibration are saved with the heads
    result.calibrate(X, s)
    loaded = load_heads(save_heads(tmp_path / "heads.pt", result))
    assert loaded.meta["store_encoder"] == result.meta["store_encoder"]
    assert loaded.meta["calibration"] == result.meta["calibration"]
    with pytest.raises(ParameterError, match="allow_other_encoder is needed"):
        loaded.check_store(other)
    del loaded.meta["store_encoder"]  # heads saved before the record: the dimension alone is checked
    loaded.check_store(other)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu() -> None:
    X, s, _ = pu_data()
    heads = [HeadSpec("imbnnpu", 0.2, seed=0), HeadSpec("bce", seed=1)]
    cpu = train_heads(X, s, heads, epochs=3, batch_size=64)
    gpu = train_heads(X, s, heads, epochs=3, batch_size=64, device="cuda")
    np.testing.assert_allclose(gpu.W, cpu.W, atol=1e-4)
    bf16 = train_heads(X, s, heads, epochs=3, batch_size=64, device="cuda", feature_dtype="bfloat16")
    assert np.all(np.isfinite(bf16.W))


@pytest.mark.parametrize(
    ("env", "others", "expected"),
    [
        ({}, 1, "PASSIVE"),  # other work runs: sleep at barriers (a spin waits for a descheduled thread)
        ({}, None, "PASSIVE"),  # no way to tell: the safe choice
        ({}, 0, None),  # idle machine: OpenMP's bounded spin (2x faster for one head)
        ({"OMP_WAIT_POLICY": "ACTIVE"}, 3, "ACTIVE"),  # the user's choice stands
        ({"GOMP_SPINCOUNT": "1000"}, 3, None),
    ],
)
def test_kernel_threads_sleep_at_barriers_when_other_work_runs(monkeypatch, env, others, expected) -> None:
    for key in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(kernels_module, "_others_running", lambda: others)
    kernels_module._choose_wait_policy()
    assert os.environ.get("OMP_WAIT_POLICY") == expected


@pytest.mark.skipif(not Path("/proc/loadavg").exists(), reason="reads Linux's /proc/loadavg")
def test_other_runnable_work_is_seen() -> None:
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        assert kernels_module._others_running() >= 1
    finally:
        busy.kill()
        busy.wait()


def test_flushing_denormals_sets_and_restores_this_threads_mode() -> None:
    tiny = np.array([1e-39], dtype=np.float32)  # a subnormal float32
    before = kernels_module.flush_denormals(True)
    if before is None:
        pytest.skip("flushes only on x86-64 with numba")
    try:
        assert (tiny * np.float32(1.5))[0] == 0.0  # flushed
    finally:
        kernels_module.flush_denormals(before)
    assert (tiny * np.float32(1.5))[0] > 0.0
    assert kernels_module.flush_denormals(False) is False  # it was off again


def test_heads_files_hold_what_only_torch_save_writes(tmp_path) -> None:
    X, s, _ = pu_data(n=200)
    result = train_heads(X, s, [HeadSpec("imbnnpu", 0.2)], epochs=1)
    save_heads(tmp_path / "plain.pt", result, note="plain")
    save_heads(tmp_path / "odd.pt", result, note=1 + 2j)  # complex: written by torch.save
    assert load_heads(tmp_path / "plain.pt").meta["note"] == "plain"
    odd = torch.load(tmp_path / "odd.pt", weights_only=False)
    assert odd["note"] == 1 + 2j and np.array_equal(odd["W"].numpy(), result.W)


def test_labels_may_be_lists_arrays_or_tensors() -> None:
    X, s, _ = pu_data(n=200)
    head = [HeadSpec("nnpu", 0.2)]
    from_array = train_heads(X, s, head, epochs=1)
    for labels in (s.tolist(), torch.from_numpy(np.asarray(s))):
        np.testing.assert_array_equal(train_heads(X, labels, head, epochs=1).W, from_array.W)
