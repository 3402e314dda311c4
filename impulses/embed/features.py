"""Features made elsewhere, imported as an embedding store, so the PU stage serves any embedding.

:func:`import_features` reads a feature matrix from ``.npy``, ``.npz``, Parquet or ``.safetensors``
(text, tabular or foundation-model embeddings computed by another tool), checks it (shape, NaN/Inf,
the store dtype's range, unique ids) and writes a normal store through
:class:`~impulses.embed.store.StoreWriter` (``NAME.partial``, then renamed), so every command that
reads a store reads it. The store records where it came from: ``encoder`` = ``"imported"``,
``source`` = ``"import:<file name>"``, ``encoder_sha256`` = the sha256 of the imported file, and
``import_path`` / ``provenance`` attributes.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from impulses.data.manifest import encode_labels
from impulses.embed.store import DTYPES, EmbeddingStore, StoreError, StoreSpec, StoreWriter
from impulses.errors import ImpulsesError, ParameterError
from impulses.files import file_sha256

FEATURE_SUFFIXES = (".npy", ".npz", ".parquet", ".safetensors")
EMBEDDING_NAMES = ("embeddings", "X")  # array/tensor names looked for in .npz and .safetensors files
TARGET_NAMES = ("targets", "y")
TARGET_COLUMNS = ("target", "label", "y")  # Parquet columns taken as targets when target_column is None
CHUNK_BYTES = 64 << 20  # rows checked and written per step: memory stays flat for memory-mapped .npy files
_NUMBERED = re.compile(r"^(f?)(\d+)$")


@dataclass
class _Read:
    """What a feature file holds: the (N, D) matrix, optional ids/targets, and how to name each in errors."""

    X: np.ndarray
    x_name: str
    ids: list[str] | None = None
    id_name: str = "ids"
    targets: list[object] | None = None
    target_name: str = "targets"
    class_names: list[str] | None = None


def _label_values(values: Any, what: str) -> list[object]:
    """Labels as a list of int / str / None; a float array must hold whole numbers (NaN: unknown)."""
    array = np.asarray(values)
    if array.ndim != 1:
        raise ImpulsesError(f"{what} must be 1-D, got shape {array.shape}")
    if array.dtype.kind in "biu":
        return [int(v) for v in array]
    if array.dtype.kind == "f":
        known = ~np.isnan(array)
        if not np.array_equal(array[known], np.round(array[known])):
            row = int(np.flatnonzero(known & (array != np.round(array)))[0])
            raise ImpulsesError(
                f"{what} holds a fractional value at row {row} ({array[row]}); labels are classes"
            )
        return [int(v) if k else None for v, k in zip(array, known, strict=True)]
    return [None if v is None else str(v) for v in array.tolist()]


def _npz_pick(arrays: Mapping[str, Any], wanted: str | None, names: Sequence[str], path: Path) -> str | None:
    if wanted is not None:
        if wanted not in arrays:
            raise ImpulsesError(f"{path}: no array {wanted!r} (arrays: {', '.join(arrays) or 'none'})")
        return wanted
    return next((n for n in names if n in arrays), None)


def _read_arrays(path: Path, embedding_column: str | None, target_column: str | None) -> _Read:
    """An .npy (the matrix), .npz (named arrays) or .safetensors (named tensors) file."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            return _Read(np.load(path, mmap_mode="r", allow_pickle=False), "the array")
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                arrays: Mapping[str, Any] = {name: npz[name] for name in npz.files}
        else:
            from safetensors.numpy import load_file

            arrays = load_file(str(path))
    except (
        Exception
    ) as err:  # numpy/safetensors raise ValueError, OSError, zipfile errors, SafetensorError...
        raise ImpulsesError(f"{path}: cannot read {suffix} features ({type(err).__name__}: {err})") from None
    x_key = _npz_pick(arrays, embedding_column, EMBEDDING_NAMES, path)
    if x_key is None:
        raise ImpulsesError(
            f"{path}: no array named {' or '.join(EMBEDDING_NAMES)} (arrays: {', '.join(arrays) or 'none'}); "
            "name the one holding the features with embedding_column"
        )
    read = _Read(np.asarray(arrays[x_key]), f"array {x_key!r}")
    y_key = _npz_pick(arrays, target_column, TARGET_NAMES, path)
    if y_key is not None:
        read.targets = _label_values(arrays[y_key], f"{path}: array {y_key!r}")
        read.target_name = f"array {y_key!r}"
    if "ids" in arrays:
        read.ids = [str(v) for v in np.asarray(arrays["ids"]).reshape(-1).tolist()]
        read.id_name = "array 'ids'"
    if "class_names" in arrays:
        read.class_names = [str(v) for v in np.asarray(arrays["class_names"]).reshape(-1).tolist()]
    return read


def _read_parquet(
    path: Path, id_column: str, target_column: str | None, embedding_column: str | None
) -> _Read:
    """A Parquet table: an id column, one list/array column or numbered columns (f0..fD or 0..D), targets."""
    import polars as pl

    try:
        frame = pl.read_parquet(path)
    except Exception as err:  # polars raises ComputeError, OSError, ...
        raise ImpulsesError(f"{path}: cannot read Parquet features ({type(err).__name__}: {err})") from None
    columns = frame.columns
    if embedding_column is not None:
        if embedding_column not in columns:
            raise ImpulsesError(f"{path}: no column {embedding_column!r} (columns: {', '.join(columns)})")
        X, x_name = _vector_column(frame[embedding_column], path), f"column {embedding_column!r}"
    else:
        vectors = [c for c in columns if isinstance(frame[c].dtype, (pl.List, pl.Array))]
        if len(vectors) > 1:
            raise ImpulsesError(
                f"{path}: several list columns ({', '.join(vectors)}); name the features with embedding_column"
            )
        if vectors:
            X, x_name = _vector_column(frame[vectors[0]], path), f"column {vectors[0]!r}"
        else:
            X, x_name = _numbered_columns(frame, path)
    read = _Read(X, x_name)
    if id_column in columns:
        ids = frame[id_column]
        if ids.null_count():
            row = int(np.flatnonzero(ids.is_null().to_numpy())[0])
            raise ImpulsesError(f"{path}: column {id_column!r} is empty at row {row}")
        read.ids, read.id_name = ids.cast(pl.String).to_list(), f"column {id_column!r}"
    elif id_column != "id":
        raise ImpulsesError(f"{path}: no id column {id_column!r} (columns: {', '.join(columns)})")
    if target_column is not None and target_column not in columns:
        raise ImpulsesError(f"{path}: no target column {target_column!r} (columns: {', '.join(columns)})")
    y_name = target_column or next((c for c in TARGET_COLUMNS if c in columns), None)
    if y_name is not None:
        series = frame[y_name]
        values = (
            series.to_numpy() if series.dtype.is_numeric() else np.asarray(series.to_list(), dtype=object)
        )
        read.targets = _label_values(values, f"{path}: column {y_name!r}")
        read.target_name = f"column {y_name!r}"
    return read


def _vector_column(series: Any, path: Path) -> np.ndarray:
    """A list or array column of equal-length numeric vectors as an (N, D) array."""
    import polars as pl

    name = f"{path}: column {series.name!r}"
    if not isinstance(series.dtype, (pl.List, pl.Array)) or not series.dtype.inner.is_numeric():
        raise ImpulsesError(f"{name} holds {series.dtype}, not numeric vectors")
    if series.null_count():
        row = int(np.flatnonzero(series.is_null().to_numpy())[0])
        raise ImpulsesError(f"{name} is empty at row {row}")
    if isinstance(series.dtype, pl.List):
        lengths = series.list.len().to_numpy()
        if len(lengths) and (lengths != lengths[0]).any():
            row = int(np.flatnonzero(lengths != lengths[0])[0])
            raise ImpulsesError(
                f"{name} row {row} has {lengths[row]} values, row 0 has {lengths[0]}; every vector needs the same length"
            )
        dim = int(lengths[0]) if len(lengths) else 0
        flat = series.explode().to_numpy()
        return flat.reshape(len(series), dim) if len(series) else np.empty((0, dim))
    return series.to_numpy()


def _numbered_columns(frame: Any, path: Path) -> tuple[np.ndarray, str]:
    """Columns ``f0..f{D-1}`` (or ``0..D-1``), in numeric order, as an (N, D) array."""
    found: dict[str, dict[int, str]] = {}
    for column in frame.columns:
        match = _NUMBERED.match(column)
        if match:
            found.setdefault(match[1], {})[int(match[2])] = column
    if not found:
        raise ImpulsesError(
            f"{path}: no feature columns (a list/array column, or numbered columns f0..fD or 0..D); "
            f"columns: {', '.join(frame.columns)}"
        )
    if len(found) > 1:
        raise ImpulsesError(f"{path}: has both numbered columns f0.. and 0..; keep one set")
    ((prefix, numbered),) = found.items()
    missing = next((i for i in range(len(numbered)) if i not in numbered), None)
    if missing is not None:
        raise ImpulsesError(f"{path}: numbered columns skip {prefix}{missing} (have {len(numbered)} columns)")
    names = [numbered[i] for i in range(len(numbered))]
    for name in names:
        if not frame[name].dtype.is_numeric():
            raise ImpulsesError(f"{path}: column {name!r} holds {frame[name].dtype}, not numbers")
    return frame.select(names).to_numpy(), f"columns {prefix}0..{prefix}{len(names) - 1}"


def _check_matrix(X: np.ndarray, ids: list[str], dtype: str, where: str) -> None:
    """Refuse NaN/Inf and values the store's dtype cannot hold, naming the first bad row and its id."""
    limit = float(np.finfo(dtype).max)
    step = max(1, CHUNK_BYTES // max(1, X.shape[1] * X.dtype.itemsize))
    for start in range(0, X.shape[0], step):
        block = np.asarray(X[start : start + step])
        finite = np.isfinite(block).all(axis=1) if block.dtype.kind == "f" else np.ones(len(block), bool)
        if not finite.all():
            row = start + int(np.flatnonzero(~finite)[0])
            raise ImpulsesError(
                f"{where} row {row} (id {ids[row]!r}) holds NaN or Inf; fix or drop such rows before importing"
            )
        peak = np.abs(block).max(axis=1) if block.size else np.zeros(0)
        over = np.flatnonzero(peak > limit)
        if over.size:
            row = start + int(over[0])
            raise ParameterError(
                "dtype",
                f"{dtype} cannot hold {where} row {row} (id {ids[row]!r}): values up to {peak[over[0]]:.3g} "
                f"exceed its range ({limit:.3g}); use float32",
            )


def import_features(
    features: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    ids: Sequence[str] | None = None,
    targets: Sequence[int] | Sequence[str] | None = None,
    id_column: str = "id",
    target_column: str | None = None,
    embedding_column: str | None = None,
    dtype: str = "float16",
    overwrite: bool = False,
    class_names: Sequence[str] | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> EmbeddingStore:
    """Write the feature matrix in ``features`` as the embedding store ``out`` (``impulses import``).

    Formats: ``.npy`` (the (N, D) matrix); ``.npz`` (array ``embeddings`` or ``X``, optional ``ids``,
    ``targets`` or ``y``, ``class_names``); Parquet (an id column, one list/array column or
    numbered columns ``f0..f{D-1}`` / ``0..D-1``, optional ``target``/``label``/``y`` column);
    ``.safetensors`` (tensor ``embeddings`` or ``X``, optional ``targets`` or ``y``). Rows keep
    the file's order; ids default to the row numbers ``"0".."N-1"`` when the file has none.
    Targets are integers (-1: unknown) or strings, numbered by sorted name (or by ``class_names``).

    Intended CLI: ``impulses import FEATURES --out STORE [--id-column NAME] [--target-column NAME]
    [--embedding-column NAME] [--class-names A,B,...] [--dtype float16|float32] [--overwrite] [--json]``.

    Args:
        features: The ``.npy``, ``.npz``, ``.parquet`` or ``.safetensors`` file.
        out: The store to write (HDF5).
        ids: One id per row; replaces the file's ids.
        targets: One class per row (int, or str); replaces the file's targets.
        id_column: The Parquet column holding ids (a missing ``"id"`` column means no ids).
        target_column: The Parquet column (or .npz/.safetensors array) holding targets; default:
            ``target``, ``label`` or ``y`` (``targets`` or ``y`` for arrays) when present.
        embedding_column: The Parquet column (or array) holding the features; default: the one
            list/array column, else the numbered columns (``embeddings`` or ``X`` for arrays).
        dtype: The store's float dtype, ``float16`` (half the file) or ``float32``.
        overwrite: Replace an existing store at ``out``.
        class_names: Names of the classes: string targets are numbered by their position here,
            integer targets must index it.
        provenance: What made the features (model, version, command...): stored as JSON in the
            store's ``provenance`` attribute.

    Returns:
        The new store, open.

    Raises:
        ImpulsesError: An unreadable file, a missing array/column, wrong shapes, NaN/Inf, duplicate or
            empty ids, bad targets: the message names the file, array/column and row.
        ParameterError: ``ids``/``targets``/``class_names`` that do not fit the file, a bad ``dtype``
            or values ``dtype`` cannot hold.
        StoreError: ``out`` exists and ``overwrite`` is false.
    """
    path = Path(features).expanduser()
    out = Path(out).expanduser()
    if dtype not in DTYPES:
        raise ParameterError("dtype", f"must be one of {', '.join(DTYPES)}, got {dtype!r}")
    suffix = path.suffix.lower()
    if suffix not in FEATURE_SUFFIXES:
        raise ImpulsesError(f"{path}: features must be a {', '.join(FEATURE_SUFFIXES)} file")
    if not path.is_file():
        raise ImpulsesError(f"{path}: no such file")
    if out.is_dir():
        raise StoreError(f"{out} is a folder; out names the store file to write")
    if out.exists() and out.resolve() == path.resolve():
        raise ParameterError(("features", "out"), f"name the same file ({path})")
    if out.exists() and not overwrite:
        raise StoreError(f"{out} already exists (use --overwrite to replace it)")
    if suffix == ".parquet":
        read = _read_parquet(path, id_column, target_column, embedding_column)
    else:
        read = _read_arrays(path, embedding_column, target_column)
    X = read.X
    where = f"{path}: {read.x_name}"
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise ImpulsesError(f"{where} must be a non-empty 2-D matrix (rows, features), got shape {X.shape}")
    if X.dtype.kind not in "fiub":
        raise ImpulsesError(f"{where} holds {X.dtype} values, not numbers")
    n = X.shape[0]
    row_ids = _ids(ids, read, n, path)
    labels = _targets(targets, read, n, path)
    if class_names is None:
        class_names = read.class_names
    target_array, names = _encode(
        labels, class_names, n, path, read.target_name, from_param=targets is not None
    )
    _check_matrix(X, row_ids, dtype, where)
    sha = file_sha256(path)
    spec = StoreSpec(encoder="imported", source=f"import:{path.name}", encoder_sha256=sha)
    writer = StoreWriter.create(
        out,
        spec=spec,
        dim=X.shape[1],
        capacity=n,
        dtype=dtype,
        class_names=names,
        overwrite=overwrite,
        resume=False,
        extra_attrs={
            "import_path": str(path.resolve()),
            "provenance": json.dumps(dict(provenance or {}), sort_keys=True, default=str),
        },
    )
    try:
        step = max(1, CHUNK_BYTES // (X.shape[1] * 4))
        for start in range(0, n, step):
            stop = min(n, start + step)
            writer.append(
                np.asarray(X[start:stop], dtype=np.float32), row_ids[start:stop], target_array[start:stop]
            )
        return writer.finalize()
    except BaseException:
        writer.close()
        writer.partial.unlink(missing_ok=True)  # an import is quick to redo: leave no half-written file
        raise


def _ids(ids: Sequence[str] | None, read: _Read, n: int, path: Path) -> list[str]:
    """Row ids (the parameter's, the file's, or the row numbers), checked non-empty and unique."""
    if ids is not None:
        row_ids, name = [str(i) for i in ids], None
        if len(row_ids) != n:
            raise ParameterError("ids", f"has {len(row_ids)} entries but {path} has {n} rows")
    elif read.ids is not None:
        row_ids, name = read.ids, f"{path}: {read.id_name}"
        if len(row_ids) != n:
            raise ImpulsesError(f"{name} has {len(row_ids)} entries but {read.x_name} has {n} rows")
    else:
        return [str(i) for i in range(n)]
    first: dict[str, int] = {}
    for row, sample_id in enumerate(row_ids):
        if not sample_id:
            if name is None:
                raise ParameterError("ids", f"entry {row} is empty")
            raise ImpulsesError(f"{name} is empty at row {row}")
        if sample_id in first:
            message = f"repeats id {sample_id!r} at rows {first[sample_id]} and {row}; ids must be unique"
            if name is None:
                raise ParameterError("ids", message)
            raise ImpulsesError(f"{name} {message}")
        first[sample_id] = row
    return row_ids


def _targets(targets: Sequence[Any] | None, read: _Read, n: int, path: Path) -> list[object] | None:
    if targets is not None:
        given = list(targets)
        kind = object if any(isinstance(t, str) or t is None for t in given) else None
        values = _label_values(np.asarray(given, dtype=kind), "targets")
        if len(values) != n:
            raise ParameterError("targets", f"has {len(values)} entries but {path} has {n} rows")
        return values
    if read.targets is not None and len(read.targets) != n:
        raise ImpulsesError(
            f"{path}: {read.target_name} has {len(read.targets)} entries but {read.x_name} has {n} rows"
        )
    return read.targets


def _encode(
    labels: list[object] | None,
    class_names: Sequence[str] | None,
    n: int,
    path: Path,
    target_name: str,
    *,
    from_param: bool,
) -> tuple[np.ndarray, list[str] | None]:
    """Targets as class indices (-1: unknown) and the store's class names."""
    what = "targets" if from_param else f"{path}: {target_name}"
    names = [str(c) for c in class_names] if class_names is not None else None
    if labels is None:
        return np.full(n, -1, dtype=np.int64), names
    strings = any(isinstance(v, str) for v in labels)
    if strings and names is not None:
        index = {name: k for k, name in enumerate(names)}
        out = np.full(n, -1, dtype=np.int64)
        for row, value in enumerate(labels):
            if value is None or value == "":
                continue
            if str(value) not in index:
                raise ImpulsesError(f"{what}: row {row} has class {value!r}, not among class_names")
            out[row] = index[str(value)]
        return out, names
    target_array, found = encode_labels(labels, lambda row: f"row {row}", what=what)
    if found is not None:
        return target_array, found
    if names is not None and target_array.max(initial=-1) >= len(names):
        row = int(np.argmax(target_array))
        raise ParameterError(
            "class_names", f"names {len(names)} classes but {what} has class {target_array[row]} at row {row}"
        )
    return target_array, names
