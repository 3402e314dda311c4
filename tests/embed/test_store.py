"""The HDF5 embedding store: round trip, partial/atomic writing, resume, validation, shard joins."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest

from impulses.embed.store import (
    EmbeddingStore,
    StoreSpec,
    StoreWriter,
    join_shards,
    partial_path,
    rows_per_chunk,
)
from impulses.errors import StoreError

SPEC = StoreSpec(encoder="enc", source="src", encoder_sha256="abc", transform={"image_size": 8})


def _rows(n: int, dim: int = 5, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)


def _ids(n: int, start: int = 0) -> list[str]:
    return [f"s/{i}" for i in range(start, start + n)]


def test_round_trip_float16_and_float32(tmp_path: Path) -> None:
    x = _rows(7)
    targets = np.array([0, 1, 2, -1, 1, 0, 2])
    for dtype, tol in (("float16", 1e-3), ("float32", 0.0)):
        path = tmp_path / f"{dtype}.h5"
        store = EmbeddingStore.write(
            path, x, _ids(7), targets=targets, class_names=["a", "b", "c"], dtype=dtype
        )
        assert store.dtype == dtype and len(store) == 7 and store.dim == 5
        np.testing.assert_allclose(store.read(), x, rtol=tol, atol=tol)
        np.testing.assert_array_equal(store.read(), x.astype(dtype).astype(np.float32))
        assert store.ids.tolist() == _ids(7)
        assert store.targets.tolist() == targets.tolist()
        assert store.class_names == ["a", "b", "c"]
        np.testing.assert_array_equal(store.read(slice(2, 5)), store.read()[2:5])
        np.testing.assert_array_equal(store.read([6, 0, 3, 3]), store.read()[[6, 0, 3, 3]])
        assert store.rows_of(["s/4", "s/1"]).tolist() == [4, 1]
        starts = [start for start, _ in store.iter_batches(3)]
        assert starts == [0, 3, 6]
        store.close()


def test_layout_is_row_chunked_about_one_mib(tmp_path: Path) -> None:
    store = EmbeddingStore.write(tmp_path / "s.h5", _rows(2000, dim=512), _ids(2000))
    chunks = store.embeddings.chunks
    assert chunks == (rows_per_chunk(512, "float16"), 512)
    assert chunks[0] * 512 * 2 == 1 << 20
    assert store.embeddings.compression is None


def test_rows_of_names_unknown_ids(tmp_path: Path) -> None:
    store = EmbeddingStore.write(tmp_path / "s.h5", _rows(3), _ids(3))
    with pytest.raises(StoreError, match="'nope'"):
        store.rows_of(["s/0", "nope"])


def test_fingerprint_is_the_hash_of_encoder_weights_source_transform() -> None:
    payload = json.dumps(["enc", "abc", "src", '{"image_size": 8}'], separators=(",", ":"))
    assert SPEC.fingerprint == hashlib.sha256(payload.encode()).hexdigest()
    with_digest = StoreSpec("enc", "src", "abc", {"image_size": 8}, source_digest="d1")
    assert with_digest.fingerprint != SPEC.fingerprint
    assert StoreSpec("enc", "src", "abc", {"image_size": 16}).fingerprint != SPEC.fingerprint


def test_partial_is_invisible_until_finalized_and_resumes(tmp_path: Path) -> None:
    path = tmp_path / "s.h5"
    x = _rows(10)
    writer = StoreWriter.create(path, spec=SPEC, dim=5, capacity=10)
    writer.append(x[:4], _ids(4), [1] * 4)
    writer.close()  # as if killed after the first chunk
    assert not path.exists() and partial_path(path).exists()
    with pytest.raises(StoreError, match=r"\.partial.*resume"):
        EmbeddingStore.open(path)

    writer = StoreWriter.create(path, spec=SPEC, dim=5, capacity=10)
    assert writer.rows_done == 4 and writer.items_done == 4
    writer.append(x[4:], _ids(6, 4), [2] * 6)
    store = writer.finalize()
    assert not partial_path(path).exists()
    np.testing.assert_array_equal(store.read(), x.astype(np.float16).astype(np.float32))
    assert store.targets.tolist() == [1] * 4 + [2] * 6
    assert store.meta["complete"] is True or store.meta["complete"] == 1


def test_items_done_counts_skipped_items(tmp_path: Path) -> None:
    writer = StoreWriter.create(tmp_path / "s.h5", spec=SPEC, dim=5, capacity=4)
    writer.append(_rows(2), _ids(2), [0, 0], items=3, skipped=[{"id": "s/9", "error": "bad"}])
    assert (writer.rows_done, writer.items_done) == (2, 3)
    writer.append(_rows(1), ["s/5"], [0], items=1)
    store = writer.finalize()
    assert len(store) == 3 and store.skipped == [{"id": "s/9", "error": "bad"}]


def test_resume_refuses_another_run(tmp_path: Path) -> None:
    path = tmp_path / "s.h5"
    StoreWriter.create(path, spec=SPEC, dim=5, capacity=10).close()
    other = StoreSpec(encoder="enc", source="src", encoder_sha256="xyz", transform={"image_size": 8})
    with pytest.raises(StoreError, match=r"^overwrite is needed to start over: .*different run"):
        StoreWriter.create(path, spec=other, dim=5, capacity=10)
    with pytest.raises(StoreError, match="capacity"):
        StoreWriter.create(path, spec=SPEC, dim=5, capacity=11)
    with pytest.raises(StoreError, match="dtype"):
        StoreWriter.create(path, spec=SPEC, dim=5, capacity=10, dtype="float32")
    fresh = StoreWriter.create(path, spec=other, dim=5, capacity=10, overwrite=True)
    assert fresh.rows_done == 0
    fresh.close()


def test_existing_store_is_not_replaced_without_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "s.h5"
    EmbeddingStore.write(path, _rows(2), _ids(2))
    with pytest.raises(StoreError, match="already exists"):
        EmbeddingStore.write(path, _rows(3), _ids(3))
    assert len(EmbeddingStore.write(path, _rows(3), _ids(3), overwrite=True)) == 3


def test_duplicate_ids_and_capacity_are_refused(tmp_path: Path) -> None:
    writer = StoreWriter.create(tmp_path / "s.h5", spec=SPEC, dim=5, capacity=3)
    with pytest.raises(StoreError, match="exceeds capacity"):
        writer.append(_rows(4), _ids(4), [0] * 4)
    writer.append(_rows(3), ["a", "b", "a"], [0] * 3)
    with pytest.raises(StoreError, match="duplicate ids 'a'"):
        writer.finalize()


def _tamper(path: Path, **attrs: object) -> None:
    with h5py.File(path, "r+") as f:
        for key, value in attrs.items():
            f.attrs[key] = value


@pytest.mark.parametrize(
    ("attrs", "message"),
    [
        ({"complete": False}, "incomplete"),
        ({"schema_version": 99}, "schema_version 99"),
        ({"rows_done": 2}, "rows_done=2"),
        ({"dim": 4}, "dim=4"),
    ],
)
def test_validation_on_open(tmp_path: Path, attrs: dict, message: str) -> None:
    path = tmp_path / "s.h5"
    EmbeddingStore.write(path, _rows(3), _ids(3)).close()
    _tamper(path, **attrs)
    with pytest.raises(StoreError, match=message):
        EmbeddingStore.open(path)


def test_not_a_store(tmp_path: Path) -> None:
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5")
    with pytest.raises(StoreError, match=r"junk\.h5"):
        EmbeddingStore.open(junk)
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = 1
    with pytest.raises(StoreError, match="no /embeddings"):
        EmbeddingStore.open(tmp_path / "other.h5")
    with pytest.raises(StoreError, match="no such"):
        EmbeddingStore.open(tmp_path / "missing.h5")


def test_nan_scan_names_ids(tmp_path: Path) -> None:
    x = _rows(6)
    x[4, 2] = np.nan
    path = tmp_path / "s.h5"
    EmbeddingStore.write(path, x, _ids(6)).close()
    EmbeddingStore.open(path)  # no scan by default
    with pytest.raises(StoreError, match="s/4"):
        EmbeddingStore.open(path, check_finite=True)


def test_store_pickles_and_reopens_lazily(tmp_path: Path) -> None:
    store = EmbeddingStore.write(tmp_path / "s.h5", _rows(4), _ids(4))
    expected = store.read()
    clone = pickle.loads(pickle.dumps(store))
    assert clone._file is None
    np.testing.assert_array_equal(clone.read(), expected)


def _shards(tmp_path: Path, sizes: list[int], spec: StoreSpec = SPEC) -> tuple[list[Path], np.ndarray]:
    x = _rows(sum(sizes), seed=3)
    paths, start = [], 0
    for r, n in enumerate(sizes):
        path = tmp_path / f"out.rank{r}-of-{len(sizes)}.h5"
        writer = StoreWriter.create(path, spec=spec, dim=5, capacity=n, class_names=["a", "b"])
        writer.append(
            x[start : start + n], _ids(n, start), [r] * n, skipped=[{"id": f"bad{r}", "error": "e"}]
        )
        writer.finalize().close()
        paths.append(path)
        start += n
    return paths, x


def test_join_shards_reads_as_one_store(tmp_path: Path) -> None:
    paths, x = _shards(tmp_path, [3, 4, 2])
    store = join_shards(tmp_path / "out.h5", paths)
    assert len(store) == 9
    assert store.embeddings.is_virtual and store._h5()["ids"].is_virtual
    np.testing.assert_array_equal(store.read(), x.astype(np.float16).astype(np.float32))
    assert store.ids.tolist() == _ids(9)
    assert store.targets.tolist() == [0] * 3 + [1] * 4 + [2] * 2
    assert store.class_names == ["a", "b"]
    assert store.fingerprint == SPEC.fingerprint
    assert store.meta["shards"] == [
        {"path": p.name, "rows": n} for p, n in zip(paths, [3, 4, 2], strict=True)
    ]
    assert [s["id"] for s in store.skipped] == ["bad0", "bad1", "bad2"]
    store.close()
    # the folder moves as a whole: shard paths are relative
    moved = tmp_path / "moved"
    moved.mkdir()
    for p in [*paths, tmp_path / "out.h5"]:
        p.rename(moved / p.name)
    with EmbeddingStore.open(moved / "out.h5") as again:
        np.testing.assert_array_equal(again.read(), x.astype(np.float16).astype(np.float32))


def test_missing_or_incomplete_or_foreign_shard_is_an_error(tmp_path: Path) -> None:
    paths, _ = _shards(tmp_path, [3, 4])
    join_shards(tmp_path / "out.h5", paths).close()
    paths[1].rename(tmp_path / "elsewhere.h5")
    with pytest.raises(StoreError, match=r"shard .*rank1-of-2\.h5 is missing"):
        EmbeddingStore.open(tmp_path / "out.h5")
    (tmp_path / "elsewhere.h5").rename(paths[1])
    _tamper(paths[1], complete=False)
    with pytest.raises(StoreError, match=r"rank1-of-2\.h5 is incomplete"):
        EmbeddingStore.open(tmp_path / "out.h5")
    _tamper(paths[1], complete=True, fingerprint="other")
    with pytest.raises(StoreError, match="different run"):
        EmbeddingStore.open(tmp_path / "out.h5")


def test_join_refuses_shards_of_different_runs(tmp_path: Path) -> None:
    a, _ = _shards(tmp_path / "a", [2])
    other = StoreSpec(encoder="enc2", source="src")
    b, _ = _shards(tmp_path / "b", [2], spec=other)
    b_here = tmp_path / "a" / "b.h5"
    b[0].rename(b_here)
    with pytest.raises(StoreError, match="fingerprint"):
        join_shards(tmp_path / "a" / "out.h5", [a[0], b_here])
    with pytest.raises(StoreError, match="its folder"):
        join_shards(tmp_path / "a" / "sub" / "out.h5", a)


def _nan_store(tmp_path: Path, bad_rows: tuple[int, ...] = (4, 7)) -> tuple[Path, np.ndarray]:
    """A store whose ``bad_rows`` hold NaN/Inf, set with h5py after writing as a foreign tool would."""
    path = tmp_path / "nan.h5"
    x = _rows(10)
    EmbeddingStore.write(path, x, _ids(10), dtype="float32").close()
    with h5py.File(path, "r+") as f:
        for i, row in enumerate(bad_rows):
            f["embeddings"][row, 1] = np.nan if i % 2 == 0 else np.inf
            x[row, 1] = np.nan if i % 2 == 0 else np.inf
    return path, x


def test_indexing_reads_the_rows_read_returns(tmp_path: Path) -> None:
    x = _rows(3000, dim=300)  # several HDF5 chunks (rows_per_chunk(300, float16) = 1747)
    store = EmbeddingStore.write(tmp_path / "s.h5", x, _ids(3000), targets=np.arange(3000) % 3)
    full = store.read()
    stored = full.astype(np.float16)
    assert store[5].shape == (300,) and store[5].dtype == np.float16
    np.testing.assert_array_equal(store[5], stored[5])
    np.testing.assert_array_equal(store[-1], stored[-1])
    np.testing.assert_array_equal(store[10:20], stored[10:20])
    np.testing.assert_array_equal(store[2990:5000], stored[2990:])
    np.testing.assert_array_equal(store[::700], stored[::700])
    np.testing.assert_array_equal(store[20:10], stored[20:10])
    picks = [2999, 0, 5, 5, 1800, -3, 4]  # any order, repeats, negative, across chunks with gaps
    np.testing.assert_array_equal(store[picks], stored[picks])
    np.testing.assert_array_equal(store[np.array(picks)], stored[picks])
    np.testing.assert_array_equal(store.read(picks), full[picks])
    mask = np.arange(3000) % 7 == 0
    np.testing.assert_array_equal(store[mask], stored[mask])
    assert store[[]].shape == (0, 300)
    for bad in (3000, -3001, [0, 3000]):
        with pytest.raises(IndexError, match="out of range"):
            store[bad]
    assert len(store) == 3000
    rows = list(store)
    assert len(rows) == 3000 and rows[0].shape == (300,)
    np.testing.assert_array_equal(np.stack(rows), stored)
    assert store.to_numpy().dtype == np.float16
    np.testing.assert_array_equal(store.to_numpy(), stored)
    np.testing.assert_array_equal(store.to_numpy(np.float32), full)
    store.close()


def test_to_polars_holds_ids_targets_and_the_embedding_array(tmp_path: Path) -> None:
    import polars as pl

    x = _rows(6)
    targets = np.array([0, 1, -1, 1, 0, 2])
    store = EmbeddingStore.write(tmp_path / "s.h5", x, _ids(6), targets=targets)
    frame = store.to_polars()
    assert frame.columns == ["id", "target", "embedding"]
    assert frame.schema["embedding"] == pl.Array(pl.Float32, 5)
    assert frame["id"].to_list() == _ids(6) and frame["target"].to_list() == targets.tolist()
    np.testing.assert_array_equal(frame["embedding"].to_numpy(), store.read())


def test_a_data_loader_with_two_workers_yields_the_rows_read_returns(tmp_path: Path) -> None:
    from torch.utils.data import DataLoader

    store = EmbeddingStore.write(tmp_path / "s.h5", _rows(103, dim=8), _ids(103))
    expected = store.read()  # the parent has the file open before the workers start
    for context in ("fork", "spawn"):
        loader = DataLoader(store, batch_size=10, num_workers=2, multiprocessing_context=context)
        batches = [batch.numpy() for batch in loader]
        assert [len(b) for b in batches] == [10] * 10 + [3]
        np.testing.assert_array_equal(np.concatenate(batches).astype(np.float32), expected)
    shuffled = DataLoader(store, batch_size=16, shuffle=True, num_workers=0)
    assert sum(len(b) for b in shuffled) == 103
    store.close()


def test_every_read_path_names_the_store_and_the_first_nonfinite_row(tmp_path: Path) -> None:
    path, x = _nan_store(tmp_path)
    store = EmbeddingStore.open(path)  # opening stays cheap: no scan
    first = r"nan\.h5: row 4 \(id 's/4'\) holds NaN or Inf.*allow_nonfinite=True"
    with pytest.raises(StoreError, match=first):
        store.read()
    with pytest.raises(StoreError, match=first):
        list(store.iter_batches(3))
    with pytest.raises(StoreError, match=first):
        store[2:9]
    with pytest.raises(StoreError, match=r"row 7 \(id 's/7'\)"):
        store[[7, 1]]
    with pytest.raises(StoreError, match=first):
        store[4]
    with pytest.raises(StoreError, match=first):
        list(store)
    with pytest.raises(StoreError, match=first):
        store.to_polars()
    # rows without NaN/Inf read as before
    np.testing.assert_array_equal(store.read([0, 9, 5]), x[[0, 9, 5]])
    np.testing.assert_array_equal(store[:4], x[:4])
    np.testing.assert_array_equal(store.finite_rows(batch_rows=3), np.isfinite(x).all(axis=1))

    lenient = EmbeddingStore.open(path, allow_nonfinite=True)
    np.testing.assert_array_equal(lenient.read(), x)  # NaN compares equal in assert_array_equal
    usable = lenient.finite_rows()
    assert np.flatnonzero(~usable).tolist() == [4, 7]
    assert np.isfinite(lenient.read(usable)).all()
    # the flag survives pickling into DataLoader workers
    assert pickle.loads(pickle.dumps(lenient)).allow_nonfinite


def test_duplicate_ids_are_refused_on_open(tmp_path: Path) -> None:
    path = tmp_path / "s.h5"
    EmbeddingStore.write(path, _rows(5), _ids(5)).close()
    with h5py.File(path, "r+") as f:  # as a foreign writer could leave it
        f["ids"][3] = "s/1"
        f["ids"][4] = "s/1"
    with pytest.raises(StoreError, match=r"s\.h5: duplicate ids 's/1'; ids must be unique"):
        EmbeddingStore.open(path)


def test_read_rows_reads_chunks_straight_from_the_file_and_falls_back_where_it_cannot(tmp_path: Path) -> None:
    """read_rows equals h5py's own reads: across chunk boundaries, into the middle of ``out``, the
    last (partial) chunk; and on datasets it must leave to h5py (compressed, contiguous, chunks never
    written, chunks narrower than a row)."""
    from impulses.embed import store as store_module

    rng = np.random.default_rng(0)
    X = rng.normal(size=(1000, 24)).astype(np.float16)
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f.create_dataset("plain", data=X, chunks=(64, 24))
        f.create_dataset("gzip", data=X, chunks=(64, 24), compression="gzip")
        f.create_dataset("contiguous", data=X)
        f.create_dataset("narrow", data=X, chunks=(64, 8))
        sparse = f.create_dataset("sparse", shape=X.shape, dtype=X.dtype, chunks=(64, 24), fillvalue=7)
        sparse[0:64] = X[0:64]  # the other chunks are never written: HDF5 returns the fill value
    expected_sparse = np.full_like(X, 7)
    expected_sparse[:64] = X[:64]
    with h5py.File(tmp_path / "x.h5", "r") as f:
        assert store_module._raw_chunk_rows(f["plain"]) == 64
        for name in ("gzip", "contiguous", "narrow"):
            assert store_module._raw_chunk_rows(f[name]) is None
        for name, truth in [
            ("plain", X),
            ("gzip", X),
            ("contiguous", X),
            ("narrow", X),
            ("sparse", expected_sparse),
        ]:
            for lo, hi in [(0, 1000), (5, 70), (64, 128), (900, 1000), (999, 1000), (130, 131)]:
                out = np.zeros((hi - lo + 9, 24), dtype=np.float16)
                store_module.read_rows(f[name], lo, hi, out, pos=4)
                np.testing.assert_array_equal(out[4 : 4 + hi - lo], truth[lo:hi], err_msg=f"{name} {lo}:{hi}")
                assert not out[:4].any() and not out[4 + hi - lo :].any()  # nothing outside the target rows
        direct = np.empty((65, 24), dtype=np.float16)
        assert store_module._pread_rows(f["plain"], 64, 5, 70, direct)  # the file path, not h5py's
        np.testing.assert_array_equal(direct, X[5:70])
        assert not store_module._pread_rows(f["sparse"], 64, 5, 70, direct)  # an unwritten chunk
