"""Label sets: round trips, several label sets in one file, joins to a store, and every validation error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from impulses.embed.store import EmbeddingStore
from impulses.errors import ImpulsesError, LabelSetError
from impulses.info import describe
from impulses.pu.labels import (
    describe_label_set,
    label_frame,
    read_label_set,
    read_test_labels,
    read_test_set,
    read_training_set,
    write_label_set,
)
from impulses.pu.splits import make_split

IDS = [f"img/{i}" for i in range(8)]


@pytest.fixture
def store(tmp_path: Path) -> EmbeddingStore:
    X = np.arange(8 * 3, dtype=np.float32).reshape(8, 3)
    return EmbeddingStore.write(tmp_path / "s.h5", X, IDS, dtype="float32")


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_round_trip_with_several_label_sets(tmp_path: Path, suffix: str) -> None:
    s_a = np.array([1, 0, 0, 1, 0, 0, 0, 0])
    s_b = np.array([0, 1, 0, 0, 0, 0, 0, 1])
    y = np.array([1, 1, 0, 1, 0, 0, 1, 1])
    path = write_label_set(tmp_path / f"l{suffix}", IDS, {"a": s_a, "b": s_b}, y=y)
    labels = read_label_set(path)
    assert labels.names == ["s_a", "s_b"]
    assert list(labels.ids) == IDS
    np.testing.assert_array_equal(labels.s, np.stack([s_a, s_b], axis=1))
    np.testing.assert_array_equal(labels.y, y)
    np.testing.assert_array_equal(labels.column("b"), s_b)
    only_b = read_label_set(path, names=["s_b"])
    assert only_b.names == ["s_b"] and only_b.s.shape == (8, 1)


def test_csv_numeric_ids_stay_strings(tmp_path: Path) -> None:
    path = tmp_path / "l.csv"
    path.write_text("id,s\n007,1\n8,0\n")
    labels = read_label_set(path)
    assert list(labels.ids) == ["007", "8"]


def test_join_to_store_gives_rows_in_label_order(tmp_path: Path, store: EmbeddingStore) -> None:
    path = write_label_set(tmp_path / "l.parquet", ["img/5", "img/0", "img/7"], np.array([1, 0, 0]))
    rows = read_label_set(path).rows_in(store)
    np.testing.assert_array_equal(rows, [5, 0, 7])


def test_ids_missing_from_the_store_are_named(tmp_path: Path, store: EmbeddingStore) -> None:
    path = write_label_set(tmp_path / "l.parquet", ["img/1", "cat/9", "cat/10"], np.array([1, 0, 0]))
    with pytest.raises(LabelSetError, match=r"l.parquet: 2 ids not in .*s.h5: 'cat/9', 'cat/10'"):
        read_label_set(path).rows_in(store)


def write_frame(tmp_path: Path, data: dict, name: str = "bad.parquet") -> Path:
    path = tmp_path / name
    frame = pl.DataFrame(data)
    frame.write_parquet(path) if name.endswith(".parquet") else frame.write_csv(path)
    return path


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"name": ["a"], "s": [1]}, r"no 'id' column \(columns: name, s\)"),
        ({"id": ["a", "b"], "y": [1, 0]}, "no label column 's' or 's_<name>'"),
        ({"id": ["a", "b", "a", "c", "c"], "s": [1, 0, 0, 0, 0]}, "2 duplicate ids: 'a', 'c'"),
        ({"id": ["a", None], "s": [1, 0]}, "1 empty ids, rows 1"),
        ({"id": ["a", "b", "c"], "s": [1, None, 0]}, "column 's' is empty for 1 ids: 'b'"),
        ({"id": ["a", "b", "c"], "s": [1, 2, -1]}, "column 's' must hold 0 or 1, found 'b'=2, 'c'=-1"),
        ({"id": ["a", "b"], "s": [1.0, 0.5]}, "'b'=0.5"),
        ({"id": ["a", "b"], "s": ["yes", "no"]}, "must hold 0 or 1"),
        ({"id": ["a", "b"], "s": [0, 0]}, "label set 's' has no labeled positive"),
        ({"id": ["a", "b"], "s": [1, 0], "s_x": [0, 0]}, "label set 's_x' has no labeled positive"),
        ({"id": ["a", "b"], "s": [1, 0], "y": [1, 3]}, "column 'y' must hold 0 or 1, found 'b'=3"),
    ],
)
def test_bad_label_sets_are_errors_naming_file_and_ids(tmp_path: Path, data: dict, match: str) -> None:
    path = write_frame(tmp_path, data)
    with pytest.raises(LabelSetError, match=match) as info:
        read_label_set(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_missing_or_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(LabelSetError, match="no such label file"):
        read_label_set(tmp_path / "nope.parquet")
    with pytest.raises(LabelSetError, match=r"must be \.parquet or \.csv"):
        read_label_set(tmp_path / "l.txt")
    (tmp_path / "junk.parquet").write_bytes(b"garbage")
    with pytest.raises(LabelSetError, match="cannot read label file"):
        read_label_set(tmp_path / "junk.parquet")
    with pytest.raises(LabelSetError, match="no label set 'zz'"):
        read_label_set(write_frame(tmp_path, {"id": ["a"], "s": [1]}), names=["zz"])


def test_header_only_file_is_an_error_but_describable(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("id,s\n")
    with pytest.raises(LabelSetError, match="has no rows"):
        read_label_set(path)
    assert describe_label_set(path)["rows"] == 0


def test_test_labels(tmp_path: Path, store: EmbeddingStore) -> None:
    path = write_label_set(tmp_path / "t.csv", ["img/2", "img/3"], None, y=np.array([0, 1]))
    test = read_test_labels(path)
    np.testing.assert_array_equal(test.y, [0, 1])
    np.testing.assert_array_equal(test.rows_in(store), [2, 3])
    with pytest.raises(LabelSetError, match="needs a 'y' column"):
        read_test_labels(write_frame(tmp_path, {"id": ["a"], "s": [1]}))


def test_describe_counts_and_prior(tmp_path: Path) -> None:
    # 10 rows: 2 labeled positives; among the 8 unlabeled, 2 positives -> π = 2/8; c = 2/4
    s = np.array([1, 1, 0, 0, 0, 0, 0, 0, 0, 0])
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    path = write_label_set(tmp_path / "l.parquet", [f"i{k}" for k in range(10)], s, y=y)
    summary = describe_label_set(path)
    assert summary["rows"] == 10 and summary["label_sets"] == ["s"]
    assert summary["s"] == {
        "labeled_positives": 2,
        "unlabeled": 8,
        "positives_among_unlabeled": 2,
        "prior": 0.25,
        "label_frequency": 0.5,
    }
    assert describe(path) == summary  # impulses info dispatches here by suffix
    test = write_label_set(tmp_path / "t.csv", ["a", "b", "c", "d"], None, y=np.array([1, 0, 0, 0]))
    assert describe_label_set(test) == {
        "kind": "test label set",
        "rows": 4,
        "positives": 1,
        "negatives": 3,
        "prevalence": 0.25,
    }


def test_label_set_error_is_an_impulses_error() -> None:
    assert issubclass(LabelSetError, ImpulsesError)


# --------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_write_label_set_round_trips_and_leaves_no_temp_file(tmp_path, suffix):
    split = make_split(
        [f"train/{i}" for i in range(100)], np.repeat(np.arange(5), 20), [0, 1], n_label_sets=2
    )
    path = write_label_set(split.labels, tmp_path / "sub" / f"labels{suffix}")
    back = pl.read_parquet(path) if suffix == ".parquet" else pl.read_csv(path)
    assert back.columns == ["id", "y", "s_0", "s_1"]
    assert back["id"].to_list() == split.labels["id"].to_list()
    assert back["s_1"].to_list() == split.labels["s_1"].to_list()
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_write_label_set_is_atomic_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "labels.parquet"
    path.write_bytes(b"previous")

    def boom(self, target):
        Path(target).write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(pl.DataFrame, "write_parquet", boom)
    with pytest.raises(OSError, match="disk full"):
        write_label_set(pl.DataFrame({"id": ["a"], "s": [1]}), path)
    assert path.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["labels.parquet"]


def test_write_label_set_refuses_other_suffixes(tmp_path):
    with pytest.raises(LabelSetError, match=r"labels.txt: a label set must end in .parquet or .csv"):
        write_label_set(pl.DataFrame({"id": ["a"], "s": [1]}), tmp_path / "labels.txt")


@pytest.mark.parametrize("name", ["run[1].csv", "l?.parquet", "étiquettes*.csv", "l[ab].parquet"])
def test_label_files_whose_names_look_like_globs_are_read_as_paths(tmp_path, name):
    (tmp_path / "run1.csv").write_text("id,s\nx,1\n")  # what a glob would wrongly match
    (tmp_path / "l1.parquet").write_bytes(b"")
    (tmp_path / "la.parquet").write_bytes(b"")
    path = write_label_set(
        label_frame(["a", "b", "c"], np.array([1, 0, 0]), y=np.array([1, 1, 0])), tmp_path / name
    )
    labels = read_label_set(path)
    assert labels.ids.tolist() == ["a", "b", "c"] and labels.s[:, 0].tolist() == [1, 0, 0]
    assert read_test_labels(path).y.tolist() == [1, 1, 0]


def test_training_and_test_sets_read_a_stores_rows(tmp_path):
    from impulses.embed.store import EmbeddingStore

    X = np.arange(12, dtype=np.float32).reshape(6, 2)
    store = EmbeddingStore.write(
        tmp_path / "s[1].h5", X, [f"r{i}" for i in range(6)], targets=[0, 1, 2, 0, 1, 2]
    )
    labels = write_label_set(
        label_frame(
            ["r4", "r1", "r2"], {"a": np.array([1, 0, 0]), "b": np.array([0, 1, 0])}, y=np.array([1, 1, 0])
        ),
        tmp_path / "l[1].csv",
    )
    train = read_training_set(store, labels, names=["b"])
    assert train.names == ["s_b"] and train.rows.tolist() == [4, 1, 2] and train.S[:, 0].tolist() == [0, 1, 0]
    np.testing.assert_array_equal(train.X, X[[4, 1, 2]].astype(np.float16))
    assert train.X.dtype == np.float16 and train.y.tolist() == [1, 1, 0] and train.labels == labels
    test = read_test_set(store, labels)
    assert test.targets.tolist() == [1, 1, 2] and test.y.tolist() == [1, 1, 0]
    no_y = write_label_set(label_frame(["r0"], np.array([1])), tmp_path / "no_y.csv")
    with pytest.raises(LabelSetError, match="no 'y' column"):
        read_training_set(store, no_y, require_y=True)
