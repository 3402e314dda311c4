"""Batched linear heads, the public side: K independent D→1 classifiers trained in ONE pass over a feature matrix.

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

This module holds the types (:class:`HeadSpec`, :class:`HeadsResult`), the validation of
:func:`train_heads`' inputs and the heads file; the epochs run in :mod:`impulses.pu.trainer`, the
kernel choice lives in :mod:`impulses.pu.kernels`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from impulses import torchfile
from impulses.atomic import atomic_path
from impulses.errors import ImpulsesError, ParameterError
from impulses.pu.losses import SURROGATES, HeadLoss, check_prior, get_loss
from impulses.pu.trainer import FeatureSource, fit, parse_bytes, resolve_feature_dtype, window_plan
from impulses.runtime import as_numpy, as_torch_device, is_tensor, light_device

if TYPE_CHECKING:
    import torch

    ArrayLike = np.ndarray | torch.Tensor


@dataclass(frozen=True)
class HeadSpec:
    """One head: its loss and hyperparameters, the seed of its initialisation and its label column.

    ``column`` picks the column of a 2-D label matrix (default: column k for head k when the matrix
    has one column per head, else column 0). ``pos_weight`` (wbce, pn) defaults to |U|/|P| (pn:
    |N|/|P|) of the head's label column over the whole training set. ``name`` is a free label carried
    into results. ``surrogate`` is the PU losses' loss ℓ: ``"sigmoid"`` (the paper's; logits are
    scores) or ``"logistic"`` (logits estimate log-odds, see :mod:`impulses.pu.losses`); the
    baselines (bce, wbce, pn) use the logistic loss whatever it says.
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
    surrogate: str = "sigmoid"

    def to_dict(self) -> dict[str, Any]:
        """The spec as a plain dict (a result row's columns, JSON metadata)."""
        return asdict(self)


WIDEN_BYTES = 8 << 20  # the float32 buffer float16 blocks are widened into (cache- and page-fault-friendly)


def _half_widener(rows: int, dim: int) -> tuple[int, Callable[[np.ndarray], np.ndarray]] | None:
    """Rows per block and a float16 -> float32 converter into one reused buffer; None: numpy's cast.

    numba's F16C loop is 20x numpy's cast; it is used where numba is already loaded, or where the
    input is large enough to be worth loading it.
    """
    if "impulses.pu.kernels" not in sys.modules and rows < 100_000:
        return None
    from impulses.pu import kernels

    if not kernels.AVAILABLE:
        return None
    buffer = np.empty((max(1, min(rows, WIDEN_BYTES // (4 * max(dim, 1)))), dim), dtype=np.float32)
    return len(buffer), lambda block: kernels.widen_half(block, buffer)


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
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        """Each head's name (``head<k>`` where a spec has none)."""
        return [h.name or f"head{k}" for k, h in enumerate(self.heads)]

    def decision_function(self, X: ArrayLike, batch_rows: int = 65536) -> np.ndarray:
        """Logits (N, K) of every head; predictions are ``logits > 0``."""
        W, b = self.W.astype(np.float32, copy=False), self.b.astype(np.float32, copy=False)
        out = np.empty((len(X), self.W.shape[1]), dtype=np.float32)
        widener = (
            _half_widener(len(X), self.W.shape[0]) if str(getattr(X, "dtype", "")) == "float16" else None
        )
        step, widen = widener if widener is not None else (batch_rows, None)
        for start in range(0, len(X), step):
            block = as_numpy(X[start : start + step])
            block = widen(block) if widen is not None else block.astype(np.float32, copy=False)
            np.matmul(block, W, out=out[start : start + len(block)])
            out[start : start + len(block)] += b
        return out

    def score_store(self, store: Any, batch_rows: int = 65536) -> Any:
        """Logits of every sample of an embedding store: a polars frame, ``id`` then one float32 column per head.

        Args:
            store: An :class:`~impulses.embed.store.EmbeddingStore` (anything with ``dim``, ``ids``,
                ``__len__`` and ``iter_batches(rows)``).
            batch_rows: Rows read per block.

        Returns:
            ``pl.DataFrame`` with ``id`` (string) and one column per head, named by :attr:`names`.

        Raises:
            ParameterError: the store's dimension is not the heads'.
        """
        import polars as pl

        dim = self.W.shape[0]
        if store.dim != dim:
            raise ParameterError("store", f"has dim {store.dim}, but the heads were trained on dim {dim}")
        scores = np.empty((len(store), self.W.shape[1]), dtype=np.float32)
        for start, block in store.iter_batches(batch_rows):
            scores[start : start + len(block)] = self.decision_function(block, batch_rows)
        columns = {name: scores[:, k] for k, name in enumerate(self.names)}
        return pl.DataFrame({"id": [str(i) for i in store.ids], **columns})

    def calibrate(
        self, X_val: ArrayLike, s_val: ArrayLike, prior: float | Sequence[float | None] | None = None
    ) -> HeadsResult:
        """Fit PU Platt scaling per head on held-out PU data; kept in ``meta["calibration"]``.

        Each head's logits on ``X_val`` are calibrated by :class:`~impulses.pu.calibration.PUPlatt`
        at the prior π (labeled positives and unlabeled rows only, no negatives). The rows must not
        be ones the heads were trained on. :func:`save_heads` saves the calibration with the heads;
        :meth:`predict_proba` then uses it.

        Args:
            X_val: Held-out features (N, D).
            s_val: Their PU labels, (N,) or (N, C) with the training label matrix's columns (each
                head reads its training column; one column serves every head).
            prior: π for every head (a float) or per head (a sequence, None to skip a head);
                default each head's own training prior. Heads without one (bce, wbce, pn) stay
                uncalibrated unless given one.

        Returns:
            self; ``meta["calibration"]`` holds one dict per head (``method``, ``coef``,
            ``intercept``, ``prior``, ``risk``, ``n_labeled``, ``n_unlabeled``) or None.

        Raises:
            ParameterError: shapes that do not fit, a label column a head needs is missing, or no
                head has a prior to calibrate at.
        """
        from impulses.pu.calibration import PUPlatt

        logits = self.decision_function(X_val)
        lab = as_numpy(s_val)
        lab = lab[:, None] if lab.ndim == 1 else lab
        if lab.ndim != 2 or lab.shape[0] != len(logits):
            raise ParameterError(
                ("X_val", "s_val"), f"must have the same rows, got {len(logits)} and {lab.shape}"
            )
        k = len(self.heads)
        if prior is None or isinstance(prior, (int, float, np.floating)):
            priors = [prior if prior is not None else h.prior for h in self.heads]
        else:
            priors = list(prior)
            if len(priors) != k:
                raise ParameterError(
                    "prior", f"must be a float or one value per head ({k}), got {len(priors)}"
                )
        columns = list(self.config.get("columns") or range(k))
        entries: list[dict[str, Any] | None] = []
        for j, pi in enumerate(priors):
            column = columns[j] if lab.shape[1] > 1 else 0
            if pi is None:
                entries.append(None)
                continue
            if column >= lab.shape[1]:
                raise ParameterError(
                    "s_val", f"has {lab.shape[1]} column(s); head {self.names[j]} reads column {column}"
                )
            platt = PUPlatt(float(pi)).fit(logits[:, j], lab[:, column])
            n_labeled = int(lab[:, column].sum())
            entries.append(
                {"method": "pu-platt", "coef": platt.coef_, "intercept": platt.intercept_, "prior": float(pi),
                 "risk": platt.risk_, "n_labeled": n_labeled, "n_unlabeled": len(lab) - n_labeled}
            )  # fmt: skip
        if all(entry is None for entry in entries):
            raise ParameterError("prior", "is needed: no head has a training prior to calibrate at")
        self.meta["calibration"] = entries
        return self

    def calibrated_logits(self, logits: ArrayLike, prevalence: float | None = None) -> np.ndarray:
        """Each head's logits (N, K) turned into log-odds of p(y=1 | x) at ``prevalence``.

        Per head, the first route that applies: a PU Platt calibration (:meth:`calibrate`), then a
        logit shift (:func:`~impulses.pu.calibration.shift_logits`) for heads whose logits are
        log-odds already: PU heads trained with the logistic surrogate (balance π′ for imbnnPU, π
        for nnPU/uPU) and pn (0.5). Derivations: :mod:`impulses.pu.calibration`.

        Args:
            logits: The heads' logits, (N, K) as :meth:`decision_function` gives them.
            prevalence: P, the positive share of the population scored; default each head's prior
                π (the unlabeled population's share; 0.5 for pn).

        Raises:
            ParameterError: a head whose logits are scores (sigmoid-loss PU heads, bce, wbce) and
                that is not calibrated, or a prevalence outside (0, 1).
        """
        from impulses.pu.calibration import logit_balance, shift_logits

        z = np.asarray(logits, dtype=np.float64)
        if z.ndim != 2 or z.shape[1] != len(self.heads):
            raise ParameterError("logits", f"must be (N, {len(self.heads)}), got {z.shape}")
        calibration = self.meta.get("calibration") or [None] * len(self.heads)
        out = np.empty_like(z)
        for k, head in enumerate(self.heads):
            entry = calibration[k] if k < len(calibration) else None
            if entry:
                g, balance = entry["coef"] * z[:, k] + entry["intercept"], float(entry["prior"])
            elif head.loss == "pn" or (
                get_loss(head.loss).kind == "pu" and str(head.surrogate).lower() == "logistic"
            ):
                g, balance = z[:, k], logit_balance(head.loss, head.prior, head.prior_prime)
            else:
                kind = (
                    f"{head.loss}, {head.surrogate} loss" if get_loss(head.loss).kind == "pu" else head.loss
                )
                raise ParameterError(
                    "heads",
                    f"include head {self.names[k]} ({kind}), whose logits are scores, not log-odds: "
                    "calibrate the heads on held-out PU data first, or train PU heads with the logistic surrogate",
                )
            target = (
                prevalence if prevalence is not None else (head.prior if head.prior is not None else balance)
            )
            out[:, k] = shift_logits(g, balance, target)
        return out

    def predict_proba(self, X: ArrayLike, prevalence: float | None = None) -> np.ndarray:
        """p(y=1 | x) (N, K) of every head at prevalence P: σ of :meth:`calibrated_logits`.

        Args:
            X: Features (N, D).
            prevalence: P, the positive share of the population scored (default: each head's π).

        Raises:
            ParameterError: a head whose logits are scores and that is not calibrated (see
                :meth:`calibrated_logits`).
        """
        from scipy.special import expit

        return expit(self.calibrated_logits(self.decision_function(X), prevalence))

    def check_store(self, store: Any, allow_other_encoder: bool = False) -> None:
        """Refuse a store these heads cannot score: another dimension, or another encoder/transform.

        The heads record their training store's ``encoder``, ``encoder_sha256`` and ``transform``
        (``meta["store_encoder"]``, written by ``train-head``); a store embedded otherwise holds
        other features even at the same dimension. Heads without the record are checked by
        dimension only.

        Args:
            store: An embedding store (``dim`` and ``meta``, duck-typed).
            allow_other_encoder: Score a store of another encoder or transform anyway.

        Raises:
            ParameterError: the dimension differs (about ``store``) or the encoder does (about
                ``allow_other_encoder``; the message names both encoders).
        """
        dim = self.W.shape[0]
        if store.dim != dim:
            raise ParameterError("store", f"has dim {store.dim}, but the heads were trained on dim {dim}")
        check_same_encoder(self.meta.get("store_encoder"), store, allow_other_encoder)


def _label_matrix(s: ArrayLike, heads: Sequence[HeadSpec], n: int) -> tuple[np.ndarray, list[int]]:
    """Labels as (N, C) float32 and each head's column index, validated."""
    lab = as_numpy(s)
    if lab.ndim == 1:
        lab = lab[:, None]
    if lab.ndim != 2 or lab.shape[0] != n:
        raise ParameterError("s", f"must have shape ({n},) or ({n}, C), got {lab.shape}")
    if not np.isin(lab, (0, 1)).all():
        bad = np.argwhere(~np.isin(lab, (0, 1)))[0]
        raise ParameterError("s", f"must be 0 or 1; row {bad[0]} holds {lab[tuple(bad)]!r}")
    c = lab.shape[1]
    columns = []
    for k, head in enumerate(heads):
        col = head.column if head.column is not None else (k if c == len(heads) else 0)
        if not 0 <= col < c:
            raise ParameterError(
                "heads",
                f"head {k} ({head.name or head.loss}): label column {col} does not exist ({c} columns)",
            )
        columns.append(col)
    return lab.astype(np.float32, copy=False), columns


def _check_heads(heads: Sequence[HeadSpec], lab: np.ndarray, columns: list[int]) -> list[HeadLoss]:
    """Validate every head against its label column and resolve wbce's default positive weight."""
    if not heads:
        raise ParameterError("heads", "is empty: no heads to train")
    losses = []
    for k, (head, col) in enumerate(zip(heads, columns, strict=True)):
        spec = get_loss(head.loss)
        what = f"head {k} ({head.name or head.loss})"
        n_p = int(lab[:, col].sum())
        n_u = lab.shape[0] - n_p
        pos_weight = head.pos_weight
        if spec.uses_prior:
            check_prior(head.prior, f"{what}: prior", param="heads")
            if head.loss == "imbnnpu":
                check_prior(head.prior_prime, f"{what}: prior_prime", param="heads")
            if n_p == 0:
                raise ParameterError("s", f"has no labeled positive (s = 1) in the column of {what}")
            if n_u == 0:
                raise ParameterError("s", f"has no unlabeled row (s = 0) in the column of {what}")
        elif spec.name in ("wbce", "pn") and pos_weight is None:
            if n_p == 0:
                raise ParameterError(
                    "s",
                    f"has no positive label in the column of {what}: {spec.name} weights |U|/|P| or |N|/|P|",
                )
            pos_weight = n_u / n_p
        if head.beta < 0 or head.gamma < 0:
            raise ParameterError("heads", f"{what}: beta and gamma must be >= 0")
        if str(head.surrogate).lower() not in SURROGATES:
            raise ParameterError(
                "heads", f"{what}: surrogate must be one of {', '.join(SURROGATES)}, got {head.surrogate!r}"
            )
        surrogate = str(head.surrogate).lower() if spec.kind == "pu" else "sigmoid"
        prior = float(head.prior) if spec.uses_prior else None
        losses.append(
            HeadLoss(
                spec.name,
                prior,
                float(head.prior_prime),
                float(head.beta),
                float(head.gamma),
                None if pos_weight is None else float(pos_weight),
                surrogate,
            )
        )
    return losses


def train_heads(
    X: ArrayLike | Any,
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
    device: Any = "cpu",
    feature_dtype: str = "auto",
    X_test: ArrayLike | None = None,
    y_test: ArrayLike | None = None,
    eval_every: int = 0,
    track_loss: bool = False,
    threads: int | None = None,
    prefetch: bool | None = None,
    kernel: str = "auto",
    on_epoch: Callable[[int, int], None] | None = None,
    max_memory: int | str | None = None,
    rows: np.ndarray | None = None,
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
    one per 256 feature columns, one fewer when a store is read in windows on a thread); the weights are
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

    **Stores larger than memory.** ``X`` may also be an embedding store (anything with an
    ``embeddings`` HDF5 dataset), an ``h5py.Dataset`` or a :class:`~impulses.pu.trainer.FeatureSource`,
    with ``rows`` its training rows (default all; ``s`` has one label row per training row).
    ``max_memory`` (bytes, or a size such as ``"2G"``) bounds the run's memory: when the features
    (with 64 bytes per row and head for what an epoch computes) take more than a quarter of it, they
    are read from the store in windows of a quarter of it each, two at a time (one read on a thread
    while the other trains), with **block-shuffled epochs**: the
    order of the store's chunks is shuffled, and the rows within each window of chunks (see
    :mod:`impulses.pu.trainer`). Peak memory is then flat in N; the result differs from a full
    shuffle's by the shuffle alone (measured: ``benchmarks/bench_outofcore.py``). When
    everything fits in one window, the run is exactly the in-memory run.
    """
    t_start = time.perf_counter()
    device = light_device(device)  # a torch.device, or the CPU named without importing torch
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if value < 1:
            raise ParameterError(name, f"must be at least 1, got {value}")
    if not lr > 0:
        raise ParameterError("lr", f"must be > 0, got {lr}")
    if eval_every < 0:
        raise ParameterError("eval_every", f"must be 0 or more, got {eval_every}")
    max_memory = parse_bytes(max_memory)
    heads = list(heads)
    if rows is not None or max_memory is not None or not (isinstance(X, np.ndarray) or is_tensor(X)):
        X = as_numpy(X) if is_tensor(X) else X
        X = X if isinstance(X, FeatureSource) and rows is None else FeatureSource(X, rows)
        window_plan(X, max_memory, batch_size, heads=len(heads))  # max_memory's errors before any work
    if X.ndim != 2:
        raise ParameterError("X", f"must be 2-D (N, D), got shape {tuple(X.shape)}")
    if X.shape[0] == 0:
        raise ParameterError("X", "has no rows")
    from impulses.pu.kernels import resolve_kernel  # imports numba

    feature_dtype = resolve_feature_dtype(X, feature_dtype, device)
    kernel = resolve_kernel(kernel, device, len(heads))
    if kernel == "torch":
        device = as_torch_device(device)
    lab, columns = _label_matrix(s, heads, X.shape[0])
    losses = _check_heads(heads, lab, columns)
    if (X_test is None) != (y_test is None):
        raise ParameterError(("X_test", "y_test"), "go together: give both or neither")
    test = None
    if X_test is not None and y_test is not None:
        y = np.asarray(y_test).reshape(-1)
        if X_test.ndim != 2 or X_test.shape[1] != X.shape[1] or len(y) != X_test.shape[0]:
            raise ParameterError(
                ("X_test", "y_test"),
                f"{tuple(X_test.shape)} and {len(y)} labels do not fit training features D={X.shape[1]}",
            )
        test = (X_test, y.astype(np.int64))
    run = fit(
        X, lab, losses, [h.seed for h in heads], columns=columns, epochs=epochs, batch_size=batch_size, lr=lr,
        betas=betas, eps=eps, shuffle=shuffle, shuffle_seed=shuffle_seed, stratified=stratified,
        device=device, feature_dtype=feature_dtype, kernel=kernel, test=test, eval_every=eval_every,
        track_loss=track_loss, threads=threads, prefetch=prefetch, on_epoch=on_epoch, max_memory=max_memory,
    )  # fmt: skip
    return HeadsResult(
        W=run.W,
        b=run.b,
        heads=heads,
        steps=run.steps,
        skipped_batches=run.skipped_batches,
        batches_per_epoch=run.batches_per_epoch,
        epochs=epochs,
        seconds=time.perf_counter() - t_start,
        history=run.history,
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
            "prefetch": run.prefetch,
            "kernel": kernel,
            "columns": columns,
            "threads": run.threads,
            "max_memory": max_memory,
            "window_rows": run.window_rows,
        },
    )


ENCODER_KEYS = ("encoder", "encoder_sha256", "transform")  # what makes two stores' features comparable


def store_encoder(store: Any) -> dict[str, Any]:
    """What a store records about how it was embedded: encoder, weights sha256, transform, spec.

    Kept with heads (``meta["store_encoder"]``) so that :meth:`HeadsResult.check_store` can refuse a
    store of another encoder, and ``predict --data`` can embed new images the same way.

    Args:
        store: An embedding store (its ``meta``: root attributes as a dict, duck-typed).
    """
    meta = getattr(store, "meta", None)
    meta = meta() if callable(meta) else dict(meta or {})
    keys = (*ENCODER_KEYS, "encoder_spec", "encoder_preset", "weights", "source")
    return {key: meta[key] for key in keys if meta.get(key) is not None}


def _describe_encoder(record: dict[str, Any], keys: Sequence[str]) -> str:
    import json

    parts = [str(record.get("encoder") or "?")]
    if "encoder_sha256" in keys or record.get("encoder_sha256"):
        parts.append(f"weights sha256 {str(record.get('encoder_sha256') or '-')[:12]}")
    if "transform" in keys:
        parts.append(f"transform {json.dumps(record.get('transform'), sort_keys=True)}")
    return f"{parts[0]} ({', '.join(parts[1:])})"


def check_same_encoder(
    recorded: dict[str, Any] | None, store: Any, allow_other_encoder: bool = False
) -> None:
    """Refuse ``store`` when its encoder, weights or transform differ from ``recorded`` (a :func:`store_encoder`).

    Nothing is compared when ``recorded`` is None or empty (heads saved before it was recorded).

    Raises:
        ParameterError: about ``allow_other_encoder``, naming both stores' encoders.
    """
    import json

    if not recorded or allow_other_encoder:
        return
    found = store_encoder(store)

    def same(key: str) -> bool:
        a, b = recorded.get(key), found.get(key)
        if key == "transform":
            return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)
        return (a or "") == (b or "")

    differ = [key for key in ENCODER_KEYS if key in recorded and not same(key)]
    if differ:
        where = getattr(store, "path", None) or "the store"
        raise ParameterError(
            "allow_other_encoder",
            f"is needed to score {where}: it was embedded by {_describe_encoder(found, differ)}, but the "
            f"heads were trained on a store embedded by {_describe_encoder(recorded, differ)}",
        )


HEADS_FORMAT = "impulses-heads"
HEADS_VERSION = 1
_RESULT_KEYS = ("steps", "skipped_batches", "batches_per_epoch", "epochs", "seconds")


def save_heads(path: str | Path, result: HeadsResult, **meta: Any) -> Path:
    """Write trained heads (weights, specs, training config, counts, ``meta``) as torch.save does, atomically.

    The file is written without importing torch (:mod:`impulses.torchfile`) unless ``meta`` holds a
    value that writer does not handle; ``torch.load(path, weights_only=True)`` reads it either way.

    Args:
        path: The file to write (``heads.pt``); its folder is created.
        result: The heads.
        **meta: Provenance kept beside them (the store's dim, fingerprint, label file, ...), merged
            over ``result.meta``.

    Returns:
        ``path``.
    """
    path = Path(path)
    payload = {
        **result.meta,
        **meta,
        "format": HEADS_FORMAT,
        "version": HEADS_VERSION,
        "W": np.ascontiguousarray(result.W),
        "b": np.ascontiguousarray(result.b),
        "dim": int(result.W.shape[0]),
        "heads": [h.to_dict() for h in result.heads],
        "training": dict(result.config),
        "steps": [int(v) for v in result.steps],
        "skipped_batches": [int(v) for v in result.skipped_batches],
        "batches_per_epoch": int(result.batches_per_epoch),
        "epochs": int(result.epochs),
        "seconds": float(result.seconds),
    }
    with atomic_path(path) as tmp:
        try:
            torchfile.dump(payload, tmp)
        except TypeError:  # a value only torch.save writes
            import torch

            tensors = {key: torch.from_numpy(payload[key]) for key in ("W", "b")}
            torch.save({**payload, **tensors}, tmp)
    return path


def read_heads_file(path: str | Path) -> dict[str, Any]:
    """The raw payload of a file written by :func:`save_heads`: specs as dicts, ``W`` and ``b`` as arrays.

    The file is read without torch (:func:`impulses.torchfile.load`); one in a form only torch reads
    gives tensors.

    Raises:
        ImpulsesError: the file is missing, not a heads file, or of another version.
    """
    path = Path(path)
    if not path.exists():
        raise ImpulsesError(f"{path}: no such heads file")
    try:
        try:
            payload = torchfile.load(path)  # without importing torch (a second); tensors as arrays
        except torchfile.NotReadable:
            import torch

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


def load_heads(path: str | Path) -> HeadsResult:
    """Read heads written by :func:`save_heads` back as a :class:`HeadsResult`.

    ``meta`` holds the provenance saved with them (``store_dim``, ``labels``, ``grid``, ...);
    ``history`` is not kept in the file (results go to history.csv).

    Raises:
        ImpulsesError: the file is missing, not a heads file, or of another version.
    """
    payload = read_heads_file(path)
    k = int(payload["W"].shape[1])
    known = {"format", "version", "W", "b", "dim", "heads", "training", *_RESULT_KEYS}
    return HeadsResult(
        W=as_numpy(payload["W"], np.float32),
        b=as_numpy(payload["b"], np.float32),
        heads=[HeadSpec(**spec) for spec in payload["heads"]],
        steps=np.asarray(payload.get("steps", [0] * k), dtype=np.int64),
        skipped_batches=np.asarray(payload.get("skipped_batches", [0] * k), dtype=np.int64),
        batches_per_epoch=int(payload.get("batches_per_epoch", 0)),
        epochs=int(payload.get("epochs", payload["training"].get("epochs", 0))),
        seconds=float(payload.get("seconds", 0.0)),
        config=dict(payload["training"]),
        meta={key: value for key, value in payload.items() if key not in known},
    )
