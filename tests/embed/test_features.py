"""Feature import: every format round-trips into a store, bad input is a one-line error, heads train on it."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from impulses.embed.features import import_features
from impulses.embed.store import EmbeddingStore
from impulses.errors import ImpulsesError, ParameterError, StoreError

N, D = 30, 5


@pytest.fixture
def data() -> tuple[np.ndarray, list[str], np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(N, D)).astype(np.float32)
    ids = [f"doc-{i:03d}" for i in rng.permutation(N)]
    y = rng.integers(0, 3, size=N)
    return X, ids, y


def _check(store: EmbeddingStore, X: np.ndarray, ids: list[str], y: np.ndarray, path: Path) -> None:
    np.testing.assert_array_equal(store.read(), X)  # float32 store: exact
    assert store.ids.tolist() == ids
    assert store.targets.tolist() == y.tolist()
    meta = store.meta
    assert meta["encoder"] == "imported" and meta["source"] == f"import:{path.name}"
    assert meta["encoder_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_npz_round_trip(tmp_path: Path, data) -> None:
    X, ids, y = data
    np.savez(
        tmp_path / "f.npz", embeddings=X, ids=np.array(ids), targets=y, class_names=np.array(["a", "b", "c"])
    )
    store = import_features(
        tmp_path / "f.npz", tmp_path / "s.h5", dtype="float32", provenance={"model": "m1"}
    )
    _check(store, X, ids, y, tmp_path / "f.npz")
    assert store.class_names == ["a", "b", "c"] and store.meta["provenance"] == '{"model": "m1"}'


def test_npy_with_ids_and_targets_given(tmp_path: Path, data) -> None:
    X, ids, y = data
    np.save(tmp_path / "f.npy", X.astype(np.float64))
    store = import_features(
        tmp_path / "f.npy", tmp_path / "s.h5", ids=ids, targets=y.tolist(), dtype="float32"
    )
    _check(store, X, ids, y, tmp_path / "f.npy")
    default = import_features(tmp_path / "f.npy", tmp_path / "d.h5")
    assert default.ids.tolist() == [str(i) for i in range(N)] and (default.targets == -1).all()
    assert default.dtype == "float16"
    np.testing.assert_allclose(default.read(), X, rtol=1e-3, atol=1e-3)


def test_safetensors_round_trip(tmp_path: Path, data) -> None:
    from safetensors.numpy import save_file

    X, ids, y = data
    save_file({"embeddings": X, "targets": y.astype(np.int64)}, str(tmp_path / "f.safetensors"))
    store = import_features(tmp_path / "f.safetensors", tmp_path / "s.h5", ids=ids, dtype="float32")
    _check(store, X, ids, y, tmp_path / "f.safetensors")


@pytest.mark.parametrize("layout", ["list", "array", "f-columns", "bare-columns"])
def test_parquet_round_trip(tmp_path: Path, data, layout: str) -> None:
    X, ids, y = data
    columns: dict[str, object] = {"id": ids, "label": y}
    if layout == "list":
        columns["emb"] = X.tolist()
        frame = pl.DataFrame(columns)
    elif layout == "array":
        frame = pl.DataFrame(columns).with_columns(pl.Series("emb", X, dtype=pl.Array(pl.Float32, D)))
    else:
        prefix = "f" if layout == "f-columns" else ""
        order = [3, 0, 4, 1, 2]  # any column order: they are read by number
        frame = pl.DataFrame({**columns, **{f"{prefix}{j}": X[:, j] for j in order}})
    frame.write_parquet(tmp_path / "f.parquet")
    store = import_features(tmp_path / "f.parquet", tmp_path / "s.h5", dtype="float32")
    _check(store, X, ids, y, tmp_path / "f.parquet")


def test_string_targets_become_sorted_class_names_or_follow_the_given_ones(tmp_path: Path, data) -> None:
    X, ids, _ = data
    words = ["spam", "ham", None] * (N // 3)
    pl.DataFrame({"key": ids, "kind": words, "v": X.tolist()}).write_parquet(tmp_path / "f.parquet")
    store = import_features(tmp_path / "f.parquet", tmp_path / "a.h5", id_column="key", target_column="kind")
    assert store.class_names == ["ham", "spam"]
    assert store.targets.tolist() == [{"spam": 1, "ham": 0, None: -1}[w] for w in words]
    given = import_features(
        tmp_path / "f.parquet",
        tmp_path / "b.h5",
        id_column="key",
        target_column="kind",
        class_names=["spam", "ham"],
    )
    assert given.class_names == ["spam", "ham"]
    assert given.targets.tolist() == [{"spam": 0, "ham": 1, None: -1}[w] for w in words]


def test_imported_store_trains_pu_heads(tmp_path: Path) -> None:
    from sklearn.metrics import roc_auc_score

    from impulses.pu.heads import HeadSpec, train_heads

    rng = np.random.default_rng(1)
    y = np.repeat([1, 0], 100)
    X = rng.normal(size=(200, 4)).astype(np.float32)
    X[:, 0] += 3.0 * y  # the positives are separable along feature 0
    np.savez(tmp_path / "f.npz", X=X, y=y)
    store = import_features(tmp_path / "f.npz", tmp_path / "s.h5")
    s = np.zeros(200, dtype=np.int8)
    s[:40] = 1  # 40 of the 100 positives labeled
    result = train_heads(
        store.read(), s, [HeadSpec("imbnnpu", 0.5, seed=0)], epochs=30, batch_size=32, lr=1e-2
    )
    scores = result.decision_function(store.read())[:, 0]
    assert np.isfinite(scores).all()
    assert roc_auc_score(store.targets, scores) > 0.9


def _error(tmp_path: Path, setup, **kwargs) -> str:
    features = setup(tmp_path)
    with pytest.raises(ImpulsesError) as err:
        import_features(features, tmp_path / "s.h5", **kwargs)
    assert not (tmp_path / "s.h5").exists() and not (tmp_path / "s.h5.partial").exists()
    message = err.value.render()
    assert "\n" not in message
    return message


def _npz(**arrays):
    def setup(tmp_path: Path) -> Path:
        np.savez(tmp_path / "f.npz", **arrays)
        return tmp_path / "f.npz"

    return setup


def _parquet(**columns):
    def setup(tmp_path: Path) -> Path:
        pl.DataFrame(columns).write_parquet(tmp_path / "f.parquet")
        return tmp_path / "f.parquet"

    return setup


X3 = np.arange(6, dtype=np.float32).reshape(3, 2)
WITH_NAN = np.where(np.arange(6).reshape(3, 2) == 3, np.nan, X3).astype(np.float32)


@pytest.mark.parametrize(
    ("setup", "kwargs", "message"),
    [
        (
            _npz(X=WITH_NAN, ids=np.array(["a", "b", "c"])),
            {},
            r"f\.npz: array 'X' row 1 \(id 'b'\) holds NaN or Inf",
        ),
        (
            _npz(X=X3 * np.array([[1], [1e5], [1]], dtype=np.float32)),
            {},
            r"^dtype float16 cannot hold .*f\.npz: array 'X' row 1 .*use float32",
        ),
        (
            _npz(X=X3, ids=np.array(["a", "b", "a"])),
            {},
            r"f\.npz: array 'ids' repeats id 'a' at rows 0 and 2",
        ),
        (
            _npz(X=X3, ids=np.array(["a", "b"])),
            {},
            r"f\.npz: array 'ids' has 2 entries but array 'X' has 3 rows",
        ),
        (_npz(X=X3, y=np.array([0, 1])), {}, r"f\.npz: array 'y' has 2 entries but array 'X' has 3 rows"),
        (_npz(X=X3, y=np.array([0.0, 1.5, 1.0])), {}, r"f\.npz: array 'y' holds a fractional value at row 1"),
        (_npz(X=X3, y=np.array([0, -4, 1])), {}, r"f\.npz: array 'y': row 1 has label -4"),
        (_npz(X=X3.reshape(-1)), {}, r"f\.npz: array 'X' must be a non-empty 2-D matrix .* shape \(6,\)"),
        (_npz(feats=X3), {}, r"f\.npz: no array named embeddings or X \(arrays: feats\)"),
        (_npz(X=X3), {"embedding_column": "Z"}, r"f\.npz: no array 'Z' \(arrays: X\)"),
        (_npz(X=X3), {"ids": ["a", "b"]}, r"^ids has 2 entries but .*f\.npz has 3 rows"),
        (_npz(X=X3), {"ids": ["a", "a", "b"]}, r"^ids repeats id 'a' at rows 0 and 1"),
        (_npz(X=X3), {"targets": [0, 1]}, r"^targets has 2 entries"),
        (
            _npz(X=X3, y=np.array([0, 2, 1])),
            {"class_names": ["a", "b"]},
            r"^class_names names 2 classes but .*class 2 at row 1",
        ),
        (_npz(X=X3), {"dtype": "float64"}, r"^dtype must be one of float16, float32"),
        (
            _parquet(id=["a", "b"], emb=[[1.0, 2.0], [1.0]]),
            {},
            r"f\.parquet: column 'emb' row 1 has 1 values, row 0 has 2",
        ),
        (_parquet(id=["a", "b"], emb=[[1.0, 2.0], None]), {}, r"f\.parquet: column 'emb' is empty at row 1"),
        (
            _parquet(id=["a", "b"], emb=[[1.0], [2.0]], emb2=[[1.0], [2.0]]),
            {},
            r"f\.parquet: several list columns \(emb, emb2\)",
        ),
        (_parquet(id=["a", "b"], f0=[1.0, 2.0], f2=[1.0, 2.0]), {}, r"f\.parquet: numbered columns skip f1"),
        (_parquet(id=["a", "b"], name=["x", "y"]), {}, r"f\.parquet: no feature columns .*columns: id, name"),
        (_parquet(id=["a", None], f0=[1.0, 2.0]), {}, r"f\.parquet: column 'id' is empty at row 1"),
        (
            _parquet(id=["a", "a"], f0=[1.0, 2.0]),
            {},
            r"f\.parquet: column 'id' repeats id 'a' at rows 0 and 1",
        ),
        (
            _parquet(f0=[1.0, float("inf")]),
            {},
            r"f\.parquet: columns f0\.\.f0 row 1 \(id '1'\) holds NaN or Inf",
        ),
        (_parquet(key=["a", "b"], f0=[1.0, 2.0]), {"id_column": "name"}, r"f\.parquet: no id column 'name'"),
        (
            _parquet(id=["a", "b"], f0=[1.0, 2.0]),
            {"target_column": "cls"},
            r"f\.parquet: no target column 'cls'",
        ),
    ],
)
def test_bad_features_are_one_line_errors_and_write_nothing(
    tmp_path: Path, setup, kwargs, message: str
) -> None:
    assert re.search(message, _error(tmp_path, setup, **kwargs))


def test_unreadable_missing_and_unknown_files(tmp_path: Path) -> None:
    (tmp_path / "f.npy").write_bytes(b"junk")
    with pytest.raises(ImpulsesError, match=r"f\.npy: cannot read \.npy features"):
        import_features(tmp_path / "f.npy", tmp_path / "s.h5")
    with pytest.raises(ImpulsesError, match=r"nope\.npz: no such file"):
        import_features(tmp_path / "nope.npz", tmp_path / "s.h5")
    with pytest.raises(
        ImpulsesError, match=r"f\.csv: features must be a \.npy, \.npz, \.parquet, \.safetensors file"
    ):
        import_features(tmp_path / "f.csv", tmp_path / "s.h5")
    np.save(tmp_path / "obj.npy", np.array([[1, "a"]], dtype=object))
    with pytest.raises(ImpulsesError, match=r"obj\.npy: cannot read"):
        import_features(tmp_path / "obj.npy", tmp_path / "s.h5")


def test_existing_store_is_kept_unless_overwrite(tmp_path: Path) -> None:
    np.save(tmp_path / "f.npy", X3)
    import_features(tmp_path / "f.npy", tmp_path / "s.h5").close()
    before = (tmp_path / "s.h5").read_bytes()
    with pytest.raises(StoreError, match=r"s\.h5 already exists"):
        import_features(tmp_path / "f.npy", tmp_path / "s.h5")
    assert (tmp_path / "s.h5").read_bytes() == before
    np.save(tmp_path / "f.npy", X3 * 2)
    with import_features(tmp_path / "f.npy", tmp_path / "s.h5", overwrite=True) as store:
        np.testing.assert_array_equal(store.read(), X3 * 2)
    with pytest.raises(ParameterError, match=r"^features and out name the same file"):
        import_features(tmp_path / "f.npy", tmp_path / "f.npy", overwrite=True)
