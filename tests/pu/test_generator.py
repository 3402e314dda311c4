"""TorchStream draws torch's CPU generator's numbers: randperm, uniform_ and their order in one stream."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from impulses.pu.generator import WIDE_PERMUTATION, TorchStream


@pytest.mark.parametrize("seed", [0, 1, 12345, 2**32 + 7, 2**40 + 3])
def test_a_stream_of_permutations_and_uniforms_is_torchs(seed: int) -> None:
    ours, theirs = TorchStream(seed), torch.Generator().manual_seed(seed)
    for n in (0, 1, 2, 3, 17, 1000, 33000):
        assert np.array_equal(ours.randperm(n), torch.randperm(n, generator=theirs).numpy()), n
        low, high = -1 / np.sqrt(n + 1), 1 / np.sqrt(n + 1)
        drawn = ours.uniform(n + 1, low, high)
        assert drawn.dtype == np.float32
        assert np.array_equal(drawn, torch.empty(n + 1).uniform_(low, high, generator=theirs).numpy()), n


def test_permutations_are_int64_and_cover_every_row() -> None:
    order = TorchStream(3).randperm(5000)
    assert order.dtype == np.int64 and np.array_equal(np.sort(order), np.arange(5000))


@pytest.mark.skipif(
    not os.environ.get("IMPULSES_BIG_TESTS"),
    reason="214,748,364 rows: ~7 GB and ~45 s; set IMPULSES_BIG_TESTS=1 to run it",
)
def test_the_64_bit_permutation_of_huge_n_is_torchs() -> None:
    for n in (WIDE_PERMUTATION - 1, WIDE_PERMUTATION):
        expected = torch.randperm(n, generator=torch.Generator().manual_seed(3)).numpy()
        assert np.array_equal(TorchStream(3).randperm(n), expected), n
