"""The head trainer: batch order, the per-head Adam and the drivers of both step kernels.

:func:`impulses.pu.heads.train_heads` validates its inputs and calls :func:`fit`, which runs the
epochs. Parameters of all heads live in one K×(D+1) matrix; each epoch's batch order is shared by
all heads (drawn from ``shuffle_seed``); a step is either the fused numba kernel
(:mod:`impulses.pu.kernels`) or PyTorch ops on a gathered batch (see :class:`Trainer`).

**Features larger than memory** (:class:`FeatureSource`, ``max_memory``) are trained from the
store in windows with **block-shuffled epochs** (:func:`block_windows`): the rows are cut into
blocks of ``block_rows`` consecutive rows (the store's HDF5 chunk, 1 MiB); each epoch shuffles the
order of the blocks, takes them ``window_blocks`` at a time (a window: as many rows as fit in a
quarter of ``max_memory``, counting 64 bytes per row and head besides the features), reads a
window's blocks in file order as contiguous runs, and shuffles the rows within the window
(stratified: deals the window's positives over its batches). Each
window is cut into batches on its own (only its last batch may be smaller), so a batch never
waits for another window. While the kernel trains on one window, the next is read on a second
thread into the other of two buffers (the kernels release the GIL), so memory is two windows
whatever N is, and half of ``max_memory`` is left for the process itself. A window that covers
the whole store is read once and is exactly the in-memory run (same order, same weights).
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from impulses.embed.store import finite_mask, read_rows
from impulses.errors import ParameterError, StoreError
from impulses.pu.generator import TorchStream
from impulses.pu.losses import FusedObjective, HeadLoss, get_loss
from impulses.runtime import as_numpy, as_torch_device, is_tensor

if TYPE_CHECKING:
    import torch

    ArrayLike = np.ndarray | torch.Tensor

# torch is imported where the torch kernel, loss tracking or in-training evaluation need it: a run of
# the numba kernels does not, and importing it would take about as long as training one head
SMALL_STEP_MACS = 1 << 23  # below this much work per step, one CPU thread beats several
USE_FUSED_ADAM = True  # PyTorch's fused Adam kernel where all heads share a step count (tests turn it off)


def linear_init(dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """torch.nn.Linear(dim, 1)'s default initialisation, drawn from a generator seeded with ``seed``.

    Weights (dim,) then bias (1,) ~ U(−1/√dim, 1/√dim), float32, the numbers
    ``torch.manual_seed(seed); nn.Linear(dim, 1)`` draws (:class:`~impulses.pu.generator.TorchStream`),
    so a head matches a reference model built that way.
    """
    gen = TorchStream(seed)
    bound = 1.0 / math.sqrt(dim) if dim > 0 else 0.0
    return gen.uniform(dim, -bound, bound), gen.uniform(1, -bound, bound)


FEATURE_DTYPES = ("auto", "float32", "float16", "bfloat16")


def available_cpus() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def resolve_feature_dtype(X: ArrayLike, feature_dtype: str, device: Any) -> str:
    """The dtype features are held in: ``auto`` → float16 for float16 input, else float32."""
    if feature_dtype not in FEATURE_DTYPES:
        raise ParameterError(
            "feature_dtype", f"must be one of {', '.join(FEATURE_DTYPES)}, got {feature_dtype!r}"
        )
    if feature_dtype == "bfloat16" and device.type != "cuda":
        raise ParameterError("feature_dtype", "bfloat16 is for CUDA devices; use float16 or float32 on CPU")
    if feature_dtype == "auto":
        return "float16" if str(X.dtype) in ("float16", "torch.float16") else "float32"
    return feature_dtype


def features(X: ArrayLike, device: Any, dtype: str) -> torch.Tensor:
    """X (N, D) as a tensor on ``device`` in ``dtype`` (a name), without a copy when it already is."""
    import torch

    src = X if is_tensor(X) else torch.from_numpy(np.ascontiguousarray(X))
    return src.to(device=as_torch_device(device), dtype=getattr(torch, dtype)).contiguous()


def host_features(X: ArrayLike, dtype: str) -> np.ndarray:
    """X (N, D) as a C-contiguous numpy array in ``dtype``, without a copy when it already is."""
    return np.ascontiguousarray(as_numpy(X), dtype=np.dtype(dtype))


def epoch_order(
    n: int, batch_size: int, gen: TorchStream | None, strata: np.ndarray | None
) -> tuple[np.ndarray, list[int]]:
    """Row order of one epoch (int64) and its batch sizes.

    Plain: a permutation (``gen``: torch.randperm's) or the identity, cut into batches of ``batch_size`` (the last one
    smaller). Stratified: ceil(N/B) batches; the epoch's labeled positives and unlabeled rows are each
    permuted and dealt out as evenly as possible over the batches (each batch gets ⌊|P|/nb⌋ or
    ⌈|P|/nb⌉ positives); with fewer positives than batches, positives are drawn again (cycled
    permutations) so every batch holds one.
    """
    if strata is None:
        order = gen.randperm(n) if gen is not None else np.arange(n)
        sizes = [batch_size] * (n // batch_size) + ([n % batch_size] if n % batch_size else [])
        return order, sizes
    nb = max(1, math.ceil(n / batch_size))
    pos = np.flatnonzero(strata)
    unl = np.flatnonzero(~strata)

    def perm(idx: np.ndarray) -> np.ndarray:
        return idx[gen.randperm(len(idx))] if gen is not None else idx

    pos_order = perm(pos)
    while 0 < len(pos_order) < nb:
        pos_order = np.concatenate([pos_order, perm(pos)])
    pos_order = pos_order[: max(nb, len(pos))]
    unl_order = perm(unl)

    def deal(m: int) -> np.ndarray:  # batch id of each of m items dealt like np.array_split
        base, extra = divmod(m, nb)
        counts = np.full(nb, base, dtype=np.int64)
        counts[:extra] += 1
        return np.repeat(np.arange(nb), counts)

    batch_of = np.concatenate([deal(len(pos_order)), deal(len(unl_order))])
    rank = np.argsort(batch_of, kind="stable")
    order = np.concatenate([pos_order, unl_order])[rank]
    sizes = np.bincount(batch_of, minlength=nb).tolist()
    sizes = [size for size in sizes if size > 0]
    return order, sizes


def block_windows(
    n: int,
    batch_size: int,
    gen: TorchStream | None,
    strata: np.ndarray | None,
    *,
    block_rows: int,
    window_blocks: int,
) -> Iterator[tuple[np.ndarray, np.ndarray, list[int]]]:
    """The windows of one block-shuffled epoch: ``(rows, order, sizes)`` each, drawn lazily from ``gen``.

    ``rows`` are the window's row positions (increasing: its blocks in file order), ``order`` a
    permutation of ``range(len(rows))`` cut into batches of ``sizes`` (:func:`epoch_order` on the
    window, with the window's ``strata``). Without shuffling (``gen`` None) blocks and rows keep
    their order. When the blocks fit in one window, this is ``epoch_order(n, ...)`` itself: the
    same rows in the same order as an in-memory epoch.
    """
    n_blocks = -(-n // block_rows)
    if n_blocks <= window_blocks:
        order, sizes = epoch_order(n, batch_size, gen, strata)
        yield np.arange(n), order, sizes
        return
    blocks = gen.randperm(n_blocks) if gen is not None else np.arange(n_blocks)
    for first in range(0, n_blocks, window_blocks):
        chosen = np.sort(blocks[first : first + window_blocks])
        starts = chosen * block_rows
        counts = np.minimum(starts + block_rows, n) - starts
        rows = np.repeat(starts - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())
        order, sizes = epoch_order(len(rows), batch_size, gen, None if strata is None else strata[rows])
        yield rows, order, sizes


class FeatureSource:
    """Features read on demand, a window of rows at a time: a store too large to hold in memory.

    ``data`` is an :class:`~impulses.embed.store.EmbeddingStore` (its HDF5 dataset is read), an
    ``h5py.Dataset``, or any 2-D array-like that slices (a NumPy array or memmap). ``rows`` picks the
    training rows among its rows (a label set's rows in the store; default all); reads are fastest
    when they increase (contiguous runs are one :func:`~impulses.embed.store.read_rows` each). Each
    row is checked for NaN/Inf the first time it is read (a :class:`~impulses.errors.StoreError`
    names the store and the row's id), so a window costs one extra pass over its new rows in the
    first epoch only.
    """

    def __init__(self, data: Any, rows: np.ndarray | None = None) -> None:
        self._store = data if hasattr(data, "ids") else None
        self.data = getattr(data, "embeddings", data)
        if len(self.data.shape) != 2:
            raise ParameterError("X", f"must be 2-D (N, D), got shape {tuple(self.data.shape)}")
        total = int(self.data.shape[0])
        self.rows = None if rows is None else np.asarray(rows, dtype=np.int64).reshape(-1)
        if self.rows is not None and self.rows.size and (self.rows.min() < 0 or self.rows.max() >= total):
            raise ParameterError("rows", f"must index the {total} rows of the features")
        self.shape = (total if self.rows is None else len(self.rows), int(self.data.shape[1]))
        self.ndim = 2
        self.dtype = np.dtype(str(self.data.dtype))
        self.block_rows = _chunk_rows(self.data)
        self._checked = np.zeros(total, dtype=bool)  # rows already seen finite

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: slice) -> np.ndarray:
        """Rows ``key`` (a slice of training positions) in memory, as scoring reads them block by block."""
        if not isinstance(key, slice):
            raise TypeError("a FeatureSource is read by slices of rows")
        positions = np.arange(*key.indices(self.shape[0]))
        return self.read(positions, np.empty((len(positions), self.shape[1]), dtype=self.dtype))

    @property
    def row_bytes(self) -> int:
        """Bytes of one row of features."""
        return self.shape[1] * self.dtype.itemsize

    def read(self, positions: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Rows at ``positions`` (training positions, increasing) into ``out[:len(positions)]``; that view."""
        src = positions if self.rows is None else self.rows[positions]
        view = out[: len(src)]
        if len(src) == 0:
            return view
        direct = hasattr(self.data, "read_direct") and self.dtype == out.dtype
        if not np.all(src[1:] > src[:-1]):  # rows not in store order: read sorted, then place
            by_row = np.argsort(src, kind="stable")
            for lo_i, hi_i, lo, hi in _runs(src[by_row]):
                view[by_row[lo_i:hi_i]] = self.data[lo:hi]
        else:
            for lo_i, hi_i, lo, hi in _runs(src):
                if direct:
                    read_rows(self.data, lo, hi, out, lo_i)
                else:
                    view[lo_i:hi_i] = self.data[lo:hi]
        self._check_finite(src, view)
        return view

    def _check_finite(self, src: np.ndarray, view: np.ndarray) -> None:
        """Raise on the first row read for the first time that holds NaN or Inf."""
        new = ~self._checked[src]
        if not new.any():
            return
        # a slice of rows at a time: checking a whole window at once would copy it (and a boolean
        # mask half its size), the largest allocations of a windowed run after its two buffers
        step = max(1, CHECK_BYTES // max(1, view.shape[1] * view.dtype.itemsize))
        for lo in range(0, len(src), step):
            fresh = new[lo : lo + step]
            if not fresh.any():
                continue
            rows = view[lo : lo + step]
            finite = finite_mask(rows if fresh.all() else rows[fresh])  # float16 by its exponent bits
            if not finite.all():
                row = int(src[lo : lo + step][fresh][np.argmin(finite)])
                name = repr(str(self._store.ids[row])) if self._store is not None else f"at row {row}"
                where = getattr(self._store, "path", "the features")
                raise StoreError(
                    f"{where}: row {name} holds NaN or Inf; fix the features, or leave that row out"
                )
        self._checked[src[new]] = True


CHECK_BYTES = 16 << 20  # rows checked for NaN/Inf at a time (bounds the check's temporary copies)


def _chunk_rows(data: Any) -> int:
    """Rows of one HDF5 chunk of ``data``, else 1 MiB of rows."""
    chunks = getattr(data, "chunks", None)
    if chunks:
        return max(1, int(chunks[0]))
    return max(1, (1 << 20) // (int(data.shape[1]) * np.dtype(str(data.dtype)).itemsize))


def _runs(src: np.ndarray) -> Iterator[tuple[int, int, int, int]]:
    """Runs of consecutive values of increasing ``src``: (first index, end index, first value, end value)."""
    breaks = np.flatnonzero(np.diff(src) != 1) + 1
    bounds = np.concatenate([[0], breaks, [len(src)]])
    for lo_i, hi_i in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        yield lo_i, hi_i, int(src[lo_i]), int(src[hi_i - 1]) + 1


# bytes a window's epoch holds per row and head besides the features: the labels in epoch order, the
# batch statistics per row, the loss coefficients and their heads-major copies, the logits (measured:
# about 54 on a 64-head run, benchmarks/results/outofcore-2g-64heads.json)
WINDOW_BYTES_PER_ROW_AND_HEAD = 64


def window_plan(
    source: FeatureSource, max_memory: int | None, batch_size: int, heads: int = 1
) -> tuple[int, int]:
    """``(block_rows, window_blocks)`` of a run of ``heads`` heads from ``source`` within ``max_memory`` bytes.

    A window takes at most a quarter of ``max_memory`` (two windows, one read while the other trains,
    and half left for the process), counting with each row's features what the window's epoch holds
    for it per head (:data:`WINDOW_BYTES_PER_ROW_AND_HEAD`): a wide sweep gets smaller windows. Without
    a budget, one window holds every row.

    Raises:
        ParameterError: ``max_memory`` is not a positive number of bytes, or too small for a block.
    """
    block_rows = max(source.block_rows, 1)
    n_blocks = -(-source.shape[0] // block_rows)
    if max_memory is None:
        return block_rows, max(n_blocks, 1)
    if isinstance(max_memory, bool) or not isinstance(max_memory, int | np.integer) or max_memory <= 0:
        raise ParameterError("max_memory", f"must be a positive number of bytes, got {max_memory!r}")
    row_bytes = source.row_bytes + max(1, heads) * WINDOW_BYTES_PER_ROW_AND_HEAD
    window_blocks = int(max_memory) // 4 // (block_rows * row_bytes)
    if window_blocks < 1:
        need = 4 * block_rows * row_bytes
        raise ParameterError(
            "max_memory",
            f"is {int(max_memory):,} bytes, too small: a window of one block of {heads} head(s) needs {need:,}",
        )
    return block_rows, window_blocks


def parse_bytes(value: str | int | None) -> int | None:
    """``"2G"``, ``"512M"``, ``"1.5GB"``, ``"100000"`` → bytes (binary units: 1K = 1024); None stays None.

    Raises:
        ParameterError: not a size.
    """
    if value is None or isinstance(value, int):
        return value
    text = str(value).strip().upper().removesuffix("B").removesuffix("I")
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}.get(text[-1:], 1)
    try:
        number = float(text[:-1] if scale > 1 else text)
    except ValueError:
        raise ParameterError("max_memory", f"{value!r} is not a size such as 2G, 512M or 1000000") from None
    if not number > 0 or not math.isfinite(number):
        raise ParameterError("max_memory", f"must be positive, got {value!r}")
    return int(number * scale)


@dataclass
class FitResult:
    """What :func:`fit` leaves: weights (D, K), biases (K,), per-head step/skip counts, the history."""

    W: np.ndarray
    b: np.ndarray
    steps: np.ndarray
    skipped_batches: np.ndarray
    batches_per_epoch: int
    history: list[dict[str, Any]] = field(default_factory=list)
    prefetch: bool = False
    threads: int = 1
    window_rows: int | None = None  # rows per window when read from a store in windows


def fit(
    X: ArrayLike | FeatureSource,
    S: np.ndarray,
    losses: list[HeadLoss],
    seeds: list[int],
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    betas: tuple[float, float],
    eps: float,
    shuffle: bool,
    shuffle_seed: int,
    stratified: bool,
    device: Any,
    feature_dtype: str,
    kernel: str,
    test: tuple[ArrayLike, np.ndarray] | None,
    eval_every: int,
    track_loss: bool,
    threads: int | None,
    prefetch: bool | None,
    on_epoch: Callable[[int, int], None] | None,
    max_memory: int | None = None,
    columns: list[int] | None = None,
) -> FitResult:
    """Train the heads (one column of ``S`` and one loss each) for ``epochs``; inputs are validated.

    ``columns`` maps head k to its label column ``S[:, columns[k]]`` (default: column k), so heads that
    share a label set share one column: the labels take N x label sets, not N x heads (400 MB for
    64 heads on 1.5 million rows).

    ``kernel`` is "fused", "wide" or "torch" (already resolved; ``device`` a torch.device, or a
    :class:`~impulses.runtime.CpuDevice` for the numba kernels, whose runs do not import torch);
    ``threads``/``prefetch`` as documented by :func:`impulses.pu.heads.train_heads`. The torch
    kernel's thread count and denormal flushing are restored afterwards. ``X`` as a :class:`FeatureSource` is read in windows within
    ``max_memory`` bytes (block-shuffled epochs, see the module's docstring); as an array it is
    trained in memory.
    """
    source = X if isinstance(X, FeatureSource) else None
    trainer = Trainer(
        X,
        S,
        losses,
        columns=columns,
        seeds=list(seeds),
        batch_size=batch_size,
        lr=lr,
        betas=betas,
        eps=eps,
        device=device,
        feature_dtype=feature_dtype,
        fused=kernel in ("fused", "wide"),
    )
    trainer.wide = kernel == "wide"
    gen = TorchStream(shuffle_seed) if shuffle else None
    strata = trainer.strata() if stratified else None
    history: list[dict[str, Any]] = []
    if source is not None:
        block_rows, window_blocks = window_plan(source, max_memory, batch_size, heads=len(losses))
    else:
        block_rows, window_blocks = max(trainer.n, 1), 1  # one window: the whole matrix, in memory
    windowed = window_blocks < -(-trainer.n // block_rows)
    flush, flushed, threads_before, kernel_threads = False, None, None, None
    if kernel in ("fused", "wide"):
        from impulses.pu import kernels

        # by default one thread per column block of the gradient (8 for 2048-d features), at most
        # the cores this process may use: more would idle through the backward half of each step
        default = min(available_cpus(), kernels.column_blocks(X.shape[1]))
        if kernel == "wide":  # its work units are rows (logits) and 64-column blocks (gradient)
            default = available_cpus()
        elif windowed:  # the fused kernel reads features as fast as a core copies them: leave the
            # reader thread a core (6 GiB, 2 GiB budget, 2 cores: 4.8 s per 2 epochs, 7.1 s sharing)
            default = max(1, min(default, available_cpus() - 1))
        kernel_threads = kernels.set_threads(threads if threads is not None else default)
        flushed = kernels.flush_denormals(True)  # as the torch kernel does (below)
        prefetch = False
    else:
        import torch

        # Adam's second moments of saturated heads underflow into subnormal floats, which make CPU
        # arithmetic ~30x slower; flushing them to zero changes nothing measurable (|x| < 1.2e-38).
        flush = device.type == "cpu" and torch.set_flush_denormal(True)
        threads_before = torch.get_num_threads()
        if threads is None and batch_size * (X.shape[1] + 1) * len(losses) < SMALL_STEP_MACS:
            threads = 1
        if device.type == "cpu" and threads is not None:
            torch.set_num_threads(max(1, int(threads)))
    if prefetch is None:
        prefetch = device.type == "cpu" and torch.get_num_threads() == 1 and available_cpus() >= 2
    if prefetch:
        trainer._prefetch_pool = ThreadPoolExecutor(1, thread_name_prefix="impulses-prefetch")
    buffers: list[np.ndarray] = []
    reader = ThreadPoolExecutor(1, thread_name_prefix="impulses-read") if windowed else None
    try:
        if source is not None:
            rows_per_window = min(trainer.n, block_rows * window_blocks)
            buffers = [
                np.empty((rows_per_window, trainer.d), dtype=source.dtype) for _ in range(1 + windowed)
            ]
            if not windowed:  # every row fits: read once, train as in memory
                trainer.set_features(source.read(np.arange(trainer.n), buffers[0]))
        test_x = features(test[0], device, feature_dtype) if test is not None else None
        windows = (
            (epoch, window)
            for epoch in range(epochs)
            for window in block_windows(
                trainer.n, batch_size, gen, strata, block_rows=block_rows, window_blocks=window_blocks
            )
        )
        upcoming = next(windows, None)
        pending = reader.submit(source.read, upcoming[1][0], buffers[0]) if reader is not None else None
        slot, loss_sum, loss_count = 0, 0.0, 0.0
        while upcoming is not None:
            epoch, (rows, order, sizes) = upcoming
            if pending is not None:  # this window was read on the reader thread; start on the next one
                trainer.set_features(pending.result())
            upcoming = next(windows, None)
            if reader is not None and upcoming is not None:
                slot = 1 - slot
                pending = reader.submit(source.read, upcoming[1][0], buffers[slot])
            part = trainer.epoch(
                order, sizes, rows=rows if windowed else None, track_loss=track_loss,
                in_order=gen is None and strata is None,
            )  # fmt: skip
            if part is not None:
                loss_sum, loss_count = loss_sum + part[0], loss_count + part[1]
            if upcoming is not None and upcoming[0] == epoch:
                continue
            record: dict[str, Any] = {}
            if track_loss:
                record["train_loss"] = loss_sum / np.maximum(loss_count, 1)
                loss_sum, loss_count = 0.0, 0.0
            last = epoch + 1 == epochs
            if test_x is not None and eval_every > 0 and ((epoch + 1) % eval_every == 0 or last):
                record.update(trainer.evaluate(test_x, test[1]))
            if record:
                history.append({"epoch": epoch + 1, **record})
            if on_epoch is not None:
                on_epoch(epoch + 1, epochs)
    finally:
        if reader is not None:
            reader.shutdown(wait=True, cancel_futures=True)
        if trainer._prefetch_pool is not None:
            trainer._prefetch_pool.shutdown(wait=True, cancel_futures=True)
        if flush:
            torch.set_flush_denormal(False)
        if flushed is False:
            kernels.flush_denormals(False)
        if threads_before is not None and torch.get_num_threads() != threads_before:
            torch.set_num_threads(threads_before)
    W, b = trainer.weights()
    return FitResult(
        W=W,
        b=b,
        steps=as_numpy(trainer.steps).astype(np.int64),
        skipped_batches=as_numpy(trainer.skipped).astype(np.int64),
        batches_per_epoch=trainer.batches_per_epoch,
        history=history,
        prefetch=bool(prefetch),
        threads=kernel_threads or (torch.get_num_threads() if threads is None else threads),
        window_rows=min(trainer.n, block_rows * window_blocks) if windowed else None,
    )


def batch_coefficients(plan: dict[str, Any], sizes: list[int]) -> list[dict[str, Any]]:
    """A plan's (N, K) coefficient matrices (numpy or torch) cut into the epoch's batches: one dict per batch."""
    starts = np.cumsum([0, *sizes]).tolist()
    return [{key: v[a:b] for key, v in plan.items()} for a, b in itertools.pairwise(starts)]


class Trainer:
    """The state of one training run: features, labels, parameters, Adam moments and step buffers.

    Parameters live in one K×(D+1) matrix ``theta`` (row k is head k: D weights, then its bias;
    with heads as rows, MKL's skinny products stay fast for every K — the D×K layout is ~10× slower
    for 2–8 heads — and each head's row is contiguous for the fused kernel). Adam's moments have
    theta's shape; a head's step counter advances only on batches where it learned something (every
    batch for logistic heads; batches with both P and U for PU heads).

    With the numba kernels (``fused``) the state is numpy arrays and an epoch is one call of
    :func:`impulses.pu.kernels.train_epoch` (or ``train_epoch_wide``: ``wide``, set by :func:`fit`);
    torch is not imported. With the torch kernel the state is tensors on ``device``, and a batch is
    gathered (and widened to float32 when X is held narrower) into one (B, D) buffer small enough
    to stay in cache, which the forward and the backward matmul then read; while all heads share
    one step count, Adam is PyTorch's fused kernel on the whole matrix, otherwise a per-head masked
    update. Both compute an epoch's label statistics the same way, in numpy or in torch.
    """

    wide: bool = False

    def __init__(
        self,
        X: ArrayLike | FeatureSource,
        S: np.ndarray,
        losses: list[HeadLoss],
        *,
        columns: list[int] | None = None,
        seeds: list[int],
        batch_size: int,
        lr: float,
        betas: tuple[float, float],
        eps: float,
        device: Any,
        feature_dtype: str,
        fused: bool = False,
    ) -> None:
        self.device, self.feature_dtype = device, feature_dtype
        self.n, self.d = (int(v) for v in X.shape)
        self.use_kernel = fused
        self.X: Any = None  # numpy (numba kernels) or a tensor on the device (torch kernel)
        self.X_kernel = None  # the fused kernels read X in place (float16 as its bits)
        self.k = len(losses)
        self.losses = losses
        self.S_np = np.ascontiguousarray(S, dtype=np.float32)  # label columns (N, C)
        self.columns = np.arange(self.k) if columns is None else np.asarray(columns, dtype=np.int64)
        self.is_pu_np = np.array([get_loss(h.loss).kind == "pu" for h in losses], dtype=np.bool_)
        self.lr, self.betas, self.eps = lr, betas, eps
        theta = np.empty((self.k, self.d + 1), dtype=np.float32)
        for j, seed in enumerate(seeds):
            w, b = linear_init(self.d, seed)
            theta[j, : self.d] = w
            theta[j, self.d] = b[0]
        self.batches_per_epoch = 0
        self.b_max = batch_size + 1
        self._prefetch_pool: ThreadPoolExecutor | None = None  # set by fit when prefetching
        self._cpu_objective: FusedObjective | None = None  # torch's, for loss tracking and evaluation
        if fused:
            self.fused = FusedObjective(losses)  # numpy constants
            self.theta = theta
            self.exp_avg = np.zeros_like(theta)
            self.exp_avg_sq = np.zeros_like(theta)
            self.steps = np.zeros(self.k, dtype=np.float64)
            self.skipped = np.zeros(self.k, dtype=np.float64)
        else:
            self._init_torch(theta)
        if not isinstance(X, FeatureSource):
            self.set_features(X)

    def _init_torch(self, theta: np.ndarray) -> None:
        """The torch kernel's state: parameters, moments and step buffers as tensors on the device."""
        import torch

        device, dt = self.device, torch.float32
        self.dt = dt
        self.x_dtype = x_dtype = getattr(torch, self.feature_dtype)
        self.S = torch.from_numpy(self.S_np).to(device)
        self._columns_t = torch.from_numpy(self.columns).to(device)
        self.fused = FusedObjective(self.losses, device=device)
        self.is_pu = torch.from_numpy(self.is_pu_np).to(device)
        self.theta = torch.from_numpy(theta).to(device)
        self.exp_avg = torch.zeros_like(self.theta)
        self.exp_avg_sq = torch.zeros_like(self.theta)
        self.grad = torch.empty_like(self.theta)
        self.g2 = torch.empty_like(self.theta)
        self.denom = torch.empty_like(self.theta)
        self.upd = torch.empty_like(self.theta)
        self.eps_col = torch.full((self.k, 1), self.eps, dtype=dt, device=device)
        self.steps = torch.zeros(self.k, dtype=torch.float64, device=device)
        self.skipped = torch.zeros(self.k, dtype=torch.float64, device=device)
        # two batch slots: with prefetching, a second thread fills one while the other is computed on
        self.xb = [torch.empty((self.b_max, self.d), dtype=dt, device=device) for _ in range(2)]
        self.xlow = (
            [torch.empty((self.b_max, self.d), dtype=x_dtype, device=device) for _ in range(2)]
            if x_dtype != dt
            else None
        )
        self.bufs = [torch.empty((self.b_max, self.k), dtype=dt, device=device) for _ in range(3)]
        self._views: dict[int, tuple] = {}
        self.use_fused_adam = USE_FUSED_ADAM and hasattr(torch, "_fused_adam_")

    def set_features(self, X: ArrayLike) -> None:
        """The rows the next epochs (or windows) read: X in memory (on the device), and its kernel view."""
        if self.use_kernel:
            from impulses.pu.kernels import kernel_view  # imports numba: only when it is used

            self.X = host_features(X, self.feature_dtype)
            self.X_kernel = kernel_view(self.X)
        else:
            self.X = features(X, self.device, self.feature_dtype)

    def strata(self) -> np.ndarray:
        """Rows labeled positive for any PU head (for any head when there is no PU head)."""
        pu = self.is_pu_np
        cols = self.S_np[:, np.unique(self.columns[pu] if pu.any() else self.columns)]
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
        import torch

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
        self,
        order: np.ndarray,
        sizes: list[int],
        *,
        rows: np.ndarray | None = None,
        track_loss: bool = False,
        in_order: bool = False,
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """One pass over the rows of X in ``order`` (int64), cut into batches of ``sizes``.

        ``rows`` (a window of a larger store) maps X's rows to the label rows (default: the same).
        ``in_order`` says that ``order`` is 0..N-1 (no shuffling): the torch kernel then uses float32
        batches as slices of X in place (or widens them) instead of gathering them.

        Returns:
            With ``track_loss``, per head the sum of its batch objectives over the batches where it
            stepped, and the number of those batches; else None.
        """
        if self.use_kernel:
            return self._epoch_kernel(order, sizes, rows=rows, track_loss=track_loss)
        import torch

        dev, k, nb = self.device, self.k, len(sizes)
        order = torch.from_numpy(np.asarray(order, dtype=np.int64)).to(dev)
        label_rows = order if rows is None else torch.from_numpy(rows).to(dev).index_select(0, order)
        S_ord = self.S.index_select(0, label_rows).index_select(1, self._columns_t)  # (rows, heads)
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
        return self._epoch_torch(order, sizes, plan, valid, vf, t, track_loss=track_loss, in_order=in_order)

    def _epoch_kernel(
        self, order: np.ndarray, sizes: list[int], *, rows: np.ndarray | None, track_loss: bool
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """:meth:`epoch` with the numba kernels: the torch kernel's label statistics, in numpy."""
        k, nb = self.k, len(sizes)
        label_rows = order if rows is None else rows[order]
        S_ord = self.S_np[label_rows][:, self.columns]  # (rows, heads)
        sizes_a = np.asarray(sizes, dtype=np.int64)
        at_ends = np.cumsum(S_ord, axis=0, dtype=np.float64)[np.cumsum(sizes_a) - 1]
        n_p = np.diff(at_ends, axis=0, prepend=np.zeros((1, k)))
        n_u = sizes_a[:, None] - n_p
        valid = ~self.is_pu_np | ((n_p > 0) & (n_u > 0))
        vf = valid.astype(np.float64)
        t = self.steps + vf.cumsum(0)  # each head's Adam step count after each batch
        self.steps = t[-1].copy()
        self.skipped += (1 - vf).sum(0)
        self.batches_per_epoch = nb

        batch_of_row = np.repeat(np.arange(nb), sizes_a)
        inv_p = np.where(valid, 1 / np.maximum(n_p, 1), 0.0).astype(np.float32)[batch_of_row]
        inv_u = np.where(valid, 1 / np.maximum(n_u, 1), 0.0).astype(np.float32)[batch_of_row]
        inv_b = (1 / sizes_a).astype(np.float32)[batch_of_row, None]
        plan = self.fused.plan(S_ord, inv_p, inv_u, inv_b, objective=track_loss)
        z = self._epoch_fused(order, sizes, plan, valid, t)
        if not track_loss:
            return None
        import torch

        objective = self.cpu_objective()
        zs = torch.split(torch.from_numpy(z).t(), sizes)
        coefs = batch_coefficients({key: torch.from_numpy(v) for key, v in plan.items()}, sizes)
        objectives = [objective.objective(zs[j], coefs[j]) for j in range(nb)]
        loss_sum = torch.cat(objectives).double().mul(torch.from_numpy(vf)).sum(0)
        return loss_sum.numpy(), vf.sum(0)

    def cpu_objective(self) -> FusedObjective:
        """The heads' objective on CPU tensors (the numba kernels' runs make it when they need it)."""
        if self._cpu_objective is None:
            import torch

            self._cpu_objective = FusedObjective(self.losses, device=torch.device("cpu"))
        return self._cpu_objective

    def _epoch_fused(
        self, order: np.ndarray, sizes: list[int], plan: dict, valid: np.ndarray, t: np.ndarray
    ) -> np.ndarray:
        """The epoch as one call of the fused kernel (:func:`impulses.pu.kernels.train_epoch`); the logits (K, N)."""
        from impulses.pu.kernels import train_epoch, train_epoch_wide

        run = train_epoch_wide if self.wide else train_epoch

        beta1, beta2 = self.betas
        zeros = None
        coefficients = {}
        for key in ("r", "normal", "corrected", "u", "neg_v"):  # heads-major (K, N): contiguous per head
            if key in plan:
                coefficients[key] = np.ascontiguousarray(plan[key].T)
            else:
                zeros = zeros if zeros is not None else np.zeros((self.k, len(order)), dtype=np.float32)
                coefficients[key] = zeros
        z = np.zeros((self.k, len(order)), dtype=np.float32)  # batches no head learns from stay 0
        with np.errstate(divide="ignore"):  # t = 0 (a head that has not stepped yet): unused
            step_size = (self.lr / (1 - beta1**t)).astype(np.float32)
        run(
            self.X_kernel,
            np.ascontiguousarray(order, dtype=np.int64),
            sizes,
            self.theta,
            self.exp_avg,
            self.exp_avg_sq,
            coefficients,
            is_pu=self.is_pu_np,
            neg_beta=np.ascontiguousarray(self.fused.neg_beta[0]),
            valid=valid,
            step_size=step_size,
            bc2_sqrt=np.sqrt(np.maximum(1 - beta2**t, 1e-300)).astype(np.float32),
            betas=self.betas,
            eps=self.eps,
            z=z,
            logistic=np.array(self.fused.logistic, dtype=np.bool_),
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
        """Run the epoch as PyTorch ops per step.

        Each step gathers the batch into a buffer, then addmm, closed-form gradient, mm, Adam (the
        fused kernel where all heads share a step count).
        """
        import torch

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
        return loss_sum[0].cpu().numpy(), vf.sum(0).cpu().numpy()

    def _adam_rows(self, valid: torch.Tensor, vf: torch.Tensor, t: torch.Tensor) -> list[list[torch.Tensor]]:
        """Per-batch (K, 1) columns of the masked Adam update: moment weights, step sizes, bias corrections."""
        import torch

        beta1, beta2 = self.betas
        step_size = torch.where(valid, self.lr / (1 - beta1**t), 0.0)
        inv_bc2_sqrt = torch.where(t > 0, 1 / (1 - beta2**t).clamp(min=1e-300).sqrt(), 1.0)
        values = ((1 - beta1) * vf, (1 - beta2) * vf, step_size, inv_bc2_sqrt)
        return [list(x.to(self.dt).unsqueeze(2).unbind(0)) for x in values]

    def _adam_masked(self, rows: list[list[torch.Tensor]], j: int) -> None:
        """torch.optim.Adam's update per head; weight = step = 0 leaves a skipped head untouched."""
        import torch

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
        import torch

        from impulses.pu.metrics import fast_auc

        theta = torch.from_numpy(self.theta) if self.use_kernel else self.theta
        fused = self.cpu_objective() if self.use_kernel else self.fused
        dt = torch.float32
        z = torch.addmm(theta[:, self.d], X_test.to(dt), theta[:, : self.d].t())
        yt = torch.as_tensor(y, dtype=dt, device=z.device).unsqueeze(1).expand_as(z)
        n_p = yt.sum(0, keepdim=True)
        n_u = yt.shape[0] - n_p
        inv_p = torch.where(n_p > 0, 1 / n_p.clamp(min=1), 0.0).expand_as(z)
        inv_u = torch.where(n_u > 0, 1 / n_u.clamp(min=1), 0.0).expand_as(z)
        inv_b = torch.full((z.shape[0], 1), 1 / z.shape[0], dtype=dt, device=z.device)
        test_loss = fused.objective(z, fused.plan(yt, inv_p, inv_u, inv_b, objective=True))[0]
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
        """The heads' weights (D, K) and biases (K,) as float32 numpy arrays."""
        theta = as_numpy(self.theta).astype(np.float32, copy=False)
        return theta[:, : self.d].T.copy(), theta[:, self.d].copy()
