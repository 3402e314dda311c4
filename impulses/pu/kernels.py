"""The fused CPU kernel of the head trainer: a whole epoch of K linear heads in compiled code (numba).

A shuffled batch is B rows scattered over a feature matrix far larger than the caches. Made of
PyTorch ops, a step must copy those rows into a buffer (and widen float16 to float32 in a second
pass) before its matmuls read the buffer again, and each step pays a dozen Python-level op calls;
on a CPU both are most of the step. This kernel runs an epoch's steps without returning to
Python: the logits read each scattered row where it lies, widen it in registers (F16C) and
multiply it with every head's weights; the loss gradient w.r.t. the logits uses the coefficients
:meth:`impulses.pu.losses.FusedObjective.plan` computed for the epoch; the weight gradient
re-reads the batch's rows (by then in cache) one block of columns at a time, and Adam updates that
block at once. The logits and the column blocks are spread over threads.

**Arithmetic that does not depend on the machine's cores or on the other heads.** Each (row, head)
logit is one thread's whole dot product, computed by the same compiled loop; each gradient element
is summed over the batch's rows in batch order; R_n (which decides a head's nnPU branch) is summed
in row order without fastmath. So a run's weights are the same bit for bit with 1 or 16 threads,
head k's weights do not depend on which heads train beside it, and float16 features give exactly
the float32 features' numbers (every float16 is a float32, widened before the same loop). The dot
products are vectorised (``reassoc``) and σ and Adam are numba's, so the kernel rounds differently
from the torch kernel's matmuls, by float32 rounding (tested against it and against autograd).
"""

from __future__ import annotations

import os
import platform
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from impulses.errors import ParameterError
from impulses.runtime import numba_cache_dir

# Neither this folder nor HOME writable: numba caches in a temporary folder, or ("") not at all.
_CACHE_DIR = numba_cache_dir(Path(__file__).parent)
if _CACHE_DIR:
    os.environ["NUMBA_CACHE_DIR"] = _CACHE_DIR


def _others_running() -> int | None:
    """Threads of other processes runnable right now (Linux: /proc/loadavg less this process's), or None."""

    def ours() -> int:  # this process's threads that are running (numpy's BLAS threads spin a while)
        count = 0
        for task in Path("/proc/self/task").iterdir():
            try:
                count += (task / "stat").read_text().rsplit(")", 1)[1].split()[0] == "R"
            except (OSError, IndexError):
                continue
        return count

    readings = []
    try:  # the least of three readings 1 ms apart: a thread that runs for an instant is not other work
        for _ in range(3):
            readings.append(max(0, int(Path("/proc/loadavg").read_text().split()[3].split("/")[0]) - ours()))
            time.sleep(0.001)
    except (OSError, ValueError, IndexError):
        return None
    return min(readings)


def _choose_wait_policy() -> str | None:
    """How kernel threads that reach a barrier early wait, set before OpenMP starts (unless the user chose).

    A one-head epoch has two parallel loops per batch, so a run passes ~26,000 barriers. On an idle
    machine OpenMP's default (spin ~300,000 times, then sleep) is fastest: a sleeping thread's wake-up
    costs a core's exit from its idle state. Where other work holds the cores, a spinning thread
    waits for one that is not scheduled, so they sleep at once (PASSIVE). Measured on 2 cores, one
    head, 33,000 x 2048: idle, 100 epochs: spin 1.3-1.6 s, sleep 2.5-2.9 s (one thread 2.3 s); two
    busy processes beside it, 10 epochs: sleep 0.24-0.86 s, bounded spin 1.5 s, spin without end
    0.6-1.0 s (benchmarks/bench_wait_policy.py, results/numba-wait-policy*.json). Returns the policy
    set, None when left to OpenMP.
    """
    if "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ:
        return None
    others = _others_running()
    if others is None or others > 0:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        return "PASSIVE"
    return None


WAIT_POLICY = _choose_wait_policy()

try:
    import numba
    from llvmlite import ir
    from numba import njit, prange, types
    from numba.core import cgutils
    from numba.core.extending import intrinsic, overload
except ImportError:  # pragma: no cover - numba is a declared dependency; the trainer falls back
    AVAILABLE = False
else:
    AVAILABLE = True
    if _CACHE_DIR:  # numba may have read its config before this module set the variable
        numba.config.CACHE_DIR = _CACHE_DIR

COLUMN_BLOCK = 256  # columns of the gradient one thread accumulates at a time (1 KiB per head)
FASTMATH = {"reassoc", "contract"}  # vectorised dot products and FMAs; NaN/inf still propagate

# numba's default threading layer without TBB or OpenMP (workqueue) aborts the process when two
# Python threads launch parallel kernels at once; one lock makes concurrent trainers take turns.
_LAUNCH = threading.Lock()

if AVAILABLE:

    @intrinsic
    def _half_to_float(typingctx, bits):
        """The float32 value of an IEEE half given as its 16 bits (vcvtph2ps where the CPU has F16C)."""
        sig = types.float32(types.uint16)

        def codegen(context, builder, signature, args):
            return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())

        return sig, codegen

    def _widen(value):  # pragma: no cover - replaced by the overload below inside compiled code
        raise NotImplementedError

    @overload(_widen, inline="always")
    def _widen_impl(value):
        """float16 features arrive as their uint16 bits; float32 ones as they are."""
        if value == types.uint16:
            return lambda value: _half_to_float(value)
        return lambda value: value

    @njit(nogil=True, fastmath=FASTMATH, boundscheck=False, inline="always")
    def _column_block_gradient(X, rows, g_k, lo, hi, acc):  # pragma: no cover - compiled
        """Set acc = Σ_i g_k[i]·X[rows[i], lo:hi] in row order; return Σ_i g_k[i] (the bias gradient)."""
        acc[:] = 0.0
        bias = np.float32(0.0)
        for i in range(rows.shape[0]):
            x = X[rows[i], lo:hi]  # 1-D views: this loop vectorises (2-D indexing did not)
            gi = g_k[i]
            for d in range(hi - lo):
                acc[d] += gi * _widen(x[d])
            bias += gi  # in row order too: this loop is not the vectorised one
        return bias

    @njit(nogil=True, fastmath=FASTMATH, boundscheck=False, inline="always")
    def _adam(param, exp_avg, exp_avg_sq, grad, step_size, bc2_sqrt, beta1, beta2, eps):  # pragma: no cover
        """torch.optim.Adam's update of one slice (lerp first moment, then param −= step·m/(√v/√bc2 + ε))."""
        one = np.float32(1.0)  # float32 throughout (an int literal would promote to float64)
        for d in range(param.shape[0]):
            gd = grad[d]
            exp_avg[d] += (one - beta1) * (gd - exp_avg[d])
            exp_avg_sq[d] = exp_avg_sq[d] * beta2 + (one - beta2) * gd * gd
            param[d] -= step_size * exp_avg[d] / (np.sqrt(exp_avg_sq[d]) / bc2_sqrt + eps)

    @njit(nogil=True, boundscheck=False)
    def _logit_gradient(z, r, normal, corrected, u, neg_v, is_pu, logistic, neg_beta, g):  # pragma: no cover
        """dObjective/dlogits of one head on one batch (FusedObjective.grad), strictly in row order.

        No fastmath here: R_n's sum is not reordered, so the branch a head takes cannot depend on
        how the compiler vectorised it. ``logistic``: a PU head with the logistic surrogate (R_n sums
        r·softplus(z); the gradient is coefficient·σ, plus ``neg_v`` in the uncorrected branch).
        """
        one = np.float32(1.0)
        zero = np.float32(0.0)
        if is_pu:
            r_n = np.float32(0.0)
            for i in range(z.shape[0]):
                if logistic:  # softplus(z), computed without overflow
                    loss = max(z[i], zero) + np.log1p(np.exp(-abs(z[i])))
                else:
                    loss = one / (one + np.exp(-z[i]))
                r_n += loss * r[i]
            correct = r_n < neg_beta
            coef = corrected if correct else normal
            for i in range(z.shape[0]):
                p = one / (one + np.exp(-z[i]))
                if logistic:
                    g[i] = coef[i] * p + (zero if correct else neg_v[i])
                else:
                    g[i] = coef[i] * (one - p) * p
        else:
            for i in range(z.shape[0]):
                g[i] = neg_v[i] + one / (one + np.exp(-z[i])) * u[i]

    @njit(parallel=True, nogil=True, fastmath=FASTMATH, boundscheck=False, cache=_CACHE_DIR != "")
    def _epoch(X, rows, starts, theta, exp_avg, exp_avg_sq, r, normal, corrected, u, neg_v, is_pu, logistic,
               neg_beta, valid, step_size, bc2_sqrt, beta1, beta2, eps, z, g, scratch):  # fmt: skip  # pragma: no cover
        dim, heads = X.shape[1], theta.shape[0]
        bias_grad = np.empty((heads, 1), dtype=np.float32)
        for j in range(starts.shape[0] - 1):
            b0, b1 = starts[j], starts[j + 1]
            if not valid[j].any():  # no head learns from this batch
                continue
            batch = rows[b0:b1]
            for i in prange(b1 - b0):  # logits: one (row, head) dot product per thread at a time
                x = X[batch[i]]
                for k in range(heads):
                    w = theta[k]
                    dot = np.float32(0.0)
                    for d in range(dim):
                        dot += _widen(x[d]) * w[d]
                    z[k, b0 + i] = dot + w[dim]
            for k in range(heads):
                if valid[j, k]:
                    _logit_gradient(
                        z[k, b0:b1], r[k, b0:b1], normal[k, b0:b1], corrected[k, b0:b1], u[k, b0:b1],
                        neg_v[k, b0:b1], is_pu[k], logistic[k], neg_beta[k], g[k, : b1 - b0],
                    )  # fmt: skip
            for blk in prange(scratch.shape[0]):  # gradient and Adam, one column block per thread
                lo = blk * COLUMN_BLOCK
                hi = min(dim, lo + COLUMN_BLOCK)
                acc = scratch[blk, : hi - lo]
                for k in range(heads):
                    if not valid[j, k]:
                        continue
                    bias = _column_block_gradient(X, batch, g[k, : b1 - b0], lo, hi, acc)
                    a, c = step_size[j, k], bc2_sqrt[j, k]
                    _adam(
                        theta[k, lo:hi], exp_avg[k, lo:hi], exp_avg_sq[k, lo:hi], acc, a, c, beta1, beta2, eps
                    )
                    if blk == 0:
                        bias_grad[k, 0] = bias
                        _adam(theta[k, dim:], exp_avg[k, dim:], exp_avg_sq[k, dim:], bias_grad[k], a, c,
                              beta1, beta2, eps)  # fmt: skip

    @njit(nogil=True, boundscheck=False, cache=_CACHE_DIR != "")
    def _fisher_yates(draws, out):  # pragma: no cover - compiled
        """torch.randperm's shuffle for n < 2³²/20: out[i] <-> out[i + draws[i] % (n − i)], i = 0 … n−2."""
        n = out.shape[0]
        for i in range(n):
            out[i] = i
        for i in range(n - 1):
            j = i + np.int64(draws[i] % np.uint64(n - i))
            out[i], out[j] = out[j], out[i]

    @njit(nogil=True, boundscheck=False, cache=_CACHE_DIR != "")
    def _inside_out(draws, out):  # pragma: no cover - compiled
        """torch.randperm's shuffle from 2³²/20 rows on: out[i] = i, then out[i] <-> out[draws[i] % (i + 1)]."""
        for i in range(out.shape[0]):
            j = np.int64(draws[i] % np.uint64(i + 1))
            out[i] = i
            out[i] = out[j]
            out[j] = i

    @njit(nogil=True, boundscheck=False, cache=_CACHE_DIR != "")
    def _widen_into(bits, out):  # pragma: no cover - compiled
        """out[i] = the float32 value of the half whose bits are bits[i] (1-D, F16C)."""
        for i in range(bits.shape[0]):
            out[i] = _half_to_float(bits[i])

    @intrinsic
    def _swap_mxcsr(typingctx, value):
        """Load ``value`` into this thread's SSE control register (MXCSR); return what it held."""
        sig = types.uint32(types.uint32)

        def codegen(context, builder, signature, args):
            byte_ptr = ir.IntType(8).as_pointer()
            slot = cgutils.alloca_once(builder, ir.IntType(32))
            fnty = ir.FunctionType(ir.VoidType(), [byte_ptr])
            store = cgutils.get_or_insert_function(builder.module, fnty, "llvm.x86.sse.stmxcsr")
            load = cgutils.get_or_insert_function(builder.module, fnty, "llvm.x86.sse.ldmxcsr")
            ptr = builder.bitcast(slot, byte_ptr)
            builder.call(store, [ptr])
            old = builder.load(slot)
            builder.store(args[0], slot)
            builder.call(load, [ptr])
            return old

        return sig, codegen

    @njit(nogil=True, cache=_CACHE_DIR != "")
    def _set_mxcsr_bits(bits, on):  # pragma: no cover - compiled
        """Set (``on``) or clear ``bits`` of MXCSR; return the previous register."""
        old = _swap_mxcsr(np.uint32(0x1F80))  # a valid value while reading the current one
        _swap_mxcsr((old | bits) if on else (old & ~bits))
        return old


def shuffle_like_torch(draws: np.ndarray, n: int, *, wide: bool) -> np.ndarray:
    """The permutation torch.randperm(n) makes from its generator's ``draws`` (uint64; see impulses.pu.generator).

    ``wide``: the draws are 64-bit (torch's algorithm for n of 2³²/20 and more), else 32-bit. Compiled
    with numba where it is present (33,000 rows: ~0.1 ms), else a Python loop (~20 ms).
    """
    out = np.empty(n, dtype=np.int64)
    if AVAILABLE:
        (_inside_out if wide else _fisher_yates)(draws, out)
        return out
    out[:] = np.arange(n)
    for i in range(n) if wide else range(n - 1):
        if wide:
            j = int(draws[i] % (i + 1))
            out[i], out[j] = out[j], i
        else:
            j = i + int(draws[i] % (n - i))
            out[i], out[j] = out[j], out[i]
    return out


def widen_half(X: np.ndarray, out: np.ndarray) -> np.ndarray:
    """float16 X (N, D) into float32 ``out[:N]``, exactly (F16C); that view.

    numpy casts float16 on a slow path (10,000 x 2048 embeddings, half of them subnormal halves:
    0.09 s); this takes 4 ms.
    """
    view = out[: len(X)]
    _widen_into(np.ascontiguousarray(X).view(np.uint16).reshape(-1), view.reshape(-1))
    return view


FLUSH_BITS = 0x8040  # MXCSR's flush-to-zero (bit 15) and denormals-are-zero (bit 6)


def flush_denormals(on: bool) -> bool | None:
    """Flush subnormal floats to zero on this thread (``on``) or stop; whether it was on before.

    What ``torch.set_flush_denormal`` does, without torch: Adam's second moments of saturated heads
    underflow into subnormal floats, which make CPU arithmetic ~30x slower (one head, 100 epochs of
    33,000 x 2048: 2.5 s without, 1.4 s with). None (and nothing done) off x86-64 or without numba.
    """
    if not AVAILABLE or platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    return bool(_set_mxcsr_bits(np.uint32(FLUSH_BITS), on) & FLUSH_BITS == FLUSH_BITS)


def kernel_view(X: np.ndarray) -> np.ndarray:
    """The array the kernels read for features X: float16 as its uint16 bits, float32 as is."""
    if X.dtype == np.float16:
        return X.view(np.uint16)
    if X.dtype != np.float32:
        raise TypeError(f"the fused kernels read float16 or float32 features, not {X.dtype}")
    return X


def train_epoch(
    X: np.ndarray,
    rows: np.ndarray,
    sizes: list[int],
    theta: np.ndarray,
    exp_avg: np.ndarray,
    exp_avg_sq: np.ndarray,
    coefficients: dict[str, np.ndarray],
    is_pu: np.ndarray,
    neg_beta: np.ndarray,
    valid: np.ndarray,
    step_size: np.ndarray,
    bc2_sqrt: np.ndarray,
    betas: tuple[float, float],
    eps: float,
    z: np.ndarray,
    logistic: np.ndarray | None = None,
) -> None:
    """One epoch of Adam steps for K linear heads, each batch read from X where its rows lie.

    ``X`` is a :func:`kernel_view` (N, D); the epoch's batches are ``rows`` (int64, epoch order) cut
    into ``sizes``. ``theta``, ``exp_avg``, ``exp_avg_sq`` (K, D+1) float32 are updated in place.
    ``coefficients`` holds FusedObjective.plan's ``r``, ``normal``, ``corrected``, ``u``, ``neg_v``
    as (K, N) float32 in epoch order (zeros where a head's kind does not use one); ``is_pu`` (K,)
    bool, ``neg_beta`` (K,) the correction threshold −β. Per batch j and head k: ``valid`` says
    whether the head steps, ``step_size`` = lr/(1 − β₁ᵗ) and ``bc2_sqrt`` = √(1 − β₂ᵗ) at its step
    count t. ``z`` (K, N) float32 receives every row's logits as computed at its step. ``logistic``
    (K,) bool marks PU heads with the logistic surrogate (default: none; their ``normal`` and
    ``neg_v`` are FusedObjective.plan's r + rp and −rp).
    """
    heads, dim = theta.shape[0], X.shape[1]
    starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    g = np.empty((heads, max(sizes)), dtype=np.float32)
    scratch = np.empty((column_blocks(dim), COLUMN_BLOCK), dtype=np.float32)
    c = coefficients
    f32 = np.float32
    with _LAUNCH:
        _epoch(
            X, rows, starts, theta, exp_avg, exp_avg_sq, c["r"], c["normal"], c["corrected"], c["u"],
            c["neg_v"], is_pu, _logistic_flags(logistic, heads), neg_beta, valid, step_size, bc2_sqrt,
            f32(betas[0]), f32(betas[1]), f32(eps), z, g, scratch,
        )  # fmt: skip


def _logistic_flags(logistic: np.ndarray | None, heads: int) -> np.ndarray:
    """Per head: a PU head with the logistic surrogate, as the kernels' (K,) bool array."""
    if logistic is None:
        return np.zeros(heads, dtype=np.bool_)
    return np.ascontiguousarray(logistic, dtype=np.bool_)


def column_blocks(dim: int) -> int:
    """How many column blocks (units of work of the gradient half of a step) D features make."""
    return max(1, -(-dim // COLUMN_BLOCK))


def set_threads(n: int) -> int:
    """Threads the kernels use from this Python thread (at most numba's pool); returns the number set."""
    import numba

    n = max(1, min(int(n), numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(n)
    return n


# up to this many heads the fused kernel beats the wide one (benchmarks/bench_head_kernels.py, quiet
# 2-core machine, 33,000 x 2048 float16, per 100 epochs: 1 head 1.34 s vs 2.61 s, 2 heads 2.00 vs
# 2.64, 4 heads 3.11 vs 2.81, 12 heads 6.86 vs 4.68, 64 heads 33.4 vs 17.8; results/head_kernels.json)
FUSED_MAX_HEADS = 2
KERNELS = ("auto", "fused", "torch", "wide")


def check_kernel(kernel: str, device: Any) -> None:
    """Refuse a ``kernel`` that cannot run on ``device`` (a torch.device), before any work.

    Raises:
        ParameterError: ``kernel`` is not one of :data:`KERNELS`, or is "fused" or "wide" (numba
            kernels) on a non-CPU device or without numba.
    """
    if kernel not in KERNELS:
        raise ParameterError("kernel", f"must be one of {', '.join(KERNELS)}, got {kernel!r}")
    if kernel not in ("fused", "wide"):
        return
    if device.type != "cpu":
        raise ParameterError(
            "kernel", f"{kernel} runs on the CPU, not {device}: use the torch kernel or the CPU"
        )
    if not AVAILABLE:
        raise ParameterError("kernel", f"{kernel} needs numba (pip install numba)")


def resolve_kernel(kernel: str, device: Any, n_heads: int) -> str:
    """The step kernel a run uses (``fused``, ``wide`` or ``torch``).

    ``auto`` picks, on a CPU with numba, fused for up to FUSED_MAX_HEADS heads and wide for more;
    torch otherwise (and on CUDA).
    """
    check_kernel(kernel, device)
    if kernel == "auto":
        if device.type != "cpu" or not AVAILABLE:
            return "torch"
        return "fused" if n_heads <= FUSED_MAX_HEADS else "wide"
    return kernel


# ---------------------------------------------------------------------------------------------
# the wide kernel: many heads, register tiles of 4 x 4
# ---------------------------------------------------------------------------------------------
# Wide sweeps are arithmetic-bound: 64 heads on a batch are 2 x 256 x 2048 x 64 multiply-adds, and
# the fused kernel above does each (row, head) dot product alone, reading its row and its weights
# once per product (about 40 GFLOP/s on a core). The wide kernel computes 4 rows x 4 heads at once:
# 16 dot products that share their loads stay in registers (the compiler vectorises the 16
# reductions of one loop), about 100 GFLOP/s on a core. The weight gradient, a sum over the batch's
# rows, needs the batch transposed (columns contiguous over rows): while its logits are computed, each
# group of four rows is packed into a (D, B) float16/float32 copy, 4 values per 64-bit store, and the
# gradient is then the same 4 x 4 tile of reductions over rows. Per head the arithmetic is the fused
# kernel's up to summation order (float32 rounding, ~1e-7 relative per step); logits, the nnPU branch,
# skipped heads and Adam are the fused kernel's functions.
WIDE_COLUMN_BLOCK = 64  # gradient columns per unit of parallel work (32 units for 2048-d features)

if AVAILABLE:

    @njit(nogil=True, fastmath=FASTMATH, boundscheck=False, inline="always")
    def _dots_4x4(a0, a1, a2, a3, b0, b1, b2, b3, n):  # pragma: no cover - compiled
        """The 16 dot products a_r · b_h over the first n entries (a: features, widened; b: float32)."""
        s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = np.float32(0.0)
        s20 = s21 = s22 = s23 = s30 = s31 = s32 = s33 = np.float32(0.0)
        for d in range(n):
            x0, x1, x2, x3 = _widen(a0[d]), _widen(a1[d]), _widen(a2[d]), _widen(a3[d])
            w0, w1, w2, w3 = b0[d], b1[d], b2[d], b3[d]
            s00 += x0 * w0
            s01 += x0 * w1
            s02 += x0 * w2
            s03 += x0 * w3
            s10 += x1 * w0
            s11 += x1 * w1
            s12 += x1 * w2
            s13 += x1 * w3
            s20 += x2 * w0
            s21 += x2 * w1
            s22 += x2 * w2
            s23 += x2 * w3
            s30 += x3 * w0
            s31 += x3 * w1
            s32 += x3 * w2
            s33 += x3 * w3
        return (s00, s01, s02, s03, s10, s11, s12, s13, s20, s21, s22, s23, s30, s31, s32, s33)

    def _pack_rows(x0, x1, x2, x3, out, q):  # pragma: no cover - replaced by the overload below
        raise NotImplementedError

    @overload(_pack_rows, inline="always")
    def _pack_rows_impl(x0, x1, x2, x3, out, q):
        """Pack rows x0..x3 (feature bits) into 64-bit words of the transposed batch ``out`` (D, ·).

        Row 4q + r's column d lands at entry (d, 4q + r) of the transposed batch.
        """
        if x0.dtype == types.uint16:  # float16 bits: four rows per word

            def pack16(x0, x1, x2, x3, out, q):
                for d in range(x0.shape[0]):
                    out[d, q] = (
                        np.uint64(x0[d])
                        | (np.uint64(x1[d]) << np.uint64(16))
                        | (np.uint64(x2[d]) << np.uint64(32))
                        | (np.uint64(x3[d]) << np.uint64(48))
                    )

            return pack16

        def pack32(x0, x1, x2, x3, out, q):  # float32 bits: two rows per word
            for d in range(x0.shape[0]):
                out[d, 2 * q] = np.uint64(x0[d]) | (np.uint64(x1[d]) << np.uint64(32))
                out[d, 2 * q + 1] = np.uint64(x2[d]) | (np.uint64(x3[d]) << np.uint64(32))

        return pack32

    @njit(nogil=True, boundscheck=False)
    def _ordered_sum(g):  # pragma: no cover - compiled
        """Σ g in index order (no fastmath: the fused kernel's bias gradient, bit for bit)."""
        total = np.float32(0.0)
        for i in range(g.shape[0]):
            total += g[i]
        return total

    # error_model numpy: no zero-division checks (no denominator here can be 0), so Adam vectorises
    @njit(parallel=True, nogil=True, fastmath=FASTMATH, boundscheck=False, cache=True, error_model="numpy")
    def _wide_epoch(X, bits, rows, starts, theta, exp_avg, exp_avg_sq, r, normal, corrected, u, neg_v,
                    is_pu, logistic, neg_beta, valid, step_size, bc2_sqrt, beta1, beta2, eps, z, g, xt, xt_words,
                    scratch, active, bias_grad):  # fmt: skip  # pragma: no cover
        dim, heads = X.shape[1], theta.shape[0]
        blocks = scratch.shape[0]
        for j in range(starts.shape[0] - 1):
            b0, b1 = starts[j], starts[j + 1]
            nb = b1 - b0
            n_act = 0
            for k in range(heads):
                if valid[j, k]:
                    active[n_act] = k
                    n_act += 1
            if n_act == 0:  # no head learns from this batch
                continue
            batch = rows[b0:b1]
            # logits, 4 rows x 4 heads at a time (a short last tile repeats its last row / head), and
            # the batch transposed for the gradient, 4 rows per 64-bit word
            for q in prange((nb + 3) // 4):
                i0, i1, i2, i3 = 4 * q, min(4 * q + 1, nb - 1), min(4 * q + 2, nb - 1), min(4 * q + 3, nb - 1)
                x0, x1, x2, x3 = X[batch[i0]], X[batch[i1]], X[batch[i2]], X[batch[i3]]
                _pack_rows(bits[batch[i0]], bits[batch[i1]], bits[batch[i2]], bits[batch[i3]], xt_words, q)
                for t in range(0, n_act, 4):
                    k0, k1 = active[t], active[min(t + 1, n_act - 1)]
                    k2, k3 = active[min(t + 2, n_act - 1)], active[min(t + 3, n_act - 1)]
                    s = _dots_4x4(x0, x1, x2, x3, theta[k0], theta[k1], theta[k2], theta[k3], dim)
                    ks, rs = (k0, k1, k2, k3), (i0, i1, i2, i3)
                    for h in range(4):
                        bias = theta[ks[h], dim]
                        for q_row in range(4):
                            z[ks[h], b0 + rs[q_row]] = s[4 * q_row + h] + bias
            for t in prange(n_act):  # dObjective/dlogits and the bias gradient, one head per thread
                k = active[t]
                _logit_gradient(
                    z[k, b0:b1], r[k, b0:b1], normal[k, b0:b1], corrected[k, b0:b1], u[k, b0:b1],
                    neg_v[k, b0:b1], is_pu[k], logistic[k], neg_beta[k], g[k, :nb],
                )  # fmt: skip
                bias_grad[k, 0] = _ordered_sum(g[k, :nb])
            for blk in prange(blocks):  # weight gradient (4 columns x 4 heads at a time) and Adam
                lo = blk * WIDE_COLUMN_BLOCK
                hi = min(dim, lo + WIDE_COLUMN_BLOCK)
                acc = scratch[blk]
                for t in range(0, n_act, 4):
                    k0, k1 = active[t], active[min(t + 1, n_act - 1)]
                    k2, k3 = active[min(t + 2, n_act - 1)], active[min(t + 3, n_act - 1)]
                    for d in range(lo, hi, 4):
                        d1, d2, d3 = min(d + 1, hi - 1), min(d + 2, hi - 1), min(d + 3, hi - 1)
                        s = _dots_4x4(xt[d], xt[d1], xt[d2], xt[d3], g[k0], g[k1], g[k2], g[k3], nb)
                        ds = (d, d1, d2, d3)
                        for c in range(4):
                            for h in range(4):
                                acc[h, ds[c] - lo] = s[4 * c + h]
                    for h in range(min(4, n_act - t)):  # each head once (a short tile repeats its last)
                        k = active[t + h]
                        _adam(
                            theta[k, lo:hi], exp_avg[k, lo:hi], exp_avg_sq[k, lo:hi], acc[h, : hi - lo],
                            step_size[j, k], bc2_sqrt[j, k], beta1, beta2, eps,
                        )  # fmt: skip
            for t in range(n_act):
                k = active[t]
                _adam(theta[k, dim:], exp_avg[k, dim:], exp_avg_sq[k, dim:], bias_grad[k], step_size[j, k],
                      bc2_sqrt[j, k], beta1, beta2, eps)  # fmt: skip


def train_epoch_wide(
    X: np.ndarray,
    rows: np.ndarray,
    sizes: list[int],
    theta: np.ndarray,
    exp_avg: np.ndarray,
    exp_avg_sq: np.ndarray,
    coefficients: dict[str, np.ndarray],
    is_pu: np.ndarray,
    neg_beta: np.ndarray,
    valid: np.ndarray,
    step_size: np.ndarray,
    bc2_sqrt: np.ndarray,
    betas: tuple[float, float],
    eps: float,
    z: np.ndarray,
    logistic: np.ndarray | None = None,
) -> None:
    """:func:`train_epoch` with the wide kernel (4 x 4 register tiles of rows/columns and heads).

    Same arguments and effect as :func:`train_epoch`; faster from four heads on, and each head's
    weights equal the fused kernel's to float32 rounding (summation order), not bit for bit.
    """
    heads, dim = theta.shape[0], X.shape[1]
    starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    b_max = max(sizes)
    b_pad = -(-b_max // 4) * 4
    g = np.zeros((heads, b_max), dtype=np.float32)
    xt = np.zeros((dim, b_pad), dtype=X.dtype)  # the batch transposed, float16 bits or float32
    bits = X if X.dtype == np.uint16 else X.view(np.uint32)  # rows are moved as bits
    xt_words = xt.view(np.uint64)
    scratch = np.empty((-(-dim // WIDE_COLUMN_BLOCK), 4, WIDE_COLUMN_BLOCK), dtype=np.float32)
    active = np.empty(heads, dtype=np.int64)
    bias_grad = np.empty((heads, 1), dtype=np.float32)
    c = coefficients
    f32 = np.float32
    with _LAUNCH:
        _wide_epoch(
            X, bits, rows, starts, theta, exp_avg, exp_avg_sq, c["r"], c["normal"], c["corrected"], c["u"],
            c["neg_v"], is_pu, _logistic_flags(logistic, heads), neg_beta, valid, step_size, bc2_sqrt,
            f32(betas[0]), f32(betas[1]), f32(eps), z, g, xt, xt_words, scratch, active, bias_grad,
        )  # fmt: skip
