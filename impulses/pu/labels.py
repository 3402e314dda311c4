"""Label sets: which samples of a store are labeled positive, read and written with polars.

A **training label set** is a Parquet or CSV file with

- ``id`` (string): a sample id of the embedding store, unique in the file;
- one or more **label columns**, each a label set over the same rows: ``s`` and/or ``s_<name>``
  (0/1: 1 = labeled positive, 0 = unlabeled). Several label sets in one file (e.g. ``s_c02``,
  ``s_c05`` for two label frequencies, or ``s_seed0``, ``s_seed1`` for resampled labelings) train
  together: one pass over the features trains heads for every label set. A label set is named by
  its column (``s``, ``s_c02``); ``impulses train-head`` writes that name to ``label_set``;
- optionally ``y`` (0/1), the true label, used only for evaluation and by the ``pn`` loss.

A **test label set** has ``id`` and ``y``.

The rows of a label set are the training rows: store samples it does not list are not used (a
store may hold a whole dataset while a PU task uses part of it). Every problem is an error whose
message names the file and the offending ids or rows, nothing is dropped silently: missing
columns, nulls, duplicate ids, values outside {0, 1}, a label set without a labeled positive, and
ids the store does not hold.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from impulses.atomic import atomic_path
from impulses.errors import LabelSetError, ParameterError, StoreError

LABEL_COLUMN = re.compile(r"^s(_.+)?$")
LABEL_SET_SUFFIXES = (".parquet", ".csv")  # the file types a label set may be
_SHOW = 5


def _show(values: Sequence[Any], total: int | None = None) -> str:
    """The first few offending ids/rows, and how many more there are."""
    total = len(values) if total is None else total
    shown = ", ".join(repr(v) if isinstance(v, str) else str(v) for v in list(values)[:_SHOW])
    return shown + (f" and {total - _SHOW} more" if total > _SHOW else "")


@dataclass
class LabelSet:
    """A label file in memory: ids, one label column per label set, and the true labels when present."""

    path: Path
    ids: np.ndarray  # (N,) object array of str
    s: np.ndarray  # (N, L) int8, column j = label set names[j]
    names: list[str]
    y: np.ndarray | None = None  # (N,) int8

    def __len__(self) -> int:
        return len(self.ids)

    def column(self, name: str) -> np.ndarray:
        """The labels of one label set, by column name (``s_c02``) or short name (``c02``)."""
        for candidate in (name, f"s_{name}"):
            if candidate in self.names:
                return self.s[:, self.names.index(candidate)]
        raise LabelSetError(f"{self.path}: no label set {name!r} (has {', '.join(self.names)})")

    def select(self, names: Sequence[str]) -> LabelSet:
        """The same rows with only the label sets ``names`` (column or short names)."""
        cols = [self.column(name) for name in names]
        full = [name if name in self.names else f"s_{name}" for name in names]
        return LabelSet(self.path, self.ids, np.stack(cols, axis=1), full, self.y)

    def rows_in(self, store: Any) -> np.ndarray:
        """Row index in ``store`` (an EmbeddingStore) of every id; ids the store lacks are an error."""
        return store_rows(self.path, self.ids, store)


@dataclass
class TestLabels:
    """A test label file: ids and true labels."""

    path: Path
    ids: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def rows_in(self, store: Any) -> np.ndarray:
        """Rows of this set's ids in ``store``; an error names the ids it lacks."""
        return store_rows(self.path, self.ids, store)


def store_rows(path: Path, ids: np.ndarray, store: Any) -> np.ndarray:
    """Rows of ``ids`` in ``store``, with an error naming both files and the missing ids."""
    try:
        return store.rows_of(ids, what="ids")
    except StoreError as err:
        raise LabelSetError(f"{path}: {err}") from None


# ---------------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------------
def _read_frame(path: str | os.PathLike[str]) -> tuple[Path, pl.DataFrame]:
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in LABEL_SET_SUFFIXES:
        raise LabelSetError(f"{path}: a label set must be .parquet or .csv")
    if not path.exists():
        raise LabelSetError(f"{path}: no such label file")
    try:
        if suffix == ".csv":
            # glob=False: a name such as run[1].csv or l?.csv is a file, not a pattern
            frame = pl.read_csv(
                path, schema_overrides={"id": pl.String}, infer_schema_length=None, glob=False
            )
        else:
            frame = pl.read_parquet(path, glob=False)
    except Exception as err:  # polars raises many kinds: all mean "not a readable table"
        raise LabelSetError(
            f"{path}: cannot read label file ({type(err).__name__}: {err})".splitlines()[0]
        ) from None
    return path, frame


def _ids(path: Path, frame: pl.DataFrame) -> np.ndarray:
    if "id" not in frame.columns:
        raise LabelSetError(f"{path}: no 'id' column (columns: {', '.join(frame.columns) or 'none'})")
    col = frame.get_column("id")
    nulls = np.flatnonzero(col.is_null().to_numpy())
    if nulls.size:
        raise LabelSetError(f"{path}: {nulls.size} empty ids, rows {_show(nulls.tolist())}")
    ids = col.cast(pl.String).to_numpy().astype(object)
    dupes = frame.select(pl.col("id").cast(pl.String)).filter(pl.col("id").is_duplicated()).get_column("id")
    if len(dupes):
        unique = list(dict.fromkeys(dupes.to_list()))
        raise LabelSetError(f"{path}: {len(unique)} duplicate ids: {_show(unique)}")
    return ids


def _binary(path: Path, frame: pl.DataFrame, name: str, ids: np.ndarray) -> np.ndarray:
    """Column ``name`` as int8 0/1; nulls or other values are errors naming the ids."""
    col = frame.get_column(name)
    if len(col) == 0:
        return np.zeros(0, dtype=np.int8)
    nulls = np.flatnonzero(col.is_null().to_numpy())
    if nulls.size:
        raise LabelSetError(
            f"{path}: column {name!r} is empty for {nulls.size} ids: {_show(ids[nulls].tolist())}"
        )
    if col.dtype == pl.Boolean:
        return col.cast(pl.Int8).to_numpy()
    if not col.dtype.is_numeric():
        bad = [str(v) for v in col.unique().to_list() if str(v) not in ("0", "1")]
        raise LabelSetError(f"{path}: column {name!r} must hold 0 or 1, found {_show(bad)}")
    values = col.cast(pl.Float64).to_numpy()
    bad = np.flatnonzero((values != 0) & (values != 1))
    if bad.size:
        shown = ", ".join(f"{ids[i]!r}={values[i]:g}" for i in bad[:_SHOW])
        more = f" and {bad.size - _SHOW} more" if bad.size > _SHOW else ""
        raise LabelSetError(f"{path}: column {name!r} must hold 0 or 1, found {shown}{more}")
    return values.astype(np.int8)


def label_columns(frame: pl.DataFrame) -> list[str]:
    """The label-set columns of a frame: ``s`` and ``s_<name>``, in file order."""
    return [c for c in frame.columns if LABEL_COLUMN.match(c)]


def read_label_set(
    path: str | os.PathLike[str], *, names: Sequence[str] | None = None, require_positive: bool = True
) -> LabelSet:
    """Read and validate a training label set (all label columns, or only ``names``)."""
    path, frame = _read_frame(path)
    ids = _ids(path, frame)
    columns = label_columns(frame)
    if not columns:
        raise LabelSetError(
            f"{path}: no label column 's' or 's_<name>' (columns: {', '.join(frame.columns)})"
        )
    s = np.stack([_binary(path, frame, c, ids) for c in columns], axis=1)
    y = _binary(path, frame, "y", ids) if "y" in frame.columns else None
    labels = LabelSet(path, ids, s, columns, y)
    if names:
        labels = labels.select(names)
    if len(labels) == 0:
        raise LabelSetError(f"{path}: the label set has no rows")
    if require_positive:
        for j, name in enumerate(labels.names):
            if not labels.s[:, j].any():
                raise LabelSetError(
                    f"{path}: label set {name!r} has no labeled positive (no row with {name} = 1)"
                )
    return labels


def read_test_labels(path: str | os.PathLike[str]) -> TestLabels:
    """Read and validate a test label set (``id``, ``y``)."""
    path, frame = _read_frame(path)
    ids = _ids(path, frame)
    if "y" not in frame.columns:
        raise LabelSetError(
            f"{path}: a test label set needs a 'y' column (columns: {', '.join(frame.columns)})"
        )
    if len(ids) == 0:
        raise LabelSetError(f"{path}: the test label set has no rows")
    return TestLabels(path, ids, _binary(path, frame, "y", ids))


# ---------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------
def label_frame(
    ids: Sequence[str] | np.ndarray,
    s: np.ndarray | Mapping[str, np.ndarray] | None = None,
    *,
    y: np.ndarray | None = None,
) -> pl.DataFrame:
    """A label-set table from arrays.

    Ids with one label set (``s`` an array: column ``s``), several (a mapping name -> array:
    ``s_<name>`` columns, or ``s`` for the name "s"), or none (a test set: ``y`` only).
    """
    data: dict[str, Any] = {"id": [str(i) for i in ids]}
    if isinstance(s, Mapping):
        for name, values in s.items():
            column = name if LABEL_COLUMN.match(name) else f"s_{name}"
            data[column] = np.asarray(values, dtype=np.int8)
    elif s is not None:
        data["s"] = np.asarray(s, dtype=np.int8)
    if y is not None:
        data["y"] = np.asarray(y, dtype=np.int8)
    return pl.DataFrame(data, schema_overrides={"id": pl.String})


def write_label_set(frame: Any, path: Any, *args: Any, y: np.ndarray | None = None) -> Path:
    """Write a label-set table as Parquet or CSV (by the suffix of ``path``), atomically.

    Args:
        frame: The table (``id``, label columns ``s``/``s_<name>``, optionally ``y``), a polars frame.
            The array form ``write_label_set(path, ids, s, y=...)`` (see :func:`label_frame`) is
            accepted as well.
        path: The file to write (.parquet or .csv); its folder is created.
        *args: In the array form, ``s`` (see :func:`label_frame`); nothing with a frame.
        y: In the array form, the true classes (a test set's column ``y``); None with a frame.

    Returns:
        The path written.

    Raises:
        LabelSetError: ``path`` is neither .parquet nor .csv.
    """
    if not isinstance(frame, pl.DataFrame):  # the array form: (path, ids, s=None, *, y=None)
        frame, path = label_frame(path, *args, y=y), frame
    elif args or y is not None:
        raise ParameterError("frame", "carries its labels: give no ids, s or y with a frame")
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in LABEL_SET_SUFFIXES:
        raise LabelSetError(f"{path}: a label set must end in .parquet or .csv")
    with atomic_path(path) as tmp:
        if suffix == ".parquet":
            frame.write_parquet(tmp)
        else:
            frame.write_csv(tmp)
    return path


# ---------------------------------------------------------------------------------------------
# summary
# ---------------------------------------------------------------------------------------------
def describe_label_set(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Counts of a label-set file for ``impulses info``.

    Rows, labeled positives, unlabeled, and with ``y`` the positives among the unlabeled,
    π = p(y=1 | s=0), and the label frequency c = p(s=1 | y=1).
    """
    path, frame = _read_frame(path)
    ids = _ids(path, frame)
    columns = label_columns(frame)
    y = _binary(path, frame, "y", ids) if "y" in frame.columns else None
    if not columns:
        if y is None:
            raise LabelSetError(f"{path}: neither label columns ('s', 's_<name>') nor 'y'")
        return {
            "kind": "test label set",
            "rows": len(ids),
            "positives": int(y.sum()),
            "negatives": int(len(y) - y.sum()),
            "prevalence": float(y.mean()) if len(y) else None,
        }
    summary: dict[str, Any] = {"kind": "label set", "rows": len(ids), "label_sets": columns}
    for name in columns:
        s = _binary(path, frame, name, ids)
        entry: dict[str, Any] = {"labeled_positives": int(s.sum()), "unlabeled": int(len(s) - s.sum())}
        if y is not None:
            wrong = np.flatnonzero((s == 1) & (y == 0))
            unl = s == 0
            entry["positives_among_unlabeled"] = int(y[unl].sum())
            entry["prior"] = float(y[unl].mean()) if unl.any() else None
            entry["label_frequency"] = float(s[y == 1].mean()) if y.any() else None
            if wrong.size:
                entry["labeled_but_y0"] = int(wrong.size)
        summary[name] = entry
    if y is not None:
        summary["positives"] = int(y.sum())
    return summary


# ---------------------------------------------------------------------------------------------
# a store's rows for a label set
# ---------------------------------------------------------------------------------------------
@dataclass
class TrainingSet:
    """The training rows of a label set: features, one label column per label set, the true labels."""

    X: np.ndarray | None  # (N, D) in the store's dtype; None when not read (features=False)
    S: np.ndarray  # (N, L) int8, column j = label set names[j]
    y: np.ndarray | None  # (N,) int8
    names: list[str]
    rows: np.ndarray  # row of each sample in the store
    store: Any
    labels: Path


@dataclass
class TestSet:
    """The rows of a test label set: features, true labels, and the store's class targets."""

    __test__ = False  # not a pytest test class

    X: np.ndarray
    y: np.ndarray
    rows: np.ndarray
    targets: np.ndarray
    class_names: list[str] | None


def read_training_set(
    store: Any,
    labels: str | os.PathLike[str],
    names: Sequence[str] | None = None,
    *,
    require_y: bool = False,
    features: bool = True,
) -> TrainingSet:
    """Features and labels of a label set's rows in an embedding store.

    Args:
        store: An open :class:`~impulses.embed.store.EmbeddingStore` (duck-typed: ``rows_of``, ``read``,
            ``dtype``).
        labels: The label file (.parquet/.csv); a path, never a glob pattern.
        names: Only these label sets (column or short names); default all.
        require_y: The caller needs the true labels (the pn loss): a file without ``y`` is an error.
        features: Read the features; False leaves ``X`` None (a caller that reads ``rows`` from the
            store itself, in windows).

    Returns:
        A :class:`TrainingSet`; float16 features stay float16.

    Raises:
        LabelSetError: a bad label file, ids the store lacks, or no ``y`` when required.
    """
    label_file = read_label_set(labels, names=names)
    if require_y and label_file.y is None:
        raise LabelSetError(f"{label_file.path}: no 'y' column, which training on the true labels (pn) needs")
    rows = label_file.rows_in(store)
    X = store.read(rows, dtype=store.dtype) if features else None
    return TrainingSet(X, label_file.s, label_file.y, list(label_file.names), rows, store, label_file.path)


def read_test_set(store: Any, labels: str | os.PathLike[str]) -> TestSet:
    """Features, labels and class targets of a test label set's rows in an embedding store.

    Raises:
        LabelSetError: a bad test label file or ids the store lacks.
    """
    test_file = read_test_labels(labels)
    rows = test_file.rows_in(store)
    return TestSet(
        store.read(rows, dtype=store.dtype), test_file.y, rows, store.targets[rows], store.class_names
    )
