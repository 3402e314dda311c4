"""torch's CPU random stream without torch: the initial weights and batch orders of the head trainer.

A head's initial weights are ``torch.manual_seed(seed); nn.Linear(D, 1)``'s and every epoch's batch
order is ``torch.randperm`` on a generator seeded with ``shuffle_seed``, so that a head equals the
reference model trained the reference way. Importing torch takes about a second, as long as a
one-head run trains, so the CPU kernels draw the same numbers with numpy instead:

- torch's CPU generator is mt19937 seeded by ``init_genrand(seed mod 2³²)``, which is numpy's
  legacy ``RandomState(seed)``; raw 32-bit outputs are ``randint(0, 2**32)``.
- ``uniform_(a, b)`` on float32 takes one output r per value: ``(r & 0xFFFFFF)·2⁻²⁴`` in float64,
  times ``float32(b) − float32(a)`` (a float32 difference), plus ``float32(a)``, rounded to float32.
- ``randperm(n)`` for n < 2³²/20 is a Fisher–Yates shuffle swapping i with i + r_i mod (n − i) for
  i = 0 … n−2; from 2³²/20 on, an inside-out shuffle with 64-bit draws (two outputs, high word first).

Tests compare every draw with torch's (``tests/pu/test_generator.py``).
"""

from __future__ import annotations

import numpy as np

# torch.randperm's switch to 64-bit draws: n >= uint32 max / 20 (integer division)
WIDE_PERMUTATION = 0xFFFFFFFF // 20


class TorchStream:
    """The numbers ``torch.Generator().manual_seed(seed)`` gives on the CPU, drawn with numpy.

    Successive calls continue one stream, as calls on one torch generator do.
    """

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)
        self._state = np.random.RandomState(self.seed & 0xFFFFFFFF)

    def raw(self, n: int) -> np.ndarray:
        """The next ``n`` 32-bit outputs of the mt19937 stream (as uint64)."""
        return self._state.randint(0, 1 << 32, size=n, dtype=np.uint64)

    def uniform(self, n: int, low: float, high: float) -> np.ndarray:
        """``torch.empty(n).uniform_(low, high, generator=...)``: n float32 values in [low, high)."""
        lo, hi = np.float32(low), np.float32(high)
        unit = (self.raw(n) & 0xFFFFFF).astype(np.float64) * 2.0**-24
        return (unit * np.float64(hi - lo) + np.float64(lo)).astype(np.float32)

    def randperm(self, n: int) -> np.ndarray:
        """``torch.randperm(n, generator=...)``: a permutation of 0 … n−1 (int64)."""
        from impulses.pu.kernels import shuffle_like_torch

        if n < WIDE_PERMUTATION:
            return shuffle_like_torch(self.raw(max(n - 1, 0)), n, wide=False)
        words = self.raw(2 * n).reshape(n, 2)
        return shuffle_like_torch((words[:, 0] << np.uint64(32)) | words[:, 1], n, wide=True)
