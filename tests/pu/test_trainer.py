"""Training from a store in windows (block-shuffled epochs) against in-memory training."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from impulses.errors import ParameterError
from impulses.pu.generator import TorchStream
from impulses.pu.heads import HeadSpec, train_heads
from impulses.pu.trainer import (
    WINDOW_BYTES_PER_ROW_AND_HEAD,
    FeatureSource,
    block_windows,
    epoch_order,
    parse_bytes,
    window_plan,
)


def pu_store(tmp_path, n: int = 1200, d: int = 32, chunk: int = 50, seed: int = 0) -> tuple:
    """An HDF5 dataset of float16 features (chunks of ``chunk`` rows), PU labels and the array itself."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(np.int64)
    X = (rng.normal(size=(n, d)) + y[:, None] * 0.8).astype(np.float16)
    s = np.where((y == 1) & (rng.random(n) < 0.4), 1, 0)
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f.create_dataset("embeddings", data=X, chunks=(chunk, d))
    return h5py.File(tmp_path / "x.h5", "r")["embeddings"], X, s


def store_with_bad_value(tmp_path, *, row: int, value: float) -> tuple:
    """:func:`pu_store`'s features with ``value`` (NaN or Inf) in row ``row``: the dataset, the array, s."""
    _, X, s = pu_store(tmp_path)
    X = X.copy()
    X[row, 3] = value
    with h5py.File(tmp_path / "bad.h5", "w") as f:
        f.create_dataset("embeddings", data=X, chunks=(50, X.shape[1]))
    return h5py.File(tmp_path / "bad.h5", "r")["embeddings"], X, s


HEADS = [HeadSpec("imbnnpu", 0.2, seed=0), HeadSpec("nnpu", 0.3, seed=1), HeadSpec("bce", seed=2)]


@pytest.mark.parametrize("kernel", ["fused", "torch"])
@pytest.mark.parametrize("stratified", [False, True])
def test_one_window_covering_the_store_equals_in_memory_training(
    tmp_path, kernel: str, stratified: bool
) -> None:
    ds, X, s = pu_store(tmp_path)
    kw = dict(epochs=3, batch_size=64, kernel=kernel, stratified=stratified, track_loss=True)
    memory = train_heads(X, s, HEADS, **kw)
    stored = train_heads(ds, s, HEADS, max_memory=1 << 30, **kw)
    assert stored.config["window_rows"] is None  # one window: read once
    np.testing.assert_array_equal(stored.W, memory.W)
    np.testing.assert_array_equal(stored.b, memory.b)
    np.testing.assert_array_equal(stored.history[-1]["train_loss"], memory.history[-1]["train_loss"])


def test_rows_pick_the_training_rows_of_a_store(tmp_path) -> None:
    ds, X, s = pu_store(tmp_path)
    rows = np.r_[100:700, 900:1150]
    memory = train_heads(X[rows], s[rows], HEADS[:1], epochs=2, batch_size=64)
    stored = train_heads(ds, s[rows], HEADS[:1], epochs=2, batch_size=64, rows=rows)
    np.testing.assert_array_equal(stored.W, memory.W)
    shuffled = np.random.default_rng(1).permutation(rows)  # rows out of store order read the same
    np.testing.assert_array_equal(
        train_heads(ds, s[shuffled], HEADS[:1], epochs=2, batch_size=64, rows=shuffled).W,
        train_heads(X[shuffled], s[shuffled], HEADS[:1], epochs=2, batch_size=64).W,
    )


def test_block_shuffled_epochs_are_permutations_deterministic_per_seed() -> None:
    def epochs(seed: int) -> list[np.ndarray]:
        gen = TorchStream(seed)
        out = []
        for _ in range(3):
            parts = []
            for rows, order, sizes in block_windows(1030, 64, gen, None, block_rows=50, window_blocks=4):
                assert np.all(np.diff(rows) > 0) and sum(sizes) == len(rows) == len(order)
                assert sorted(order.tolist()) == list(range(len(rows)))
                assert len(rows) <= 200 and max(sizes) <= 64
                parts.append(rows[order])
            out.append(np.concatenate(parts))
        return out

    first, again, other = epochs(0), epochs(0), epochs(1)
    for order in first:
        assert sorted(order.tolist()) == list(range(1030))  # every row once per epoch
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not np.array_equal(first[0], first[1])  # a fresh order each epoch
    assert not np.array_equal(first[0], other[0])
    # each window's rows are whole blocks of consecutive rows
    gen = TorchStream(0)
    for rows, _, _ in block_windows(1030, 64, gen, None, block_rows=50, window_blocks=4):
        blocks = np.unique(rows // 50)
        whole = np.concatenate([np.arange(b * 50, min(1030, b * 50 + 50)) for b in blocks])
        assert np.array_equal(rows, whole) and len(blocks) <= 4


def test_block_windows_covering_everything_are_the_in_memory_epoch() -> None:
    strata = np.arange(500) % 7 == 0
    ((rows, order, sizes),) = block_windows(500, 64, TorchStream(3), strata, block_rows=50, window_blocks=10)
    expected, expected_sizes = epoch_order(500, 64, TorchStream(3), strata)
    assert (
        np.array_equal(rows, np.arange(500)) and np.array_equal(order, expected) and sizes == expected_sizes
    )


def test_windows_train_deterministically_and_as_well_as_a_full_shuffle(tmp_path) -> None:
    ds, X, s = pu_store(tmp_path, n=3000, d=32, chunk=50)
    budget = (
        4 * 50 * (32 * 2 + WINDOW_BYTES_PER_ROW_AND_HEAD) * 6
    )  # windows of 6 chunks (300 rows): 10 windows
    kw = dict(epochs=4, batch_size=64)
    a = train_heads(ds, s, HEADS[:1], max_memory=budget, **kw)
    b = train_heads(ds, s, HEADS[:1], max_memory=budget, **kw)
    assert a.config["window_rows"] == 300
    np.testing.assert_array_equal(a.W, b.W)
    full = train_heads(X, s, HEADS[:1], **kw)
    za, zf = a.decision_function(X)[:, 0], full.decision_function(X)[:, 0]
    assert np.corrcoef(za, zf)[0, 1] > 0.98


def test_windowed_fused_runs_leave_the_reader_a_core(tmp_path, monkeypatch) -> None:
    """The one-head kernel reads features as fast as a core copies them: the reader gets its own."""
    import numba

    import impulses.pu.trainer as trainer_module

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs numba's pool to hold two threads")
    monkeypatch.setattr(trainer_module, "available_cpus", lambda: 2)
    ds, X, s = pu_store(tmp_path, n=600, d=600, chunk=50)  # 3 column blocks: 2 threads in memory
    in_memory = train_heads(X, s, HEADS[:1], epochs=1, batch_size=64)
    windowed = train_heads(ds, s, HEADS[:1], epochs=1, batch_size=64, max_memory=4 * 50 * (1200 + 64) * 3)
    assert windowed.config["window_rows"] == 150
    assert in_memory.config["threads"] == 2 and windowed.config["threads"] == 1
    assert (
        train_heads(ds, s, HEADS[:1], epochs=1, max_memory=4 * 50 * (1200 + 64) * 3, threads=2).config[
            "threads"
        ]
        == 2
    )  # the user's choice stands


def test_max_memory_is_validated(tmp_path) -> None:
    ds, _, s = pu_store(tmp_path, n=200)
    for bad in (0, -5, "lots", "0G", 1.5):
        with pytest.raises(ParameterError, match="max_memory"):
            train_heads(ds, s, HEADS[:1], epochs=1, max_memory=bad)
    with pytest.raises(ParameterError, match="too small"):
        train_heads(ds, s, HEADS[:1], epochs=1, max_memory=1000)
    assert parse_bytes("2G") == 2 << 30 and parse_bytes("512MiB") == 512 << 20 and parse_bytes("100") == 100
    # a window is a quarter of the budget, each row counting its features and 64 bytes per head
    per_row = 32 * 2 + WINDOW_BYTES_PER_ROW_AND_HEAD
    assert window_plan(FeatureSource(ds), 4 * 50 * per_row * 3, 64) == (50, 3)
    per_row_8 = 32 * 2 + 8 * WINDOW_BYTES_PER_ROW_AND_HEAD
    assert window_plan(FeatureSource(ds), 4 * 50 * per_row_8 * 3, 64, heads=8) == (50, 3)
    assert window_plan(FeatureSource(ds), 4 * 50 * per_row * 9, 64) == (50, 9)
    assert window_plan(FeatureSource(ds), 4 * 50 * per_row * 9, 64, heads=8) == (50, 2)  # wide: smaller


def test_the_finite_check_reads_in_slices_and_still_finds_every_bad_row(tmp_path, monkeypatch) -> None:
    """The NaN/Inf check goes a slice of rows at a time (no copy of a whole window): rows already
    checked are skipped, and a bad row is found whichever slice it falls in, read in order or not."""
    import impulses.pu.trainer as trainer
    from impulses.errors import StoreError

    monkeypatch.setattr(trainer, "CHECK_BYTES", 7 * 32 * 2)  # slices of 7 rows of 32 float16
    ds, X, _ = store_with_bad_value(tmp_path, row=613, value=np.inf)
    source = FeatureSource(ds)
    out = np.empty((700, X.shape[1]), dtype=np.float16)
    np.testing.assert_array_equal(source.read(np.arange(0, 600), out), X[:600])  # all finite
    with pytest.raises(StoreError, match="at row 613 holds NaN or Inf"):
        source.read(np.arange(590, 640), out)  # 590-599 checked before, 600-639 new
    with pytest.raises(StoreError, match="at row 613 holds NaN or Inf"):
        FeatureSource(ds).read(np.array([900, 613, 10, 12]), out)  # out of store order
    assert np.array_equal(source.read(np.arange(614, 700), out), X[614:700])


def test_windows_refuse_rows_holding_nan_naming_the_row(tmp_path) -> None:
    from impulses.errors import StoreError

    ds, _, s = store_with_bad_value(tmp_path, row=700, value=np.nan)
    with pytest.raises(StoreError, match="at row 700 holds NaN or Inf"):
        train_heads(ds, s, HEADS[:1], epochs=1, batch_size=64, max_memory=64 * 1024)
    source = FeatureSource(ds, rows=np.r_[0:700, 701:1200])  # the row left out: read and train fine
    assert np.isfinite(source[0:1199]).all()


@pytest.mark.parametrize("kernel", ["fused", "torch"])
def test_heads_sharing_a_label_column_train_as_with_their_own_copies(tmp_path, kernel: str) -> None:
    """Heads that name the same label column read it through one shared column (labels take N x
    label sets): their weights equal those of a run given one copied column per head, stratified
    batches included."""
    _, X, s = pu_store(tmp_path)
    s2 = np.column_stack([s, np.roll(s, 7)])
    heads = [
        HeadSpec("imbnnpu", 0.2, seed=0, column=0),
        HeadSpec("nnpu", 0.3, seed=1, column=1),
        HeadSpec("imbnnpu", 0.25, seed=2, column=0),
    ]
    copies = [HeadSpec(h.loss, h.prior, seed=h.seed, column=k) for k, h in enumerate(heads)]
    kw = dict(epochs=3, batch_size=64, kernel=kernel, stratified=True)
    shared = train_heads(X, s2, heads, **kw)
    copied = train_heads(X, s2[:, [0, 1, 0]], copies, **kw)
    np.testing.assert_array_equal(shared.W, copied.W)
    np.testing.assert_array_equal(shared.b, copied.b)
