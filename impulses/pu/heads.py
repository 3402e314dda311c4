"""Batched linear heads: K independent D→1 classifiers trained in ONE pass over a feature matrix.

Each batch of rows is gathered once and multiplied by one (D+1)×K parameter matrix (weights and
bias); every head has its own loss, prior, initialisation seed and label column. Heads never
interact: head k's weights are those a run training head k alone would give, with the same seed and
batch order (to float rounding), because all heads see one shared batch order per epoch (drawn from
``shuffle_seed``) and Adam runs per head.

Speed matters (a sweep of dozens of heads should feel instant), so the hot loop avoids autograd:
the loss gradient w.r.t. the logits is closed-form (:class:`impulses.pu.losses.FusedObjective`)
and everything that depends only on the labels (counts, validity, loss coefficients, Adam step
counts) is computed once per epoch. A CPU step is then one of two kernels. The **fused** kernel
(:mod:`impulses.pu.kernels`, numba; default for up to ``FUSED_MAX_HEADS`` heads) runs a whole
epoch in compiled code on all cores: it reads each shuffled row where it lies in X, widens float16
in registers, and does the logits, the gradient and Adam without a gathered copy or a Python
step; its weights do not depend on the thread count or on the other heads, bit for bit. The
**wide** kernel (default above ``FUSED_MAX_HEADS`` heads) is the fused kernel's epoch with 4 rows x
4 heads register tiles, ~2.5x the arithmetic rate; a head's weights there equal those it gets alone
to float32 rounding (within 1e-6 relative, tested), independent of the thread count. The
**torch** kernel (many heads, CUDA) gathers each batch once into a preallocated, cache-sized
(B, D) float32 buffer, then one ``addmm``, one ``Xbᵀ @ G`` matmul and PyTorch's fused Adam on θ;
on a multi-core CPU the next batch is gathered on a second thread meanwhile. Features from a
float16 store stay float16 in memory in both: every float16 is a float32, so the arithmetic is
exactly that of float32 features, with half the memory and half the bytes read per epoch, which
is what bounds a step on a CPU.

**Batches without a labeled positive (or without an unlabeled row)** carry no PU information: a PU
head's objective there is 0, it takes no Adam step (its step counter does not advance) and the batch
is counted in ``HeadsResult.skipped_batches``. ``stratified=True`` arranges each epoch so that every
batch holds its share of labeled positives, which avoids such batches.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from impulses.errors import ImpulsesError
from impulses.pu.losses import FusedObjective, HeadLoss, check_prior, get_loss

ArrayLike = np.ndarray | torch.Tensor
SMALL_STEP_MACS = 1 << 23  # below this much work per step, one CPU thread beats several
# up to this many heads the fused kernel beats gather + MKL in every measurement on the 2-core CPU
# (benchmarks/bench_head_kernels.py, 33,000 x 2048 float16: 2.0-3.2x as fast with 1 head, 1.3-1.4x
# with 12, 0.9-1.1x with 16, 0.6x with 64)
FUSED_MAX_HEADS = 12
KERNELS = ("auto", "fused", "torch", "wide")
USE_FUSED_ADAM = True  # PyTorch's fused Adam kernel where all heads share a step count (tests turn it off)


@dataclass(frozen=True)
class HeadSpec:
    """One head: its loss and hyperparameters, the seed of its initialisation and its label column.

    ``column`` picks the column of a 2-D label matrix (default: column k for head k when the matrix
    has one column per head, else column 0). ``pos_weight`` (wbce, pn) defaults to |U|/|P| (pn:
    |N|/|P|) of the head's label column over the whole training set. ``name`` is a free label carried
    into results.
    """

    loss: str = "imbnnpu"
    prior: float | None = None
    seed: int = 0
    column: int | None = None
    prior_prime: float = 0.5
    beta: float = 0.0
    gamma: float = 1.0
    pos_weight: float | None = None
    name: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class HeadsResult:
    """Trained heads: ``W`` (D, K), ``b`` (K,), the specs, per-head step/skip counts and the history.

    ``history`` holds one dict per evaluated epoch: ``epoch`` (1-based), ``train_loss`` (K,) (the mean
    objective over the batches where the head stepped, when tracked), and with a test set ``auc``,
    ``f1``, ``accuracy`` (K,) at the decision threshold logit 0, and ``test_loss`` (K,) (the head's
    objective on the test set with the true labels in place of s, as the reference code logs it).
    """

    W: np.ndarray
    b: np.ndarray
    heads: list[HeadSpec]
    steps: np.ndarray
    skipped_batches: np.ndarray
    batches_per_epoch: int
    epochs: int
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)

    def decision_function(self, X: ArrayLike, batch_rows: int = 65536) -> np.ndarray:
        """Logits (N, K) of every head; predictions are ``logits > 0``."""
        W = torch.from_numpy(self.W)
        b = torch.from_numpy(self.b)
        out = np.empty((len(X), self.W.shape[1]), dtype=np.float32)
        for start in range(0, len(X), batch_rows):
            block = torch.as_tensor(np.asarray(X[start : start + batch_rows]), dtype=torch.float32)
            out[start : start + len(block)] = torch.addmm(b, block, W).numpy()
        return out


def linear_init(dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """torch.nn.Linear(dim, 1)'s default initialisation, drawn from a generator seeded with ``seed``.

    Weights then bias ~ U(−1/√dim, 1/√dim), in the order ``torch.manual_seed(seed); nn.Linear(dim, 1)``
    draws them, so a head matches a reference model built that way.
    """
    gen = torch.Generator().manual_seed(int(seed))
    bound = 1.0 / math.sqrt(dim) if dim > 0 else 0.0
    w = torch.empty(dim).uniform_(-bound, bound, generator=gen)
    b = torch.empty(1).uniform_(-bound, bound, generator=gen)
    return w, b


# ---------------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------------
def _label_matrix(s: ArrayLike, heads: Sequence[HeadSpec], n: int) -> tuple[np.ndarray, list[int]]:
    """Labels as (N, C) float32 and each head's column index, validated."""
    lab = s.detach().cpu().numpy() if isinstance(s, torch.Tensor) else np.asarray(s)
    if lab.ndim == 1:
        lab = lab[:, None]
    if lab.ndim != 2 or lab.shape[0] != n:
        raise ImpulsesError(f"labels must have shape ({n},) or ({n}, C), got {lab.shape}")
    if not np.isin(lab, (0, 1)).all():
        bad = np.argwhere(~np.isin(lab, (0, 1)))[0]
        raise ImpulsesError(f"labels must be 0 or 1; row {bad[0]} holds {lab[tuple(bad)]!r}")
    c = lab.shape[1]
    columns = []
    for k, head in enumerate(heads):
        col = head.column if head.column is not None else (k if c == len(heads) else 0)
        if not 0 <= col < c:
            raise ImpulsesError(
                f"head {k} ({head.name or head.loss}): label column {col} does not exist ({c} columns)"
            )
        columns.append(col)
    return lab.astype(np.float32, copy=False), columns


def _check_heads(heads: Sequence[HeadSpec], lab: np.ndarray, columns: list[int]) -> list[HeadLoss]:
    """Validate every head against its label column and resolve wbce's default positive weight."""
    if not heads:
        raise ImpulsesError("no heads to train")
    losses = []
    for k, (head, col) in enumerate(zip(heads, columns, strict=True)):
        spec = get_loss(head.loss)
        what = f"head {k} ({head.name or head.loss})"
        n_p = int(lab[:, col].sum())
        n_u = lab.shape[0] - n_p
        pos_weight = head.pos_weight
        if spec.uses_prior:
            check_prior(head.prior, f"{what}: prior")
            if head.loss == "imbnnpu":
                check_prior(head.prior_prime, f"{what}: prior_prime")
            if n_p == 0:
                raise ImpulsesError(f"{what}: the label column has no labeled positive (s = 1)")
            if n_u == 0:
                raise ImpulsesError(f"{what}: the label column has no unlabeled row (s = 0)")
        elif spec.name in ("wbce", "pn") and pos_weight is None:
            if n_p == 0:
                raise ImpulsesError(
                    f"{what}: {spec.name} needs a positive label to weight (|U|/|P| or |N|/|P|)"
                )
            pos_weight = n_u / n_p
        if head.beta < 0 or head.gamma < 0:
            raise ImpulsesError(f"{what}: beta and gamma must be >= 0")
        prior = float(head.prior) if spec.uses_prior else None
        losses.append(
            HeadLoss(
                spec.name,
                prior,
                float(head.prior_prime),
                float(head.beta),
                float(head.gamma),
                None if pos_weight is None else float(pos_weight),
            )
        )
    return losses


FEATURE_DTYPES = ("auto", "float32", "float16", "bfloat16")


def available_cpus() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def resolve_feature_dtype(X: ArrayLike, feature_dtype: str, device: torch.device) -> str:
    """The dtype features are held in: ``auto`` → float16 for float16 input, else float32."""
    if feature_dtype not in FEATURE_DTYPES:
        raise ImpulsesError(
            f"feature_dtype must be one of {', '.join(FEATURE_DTYPES)}, got {feature_dtype!r}"
        )
    if feature_dtype == "bfloat16" and device.type != "cuda":
        raise ImpulsesError("feature_dtype bfloat16 is for CUDA devices; use float16 or float32 on CPU")
    if feature_dtype == "auto":
        return "float16" if str(X.dtype) in ("float16", "torch.float16") else "float32"
    return feature_dtype


def check_kernel(kernel: str, device: torch.device, what: str = "kernel") -> None:
    """An :class:`ImpulsesError` naming ``what`` (the CLI says ``--kernel``) unless ``kernel`` can run."""
    if kernel not in KERNELS:
        raise ImpulsesError(f"{what} must be one of {', '.join(KERNELS)}, got {kernel!r}")
    if kernel not in ("fused", "wide"):
        return
    if device.type != "cpu":
        raise ImpulsesError(f"{what} {kernel} runs on the CPU, not {device}: use the torch kernel or the CPU")
    from impulses.pu.kernels import AVAILABLE

    if not AVAILABLE:
        raise ImpulsesError(f"{what} {kernel} needs numba (pip install numba)")


def resolve_kernel(kernel: str, device: torch.device, n_heads: int) -> str:
    """The step kernel a run uses: ``auto`` → on a CPU with numba, fused for up to FUSED_MAX_HEADS heads
    and wide for more; torch otherwise."""
    check_kernel(kernel, device)
    if kernel == "auto":
        from impulses.pu.kernels import AVAILABLE

        if device.type != "cpu" or not AVAILABLE:
            return "torch"
        return "fused" if n_heads <= FUSED_MAX_HEADS else "wide"
    return kernel


def _features(X: ArrayLike, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """X (N, D) on ``device`` in ``dtype``, without a copy when it already is (float32 numpy on CPU)."""
    src = X if isinstance(X, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(X))
    return src.to(device=device, dtype=dtype).contiguous()


# ---------------------------------------------------------------------------------------------
# batch order
# ---------------------------------------------------------------------------------------------
def _epoch_order(
    n: int, batch_size: int, gen: torch.Generator | None, strata: np.ndarray | None
) -> tuple[torch.Tensor, list[int]]:
    """Row order of one epoch and its batch sizes.

    Plain: a permutation (``gen``) or the identity, cut into batches of ``batch_size`` (the last one
    smaller). Stratified: ceil(N/B) batches; the epoch's labeled positives and unlabeled rows are each
    permuted and dealt out as evenly as possible over the batches (each batch gets ⌊|P|/nb⌋ or
    ⌈|P|/nb⌉ positives); with fewer positives than batches, positives are drawn again (cycled
    permutations) so every batch holds one.
    """
    if strata is None:
        order = torch.randperm(n, generator=gen) if gen is not None else torch.arange(n)
        sizes = [batch_size] * (n // batch_size) + ([n % batch_size] if n % batch_size else [])
        return order, sizes
    nb = max(1, math.ceil(n / batch_size))
    pos = torch.from_numpy(np.flatnonzero(strata))
    unl = torch.from_numpy(np.flatnonzero(~strata))

    def perm(idx: torch.Tensor) -> torch.Tensor:
        return idx[torch.randperm(len(idx), generator=gen)] if gen is not None else idx

    pos_order = perm(pos)
    while 0 < len(pos_order) < nb:
        pos_order = torch.cat([pos_order, perm(pos)])
    pos_order = pos_order[: max(nb, len(pos))]
    unl_order = perm(unl)

    def deal(m: int) -> torch.Tensor:  # batch id of each of m items dealt like np.array_split
        base, extra = divmod(m, nb)
        counts = torch.full((nb,), base, dtype=torch.long)
        counts[:extra] += 1
        return torch.repeat_interleave(torch.arange(nb), counts)

    batch_of = torch.cat([deal(len(pos_order)), deal(len(unl_order))])
    rank = torch.argsort(batch_of, stable=True)
    order = torch.cat([pos_order, unl_order])[rank]
    sizes = torch.bincount(batch_of, minlength=nb).tolist()
    sizes = [size for size in sizes if size > 0]
    return order, sizes


# ---------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------
def train_heads(
    X: ArrayLike,
    s: ArrayLike,
    heads: Sequence[HeadSpec],
    *,
    epochs: int = 100,
    batch_size: int = 256,
    lr: float = 3e-4,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    shuffle: bool = True,
    shuffle_seed: int = 0,
    stratified: bool = False,
    device: str | torch.device = "cpu",
    feature_dtype: str = "auto",
    X_test: ArrayLike | None = None,
    y_test: ArrayLike | None = None,
    eval_every: int = 0,
    track_loss: bool = False,
    threads: int | None = None,
    prefetch: bool | None = None,
    kernel: str = "auto",
    on_epoch: Callable[[int, int], None] | None = None,
) -> HeadsResult:
    """Train K linear heads on features ``X`` (N, D) and labels ``s`` (N,) or (N, C) in one pass per epoch.

    Defaults are the paper's (Adam lr 3e-4, batch 256, 100 epochs, reshuffled every epoch); Adam is
    torch.optim.Adam's update, per head. ``X`` may be float16 or float32 (numpy or torch); the
    arithmetic is float32. ``feature_dtype`` says how X is held on ``device``: ``"auto"`` keeps
    float16 features as float16 (lossless, half the memory and bytes read) and holds anything else
    as float32; ``"float32"``/``"float16"`` force one (float16 rounds float32 input);
    ``"bfloat16"`` (CUDA only) rounds to bfloat16 to halve memory. ``shuffle=False`` keeps the row
    order (the reference code's loader). With ``X_test``/``y_test`` and ``eval_every=n``, every
    n-th epoch (and the last) records test AUC/F1/accuracy/objective per head in ``history``;
    ``track_loss`` records the mean training objective. ``on_epoch(done, total)`` is called after
    each epoch (progress bars).

    ``kernel`` picks how a CPU step reads its batch. ``"fused"``: numba kernels read the shuffled rows
    where they lie and multiply them with every head's weights on the way (no gathered copy, float16
    widened in registers), on ``threads`` cores (default: the cores this process may use, at most
    one per 256 feature columns); the weights are
    the same bit for bit whatever the thread count, and head k's do not depend on the other heads
    (:mod:`impulses.pu.kernels`). ``"wide"``: the fused kernel with 4 rows x 4 heads register tiles,
    for many heads; each head within 1e-6 (relative) of the same head trained alone. ``"torch"``: the
    rows are gathered into a buffer that MKL's matmuls read. ``"auto"`` (default): fused for up to
    ``FUSED_MAX_HEADS`` heads on a CPU, wide for more, torch without numba and on CUDA. They round
    differently (float32 rounding; tested to agree).

    ``threads`` sets the CPU threads for the run (restored afterwards): the fused kernels' threads,
    and torch's for the torch kernel. By default the torch kernel uses one thread when its steps are
    small (batch × D × K < 2²³ multiply-adds: up to ~16 heads on 2048-d features): its ops last
    microseconds, and waking a second thread costs more than it saves (on a loaded machine,
    milliseconds per op); larger sweeps keep torch's setting.

    ``prefetch`` (torch kernel) gathers batch j+1 on a second thread while batch j is computed (same
    rows, same order, same weights). By default it is on for single-threaded CPU runs on a machine
    with at least two cores, where the gather (memory latency) and the matmuls overlap.
    """
    t_start = time.perf_counter()
    device = torch.device(device)
    if epochs < 1 or batch_size < 1 or not lr > 0:
        raise ImpulsesError(f"epochs ({epochs}) and batch_size ({batch_size}) must be >= 1 and lr ({lr}) > 0")
    if X.ndim != 2:
        raise ImpulsesError(f"features must be 2-D (N, D), got shape {tuple(X.shape)}")
    if X.shape[0] == 0:
        raise ImpulsesError("no training rows")
    feature_dtype = resolve_feature_dtype(X, feature_dtype, device)
    heads = list(heads)
    kernel = resolve_kernel(kernel, device, len(heads))
    lab, columns = _label_matrix(s, heads, X.shape[0])
    losses = _check_heads(heads, lab, columns)
    test = None
    if X_test is not None and y_test is not None:
        y = np.asarray(y_test).reshape(-1)
        if X_test.ndim != 2 or X_test.shape[1] != X.shape[1] or len(y) != X_test.shape[0]:
            raise ImpulsesError(
                f"test features {tuple(X_test.shape)} and {len(y)} labels do not fit training features D={X.shape[1]}"
            )
        test = (X_test, y.astype(np.int64))
    trainer = _Trainer(
        X,
        lab[:, columns],
        losses,
        seeds=[h.seed for h in heads],
        batch_size=batch_size,
        lr=lr,
        betas=betas,
        eps=eps,
        device=device,
        x_dtype=getattr(torch, feature_dtype),
        fused=kernel in ("fused", "wide"),
    )
    trainer.wide = kernel == "wide"
    gen = torch.Generator().manual_seed(int(shuffle_seed)) if shuffle else None
    strata = trainer.strata() if stratified else None
    history: list[dict[str, Any]] = []
    # Adam's second moments of saturated heads underflow into subnormal floats, which make CPU
    # arithmetic ~30x slower; flushing them to zero changes nothing measurable (|x| < 1.2e-38).
    flush = device.type == "cpu" and torch.set_flush_denormal(True)
    threads_before = torch.get_num_threads()
    kernel_threads = None
    if kernel in ("fused", "wide"):
        from impulses.pu import kernels

        # by default one thread per column block of the gradient (8 for 2048-d features), at most
        # the cores this process may use: more would idle through the backward half of each step
        default = min(available_cpus(), kernels.column_blocks(X.shape[1]))
        if kernel == "wide":  # its work units are rows (logits) and 64-column blocks (gradient)
            default = available_cpus()
        kernel_threads = kernels.set_threads(threads if threads is not None else default)
        torch.set_num_threads(1)  # what is left for torch is elementwise work on (B, K)
        prefetch = False
    else:
        if threads is None and batch_size * (X.shape[1] + 1) * len(heads) < SMALL_STEP_MACS:
            threads = 1
        if device.type == "cpu" and threads is not None:
            torch.set_num_threads(max(1, int(threads)))
    if prefetch is None:
        prefetch = device.type == "cpu" and torch.get_num_threads() == 1 and available_cpus() >= 2
    if prefetch:
        trainer._prefetch_pool = ThreadPoolExecutor(1, thread_name_prefix="impulses-prefetch")
    try:
        test_x = _features(test[0], device, trainer.x_dtype) if test is not None else None
        for epoch in range(epochs):
            order, sizes = _epoch_order(trainer.n, batch_size, gen, strata)
            train_loss = trainer.epoch(
                order, sizes, track_loss=track_loss, in_order=gen is None and strata is None
            )
            record: dict[str, Any] = {}
            if train_loss is not None:
                record["train_loss"] = train_loss
            last = epoch + 1 == epochs
            if test_x is not None and eval_every > 0 and ((epoch + 1) % eval_every == 0 or last):
                record.update(trainer.evaluate(test_x, test[1]))
            if record:
                history.append({"epoch": epoch + 1, **record})
            if on_epoch is not None:
                on_epoch(epoch + 1, epochs)
    finally:
        if trainer._prefetch_pool is not None:
            trainer._prefetch_pool.shutdown(wait=True, cancel_futures=True)
        if flush:
            torch.set_flush_denormal(False)
        if torch.get_num_threads() != threads_before:
            torch.set_num_threads(threads_before)
    W, b = trainer.weights()
    return HeadsResult(
        W=W,
        b=b,
        heads=heads,
        steps=trainer.steps.cpu().numpy().astype(np.int64),
        skipped_batches=trainer.skipped.cpu().numpy().astype(np.int64),
        batches_per_epoch=trainer.batches_per_epoch,
        epochs=epochs,
        seconds=time.perf_counter() - t_start,
        history=history,
        config={
            "epochs": epochs,
            "batch_size": batch_size,
            "lr": lr,
            "betas": list(betas),
            "eps": eps,
            "shuffle": shuffle,
            "shuffle_seed": shuffle_seed,
            "stratified": stratified,
            "device": str(device),
            "feature_dtype": feature_dtype,
            "prefetch": bool(prefetch),
            "kernel": kernel,
            "columns": columns,
            "threads": kernel_threads or (torch.get_num_threads() if threads is None else threads),
        },
    )


def batch_coefficients(plan: dict[str, torch.Tensor], sizes: list[int]) -> list[dict[str, torch.Tensor]]:
    """A plan's (N, K) coefficient matrices cut into the epoch's batches: one dict per batch."""
    splits = {key: torch.split(v, sizes) for key, v in plan.items()}
    return [{key: v[j] for key, v in splits.items()} for j in range(len(sizes))]


class _Trainer:
    """The state of one training run: features, labels, parameters, Adam moments and step buffers.

    Parameters live in one K×(D+1) matrix ``theta`` (row k is head k: D weights, then its bias;
    with heads as rows, MKL's skinny products stay fast for every K — the D×K layout is ~10× slower
    for 2–8 heads — and each head's row is contiguous for the fused kernel). Adam's moments have
    theta's shape; a head's step counter advances only on batches where it learned something (every
    batch for logistic heads; batches with both P and U for PU heads). With the fused kernel an
    epoch is one call of :func:`impulses.pu.kernels.train_epoch`. With the torch kernel a batch is
    gathered (and widened to float32 when X is held narrower) into one (B, D) buffer small enough
    to stay in cache, which the forward and the backward matmul then read; while all heads share
    one step count, Adam is PyTorch's fused kernel on the whole matrix, otherwise a per-head masked
    update. ``wide`` (set by train_heads) runs the fused path's epochs with the wide kernel.
    """

    wide: bool = False

    def __init__(
        self,
        X: ArrayLike,
        S: np.ndarray,
        losses: list[HeadLoss],
        *,
        seeds: list[int],
        batch_size: int,
        lr: float,
        betas: tuple[float, float],
        eps: float,
        device: torch.device,
        x_dtype: torch.dtype,
        fused: bool = False,
    ) -> None:
        dt = torch.float32
        self.device, self.x_dtype, self.dt = device, x_dtype, dt
        self.X = _features(X, device, x_dtype)
        self.n, self.d = self.X.shape
        self.k = len(losses)
        self.S_np = np.ascontiguousarray(S, dtype=np.float32)
        self.S = torch.from_numpy(self.S_np).to(device)
        self.fused = FusedObjective(losses, device=device)
        self.is_pu = torch.tensor([get_loss(h.loss).kind == "pu" for h in losses], device=device)
        self.lr, self.betas, self.eps = lr, betas, eps

        theta = torch.empty((self.k, self.d + 1), dtype=dt)
        for j, seed in enumerate(seeds):
            w, b = linear_init(self.d, seed)
            theta[j, : self.d] = w
            theta[j, self.d] = b[0]
        self.theta = theta.to(device)
        self.exp_avg = torch.zeros_like(self.theta)
        self.exp_avg_sq = torch.zeros_like(self.theta)
        self.grad = torch.empty_like(self.theta)
        self.g2 = torch.empty_like(self.theta)
        self.denom = torch.empty_like(self.theta)
        self.upd = torch.empty_like(self.theta)
        self.eps_col = torch.full((self.k, 1), eps, dtype=dt, device=device)
        self.steps = torch.zeros(self.k, dtype=torch.float64, device=device)
        self.skipped = torch.zeros(self.k, dtype=torch.float64, device=device)
        self.batches_per_epoch = 0
        self.b_max = batch_size + 1
        # the fused kernels read X in place (float16 as its bits); the torch kernel gathers into slots
        self.X_kernel = None
        if fused:
            from impulses.pu.kernels import kernel_view  # imports numba: only when it is used

            self.X_kernel = kernel_view(self.X.numpy())
        # two batch slots: with prefetching, a second thread fills one while the other is computed on
        slots = 0 if fused else 2
        self.xb = [torch.empty((self.b_max, self.d), dtype=dt, device=device) for _ in range(slots)]
        self.xlow = (
            [torch.empty((self.b_max, self.d), dtype=x_dtype, device=device) for _ in range(slots)]
            if x_dtype != dt
            else None
        )
        self.bufs = [torch.empty((self.b_max, self.k), dtype=dt, device=device) for _ in range(3)]
        self._views: dict[int, tuple] = {}
        self.use_fused_adam = USE_FUSED_ADAM and hasattr(torch, "_fused_adam_")
        self._prefetch_pool: ThreadPoolExecutor | None = None  # set by train_heads when prefetching

    def strata(self) -> np.ndarray:
        """Rows labeled positive for any PU head (for any head when there is no PU head)."""
        pu = self.is_pu.cpu().numpy()
        cols = self.S_np[:, pu] if pu.any() else self.S_np
        return cols.max(axis=1) > 0

    def _views_for(self, size: int) -> tuple:
        if size not in self._views:
            if size > self.b_max:
                raise RuntimeError(f"batch of {size} rows exceeds the buffers ({self.b_max})")
            self._views[size] = tuple(buf[:size] for buf in self.bufs)
        return self._views[size]

    def _loader(self, order: torch.Tensor, sizes: list[int], in_order: bool) -> Callable[[int], torch.Tensor]:
        """``load(j)``: batch j's rows as a float32 (B, D) tensor, in batch slot j % 2.

        A float32 slice of X in row order is used in place; otherwise the rows are gathered
        (``index_select``) into the slot, through a narrow slot when X is held as float16/bfloat16
        (half the bytes read from memory, widened in cache).
        """
        X, index_select = self.X, torch.index_select
        slices = torch.split(X, sizes) if in_order else None
        starts = np.concatenate([[0], np.cumsum(sizes)]).tolist()
        wide = self.xlow is None

        def load(j: int) -> torch.Tensor:
            size, slot = sizes[j], j % 2
            if slices is not None and wide:
                return slices[j]
            xb = self.xb[slot][:size]
            if slices is not None:
                return xb.copy_(slices[j])
            idx = order[starts[j] : starts[j + 1]]
            if wide:
                return index_select(X, 0, idx, out=xb)
            xlow = self.xlow[slot][:size]
            index_select(X, 0, idx, out=xlow)
            return xb.copy_(xlow)

        return load

    def epoch(
        self, order: torch.Tensor, sizes: list[int], *, track_loss: bool = False, in_order: bool = False
    ) -> np.ndarray | None:
        """One pass over the rows in ``order``, cut into batches of ``sizes``; the mean objectives if tracked.

        ``in_order`` says that ``order`` is 0..N-1 (no shuffling): the torch kernel then uses float32
        batches as slices of X in place (or widens them) instead of gathering them.
        """
        dev, k, nb = self.device, self.k, len(sizes)
        order = order.to(dev)
        S_ord = self.S.index_select(0, order)
        # label statistics of every batch, once per epoch: counts, validity, Adam step counts
        sizes_t = torch.tensor(sizes, device=dev)
        at_ends = torch.cumsum(S_ord, 0, dtype=torch.float64).index_select(0, sizes_t.cumsum(0) - 1)
        n_p = torch.diff(at_ends, dim=0, prepend=torch.zeros((1, k), dtype=torch.float64, device=dev))
        n_u = sizes_t.double().unsqueeze(1) - n_p
        valid = ~self.is_pu | ((n_p > 0) & (n_u > 0))
        vf = valid.double()
        t = self.steps + vf.cumsum(0)  # each head's Adam step count after each batch
        self.steps = t[-1].clone()
        self.skipped += (1 - vf).sum(0)
        self.batches_per_epoch = nb

        # the loss coefficients of every row, from its batch's 1/n_P, 1/n_U and 1/B
        batch_of_row = torch.repeat_interleave(torch.arange(nb, device=dev), sizes_t)
        inv = torch.stack(
            [
                torch.where(valid, 1 / n_p.clamp(min=1), 0.0),
                torch.where(valid, 1 / n_u.clamp(min=1), 0.0),
                (1 / sizes_t.double()).unsqueeze(1).expand(nb, k),
            ]
        )
        inv_p, inv_u, inv_b = inv.to(self.dt).index_select(1, batch_of_row).unbind(0)
        plan = self.fused.plan(S_ord, inv_p, inv_u, inv_b[:, :1], objective=track_loss)
        if self.X_kernel is not None:
            z = self._epoch_fused(order, sizes, plan, valid, t)
            if not track_loss:
                return None
            zs = torch.split(torch.from_numpy(z).t(), sizes)
            coefs = batch_coefficients(plan, sizes)
            objectives = [self.fused.objective(zs[j], coefs[j]) for j in range(nb)]
            loss_sum = torch.cat(objectives).double().mul(vf).sum(0)
            return (loss_sum / vf.sum(0).clamp(min=1)).cpu().numpy()
        return self._epoch_torch(order, sizes, plan, valid, vf, t, track_loss=track_loss, in_order=in_order)

    def _epoch_fused(
        self, order: torch.Tensor, sizes: list[int], plan: dict, valid: torch.Tensor, t: torch.Tensor
    ) -> np.ndarray:
        """The epoch as one call of the fused kernel (:func:`impulses.pu.kernels.train_epoch`); the logits (K, N)."""
        from impulses.pu.kernels import train_epoch, train_epoch_wide

        run = train_epoch_wide if self.wide else train_epoch
        beta1, beta2 = self.betas
        zeros = None
        coefficients = {}
        for key in ("r", "normal", "corrected", "u", "neg_v"):  # heads-major (K, N): contiguous per head
            if key in plan:
                coefficients[key] = np.ascontiguousarray(plan[key].t().numpy())
            else:
                zeros = zeros if zeros is not None else np.zeros((self.k, len(order)), dtype=np.float32)
                coefficients[key] = zeros
        z = np.zeros((self.k, len(order)), dtype=np.float32)  # batches no head learns from stay 0
        run(
            self.X_kernel,
            order.numpy(),
            sizes,
            self.theta.numpy(),
            self.exp_avg.numpy(),
            self.exp_avg_sq.numpy(),
            coefficients,
            is_pu=self.is_pu.numpy(),
            neg_beta=self.fused.neg_beta[0].numpy(),
            valid=valid.numpy(),
            step_size=(self.lr / (1 - beta1**t)).float().numpy(),
            bc2_sqrt=(1 - beta2**t).clamp(min=1e-300).sqrt().float().numpy(),
            betas=self.betas,
            eps=self.eps,
            z=z,
        )
        return z

    def _epoch_torch(
        self,
        order: torch.Tensor,
        sizes: list[int],
        plan: dict,
        valid: torch.Tensor,
        vf: torch.Tensor,
        t: torch.Tensor,
        *,
        track_loss: bool,
        in_order: bool,
    ) -> np.ndarray | None:
        """The epoch as PyTorch ops per step: gather the batch into a buffer, addmm, closed-form
        gradient, mm, Adam (fused kernel where all heads share a step count)."""
        dev, k, nb = self.device, self.k, len(sizes)
        # batches where every head steps with the same count use the fused kernel (one op)
        uniform = (valid.all(1) & (t == t[:, :1]).all(1)).tolist() if self.use_fused_adam else [False] * nb
        adam_rows = self._adam_rows(valid, vf, t) if not all(uniform) else None
        step_counts = list(t[:, 0].to(self.dt).unbind(0)) if any(uniform) else [None] * nb
        coefs = batch_coefficients(plan, sizes)
        steps = [
            (self._views_for(size), coef, uni, count)
            for size, coef, uni, count in zip(sizes, coefs, uniform, step_counts, strict=True)
        ]
        load = self._loader(order, sizes, in_order)
        pool = self._prefetch_pool if not (in_order and self.xlow is None) else None
        pending = pool.submit(load, 0) if pool is not None else None
        loss_sum = torch.zeros((1, k), dtype=torch.float64, device=dev) if track_loss else None

        theta, grad, fused = self.theta, self.grad, self.fused
        exp_avg, exp_avg_sq = self.exp_avg, self.exp_avg_sq
        mm, addmm = torch.mm, torch.addmm
        fused_adam = getattr(torch, "_fused_adam_", None)
        lr, eps, (beta1, beta2) = self.lr, self.eps, self.betas
        W, bias, grad_W, grad_b = theta[:, : self.d].t(), theta[:, self.d], grad[:, : self.d], grad[:, self.d]
        for j, ((z, p, g), coef, uni, count) in enumerate(steps):
            if pending is not None:  # batch j was loaded on the prefetch thread; start on j + 1
                xb = pending.result()
                pending = pool.submit(load, j + 1) if j + 1 < nb else None
            else:
                xb = load(j)
            addmm(bias, xb, W, out=z)
            if loss_sum is not None:
                loss_sum += fused.objective(z, coef)
            fused.grad(z, coef, p=p, out=g)
            mm(g.t(), xb, out=grad_W)
            torch.sum(g, 0, out=grad_b)
            if uni:  # torch.optim.Adam's update, fused, for all heads at the same step
                fused_adam(
                    [theta], [grad], [exp_avg], [exp_avg_sq], [], [count],
                    lr=lr, beta1=beta1, beta2=beta2, weight_decay=0.0, eps=eps, amsgrad=False, maximize=False,
                )  # fmt: skip
            else:
                self._adam_masked(adam_rows, j)
        if loss_sum is None:
            return None
        return (loss_sum[0] / vf.sum(0).clamp(min=1)).cpu().numpy()

    def _adam_rows(self, valid: torch.Tensor, vf: torch.Tensor, t: torch.Tensor) -> list[list[torch.Tensor]]:
        """Per-batch (K, 1) columns of the masked Adam update: moment weights, step sizes, bias
        corrections."""
        beta1, beta2 = self.betas
        step_size = torch.where(valid, self.lr / (1 - beta1**t), 0.0)
        inv_bc2_sqrt = torch.where(t > 0, 1 / (1 - beta2**t).clamp(min=1e-300).sqrt(), 1.0)
        values = ((1 - beta1) * vf, (1 - beta2) * vf, step_size, inv_bc2_sqrt)
        return [list(x.to(self.dt).unsqueeze(2).unbind(0)) for x in values]

    def _adam_masked(self, rows: list[list[torch.Tensor]], j: int) -> None:
        """torch.optim.Adam's update per head; weight = step = 0 leaves a skipped head untouched."""
        w1, w2, step, inv_bc2_sqrt = (r[j] for r in rows)
        self.exp_avg.lerp_(self.grad, w1)
        torch.mul(self.grad, self.grad, out=self.g2)
        self.exp_avg_sq.lerp_(self.g2, w2)
        torch.sqrt(self.exp_avg_sq, out=self.denom)
        torch.addcmul(self.eps_col, self.denom, inv_bc2_sqrt, out=self.denom)
        torch.mul(self.exp_avg, step, out=self.upd)
        self.theta.addcdiv_(self.upd, self.denom, value=-1.0)

    def evaluate(self, X_test: torch.Tensor, y: np.ndarray) -> dict[str, Any]:
        """Test AUC, F1, accuracy (decision at logit 0) and objective (true labels as s) of every head."""
        from impulses.pu.metrics import fast_auc

        z = torch.addmm(self.theta[:, self.d], X_test.to(self.dt), self.theta[:, : self.d].t())
        yt = torch.as_tensor(y, dtype=self.dt, device=z.device).unsqueeze(1).expand_as(z)
        n_p = yt.sum(0, keepdim=True)
        n_u = yt.shape[0] - n_p
        inv_p = torch.where(n_p > 0, 1 / n_p.clamp(min=1), 0.0).expand_as(z)
        inv_u = torch.where(n_u > 0, 1 / n_u.clamp(min=1), 0.0).expand_as(z)
        inv_b = torch.full((z.shape[0], 1), 1 / z.shape[0], dtype=self.dt, device=z.device)
        test_loss = self.fused.objective(z, self.fused.plan(yt, inv_p, inv_u, inv_b, objective=True))[0]
        scores = z.cpu().numpy()
        pred = scores > 0
        pos = y.astype(bool)[:, None]
        tp = (pred & pos).sum(0)
        wrong = (pred != pos).sum(0)
        f1 = np.where(2 * tp + wrong > 0, 2 * tp / np.maximum(2 * tp + wrong, 1), 0.0)
        return {
            "auc": fast_auc(scores, y),
            "f1": f1,
            "accuracy": (pred == pos).mean(0),
            "test_loss": test_loss.cpu().numpy(),
        }

    def weights(self) -> tuple[np.ndarray, np.ndarray]:
        theta = self.theta.float().cpu()
        return theta[:, : self.d].t().numpy().copy(), theta[:, self.d].numpy().copy()


# ---------------------------------------------------------------------------------------------
# sweeps and files
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GridHead:
    """One head of a sweep and the coordinates it came from (base prior, distortion, label set)."""

    spec: HeadSpec
    base_prior: float | None
    distortion: float | None
    label_set: str


def head_grid(
    losses: Sequence[str],
    priors: Sequence[float] | Mapping[str, Sequence[float]],
    distortions: Sequence[float],
    seeds: Sequence[int],
    label_sets: Sequence[str],
    *,
    prior_prime: float = 0.5,
    beta: float = 0.0,
    gamma: float = 1.0,
    true_label_column: str = "y",
) -> list[GridHead]:
    """losses × priors × distortions × seeds × label sets, without heads that would be identical.

    A PU head's prior is ``base prior × distortion`` (the paper's misspecification study) and must
    stay in (0, 1): a product ≥ 1 is an error naming it (clipping would silently change the
    experiment). ``priors`` may map each label set to its own priors (estimated ones). bce/wbce
    ignore the prior, so they get one head per (seed, label set); pn trains on the true labels, so
    it gets one head per seed, with label set ``true_label_column``. ``column`` of each spec
    indexes ``[*label_sets, true_label_column]``.
    """
    for name, values in (("--loss", losses), ("--seeds", seeds), ("label set", label_sets)):
        if not values:
            raise ImpulsesError(f"{name}: nothing given")
    for dist in distortions:
        if not (dist > 0 and math.isfinite(dist)):
            raise ImpulsesError(f"--distortion {dist:g} must be a positive number")
    per_set = priors if isinstance(priors, Mapping) else dict.fromkeys(label_sets, priors)
    for values in per_set.values():
        for prior in values:
            check_prior(prior, "--prior")
    grid: list[GridHead] = []
    seen: set[tuple] = set()

    def add(spec: HeadSpec, base: float | None, dist: float | None, label_set: str) -> None:
        key = (spec.loss, base, dist, spec.seed, label_set)
        if key not in seen:
            seen.add(key)
            grid.append(GridHead(spec, base, dist, label_set))

    for loss in dict.fromkeys(get_loss(name).name for name in losses):
        spec = get_loss(loss)
        for column, label_set in enumerate(label_sets):
            if spec.labels == "y":
                column, label_set = len(label_sets), true_label_column
            for seed in seeds:
                if not spec.uses_prior:
                    name = f"{loss}_seed{seed}_{label_set}"
                    add(HeadSpec(loss, None, seed, column, name=name), None, None, label_set)
                    continue
                if not per_set.get(label_set):
                    raise ImpulsesError(f"--loss {loss} needs a prior: give --prior or --prior-range")
                for base in per_set[label_set]:
                    for dist in distortions:
                        prior = base * dist
                        if not 0 < prior < 1:
                            raise ImpulsesError(
                                f"--distortion {dist:g} x --prior {base:g} = {prior:g} is not in (0, 1); "
                                "drop that distortion or lower the prior"
                            )
                        dist_part = "" if dist == 1 else f"_x{dist:g}"
                        name = f"{loss}_pi{base:.6g}{dist_part}_seed{seed}_{label_set}"
                        head = HeadSpec(loss, prior, seed, column, prior_prime, beta, gamma, name=name)
                        add(head, base, dist, label_set)
    return grid


HEADS_FORMAT = "impulses-heads"
HEADS_VERSION = 1


def save_heads(path: str | Path, result: HeadsResult, **meta: Any) -> Path:
    """Write trained heads (weights, specs, training config, ``meta`` such as the store's dim) with torch.save."""
    import os

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": HEADS_FORMAT,
        "version": HEADS_VERSION,
        "W": torch.from_numpy(result.W),
        "b": torch.from_numpy(result.b),
        "dim": int(result.W.shape[0]),
        "heads": [h.to_dict() for h in result.heads],
        "training": dict(result.config),
        **meta,
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def load_heads(path: str | Path) -> dict[str, Any]:
    """Read a file written by :func:`save_heads`; a missing or foreign file is an :class:`ImpulsesError`."""
    path = Path(path)
    if not path.exists():
        raise ImpulsesError(f"{path}: no such heads file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle/zip errors of every kind mean "not our file"
        raise ImpulsesError(
            f"{path}: not a heads file written by impulses train-head ({type(err).__name__})"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != HEADS_FORMAT:
        raise ImpulsesError(f"{path}: not a heads file written by impulses train-head")
    if payload.get("version") != HEADS_VERSION:
        raise ImpulsesError(f"{path}: heads file version {payload.get('version')} is not supported")
    return payload
