"""Manifest source ``manifest:FILE.csv|.parquet``: a table listing image files, one row per sample.

This is how most real datasets (medical, industrial) arrive: a CSV or Parquet file with a ``path``
column (relative to the manifest's folder, or absolute), an optional ``id`` column (default: the path
as written) and an optional ``label`` or ``target`` column (integers, or strings mapped to their
sorted class names). Rows keep the manifest's order. Images are decoded in ``__getitem__`` like an
image folder's (an unreadable one raises :class:`~impulses.data.sources.BadImageError`), and the
source's ``digest`` covers the manifest's bytes and every listed file's name, size and mtime, so a
store embedded from it is refused once the manifest or its images change.

Also home of the two helpers the other file-list sources share: :func:`encode_labels` (label values
-> targets and class names) and :func:`files_digest`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from impulses.data.sources import ImageSource, Sample, decode_image_file
from impulses.errors import ImpulsesError

MANIFEST_SUFFIXES = (".csv", ".parquet")
LABEL_COLUMNS = ("label", "target")


def encode_labels(
    values: Sequence[object], where: Callable[[int], str], *, what: str
) -> tuple[np.ndarray, list[str] | None]:
    """Class indices for label ``values`` (int, str or None per sample) and the class names they imply.

    Integers (or strings that all read as integers) are the targets themselves, ``-1`` meaning
    unknown, and give no class names; any other strings are classes, numbered in sorted order.
    Missing values (None or an empty string) are ``-1``.

    Args:
        values: One label per sample.
        where: Names sample ``i`` in an error message (``"row 3"``, ``"sample 'a/b'"``).
        what: Names the labels' origin in an error message (a file and column).

    Returns:
        ``(targets, class_names)``: int64 targets and the sorted class names (None for integer labels).

    Raises:
        ImpulsesError: An integer label below -1.
    """
    texts = [None if v is None else str(v).strip() for v in values]
    present = [(i, t) for i, t in enumerate(texts) if t]
    try:
        numbers = [(i, int(t)) for i, t in present]
    except ValueError:
        numbers = None
    targets = np.full(len(texts), -1, dtype=np.int64)
    if numbers is not None:
        for i, number in numbers:
            if number < -1:
                raise ImpulsesError(f"{what}: {where(i)} has label {number}; class indices are 0 or more")
            targets[i] = number
        return targets, None
    class_names = sorted({t for _, t in present})
    index = {name: k for k, name in enumerate(class_names)}
    for i, t in present:
        targets[i] = index[t]
    return targets, class_names


def files_digest(header: bytes, names: Sequence[str], paths: Sequence[Path], *, what: str) -> str:
    """sha256 of ``header`` and each file's name, size and mtime (the fingerprint of a list of files).

    Raises:
        ImpulsesError: A file that cannot be stat'ed (named, with ``what``).
    """
    h = hashlib.sha256(header)
    for name, path in zip(names, paths, strict=True):
        try:
            st = path.stat()
        except OSError as err:
            raise ImpulsesError(f"{what}: cannot read {path} ({err.strerror or err})") from None
        h.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    return h.hexdigest()


class ManifestSource(ImageSource):
    """The images a CSV or Parquet manifest lists, in its row order.

    Args:
        manifest: The ``.csv`` or ``.parquet`` file.

    Raises:
        ImpulsesError: A missing or unreadable manifest, no ``path`` column, an empty or missing path,
            a listed file that does not exist, duplicate ids, both a ``label`` and a ``target``
            column; the message names the manifest, the column and the row or id.
    """

    def __init__(self, manifest: str | os.PathLike[str]) -> None:
        path = Path(manifest).expanduser()
        if path.suffix.lower() not in MANIFEST_SUFFIXES:
            raise ImpulsesError(f"manifest:{path}: a manifest is a .csv or .parquet file")
        if not path.is_file():
            raise ImpulsesError(f"manifest:{path}: no such file")
        self.manifest = path.resolve()
        self.spec = f"manifest:{self.manifest}"
        try:
            raw = self.manifest.read_bytes()
        except OSError as err:
            raise ImpulsesError(f"{self.spec}: cannot read the manifest ({err.strerror or err})") from None
        self._manifest_sha256 = hashlib.sha256(raw).digest()
        columns = self._read_columns(raw)
        where = self._where
        name = str(self.manifest)
        written = columns["path"]
        for i, value in enumerate(written):
            if value is None or not value.strip():
                raise ImpulsesError(f"{name}: column 'path' is empty at {where(i)}")
        if not written:
            raise ImpulsesError(f"{name}: lists no images (no rows)")
        folder = self.manifest.parent
        self.paths = [folder / Path(p).expanduser() for p in written]  # an absolute path stays absolute
        for i, p in enumerate(self.paths):
            if not p.is_file():
                raise ImpulsesError(
                    f"{name}: column 'path' at {where(i)} names {p}, which is not an existing file"
                )
        ids = columns.get("id")
        if ids is None:
            self.ids = list(written)
        else:
            for i, value in enumerate(ids):
                if value is None or not value.strip():
                    raise ImpulsesError(f"{name}: column 'id' is empty at {where(i)}")
            self.ids = list(ids)  # type: ignore[arg-type]
        first: dict[str, int] = {}
        for i, sample_id in enumerate(self.ids):
            if sample_id in first:
                column = "'id'" if ids is not None else "'path' (the default ids)"
                raise ImpulsesError(
                    f"{name}: column {column} repeats id {sample_id!r} at {where(first[sample_id])} "
                    f"and {where(i)}; ids must be unique"
                )
            first[sample_id] = i
        label_column = next((c for c in LABEL_COLUMNS if c in columns), None)
        if label_column is None:
            self.targets = np.full(len(self.ids), -1, dtype=np.int64)
            self.class_names: list[str] | None = None
        else:
            self.targets, self.class_names = encode_labels(
                columns[label_column], where, what=f"{name}: column {label_column!r}"
            )
        self._digest: str | None = None

    def _where(self, i: int) -> str:
        """Row ``i`` (0-based data row) as a user finds it: a CSV line number, a Parquet row index."""
        return f"line {i + 2}" if self.manifest.suffix.lower() == ".csv" else f"row {i}"

    def _read_columns(self, raw: bytes) -> dict[str, list[str | None]]:
        """The manifest's ``path``, ``id`` and label columns as lists of strings (None where null)."""
        import polars as pl

        name = str(self.manifest)
        try:
            if self.manifest.suffix.lower() == ".csv":
                # Every column as text: ids keep their leading zeros, labels are parsed by encode_labels.
                frame = pl.read_csv(raw, infer_schema=False)
            else:
                frame = pl.read_parquet(raw)
        except Exception as err:  # polars raises ComputeError, NoDataError, OSError, ...
            raise ImpulsesError(f"{name}: cannot read the manifest ({type(err).__name__}: {err})") from None
        if "path" not in frame.columns:
            raise ImpulsesError(
                f"{name}: no 'path' column (columns: {', '.join(frame.columns) or 'none'}); "
                "a manifest lists one image path per row"
            )
        present = [c for c in LABEL_COLUMNS if c in frame.columns]
        if len(present) > 1:
            raise ImpulsesError(f"{name}: has both a 'label' and a 'target' column; keep one")
        columns: dict[str, list[str | None]] = {}
        for column in ("path", "id", *present):
            if column not in frame.columns:
                continue
            series = frame[column]
            if series.dtype.is_nested() or series.dtype == pl.Binary:
                raise ImpulsesError(f"{name}: column {column!r} holds {series.dtype} values, not text")
            if series.dtype.is_float() and column != "path":
                whole = series.drop_nulls()
                if not (whole == whole.round()).all():
                    raise ImpulsesError(f"{name}: column {column!r} holds fractional numbers")
                series = series.cast(pl.Int64)
            columns[column] = series.cast(pl.String).to_list()
        return columns

    def __len__(self) -> int:
        return len(self.ids)

    def _get(self, index: int) -> Sample:
        path = self.paths[index]
        return Sample(decode_image_file(path, str(path)), self.ids[index], int(self.targets[index]))

    def sample_id(self, index: int) -> str:
        """The manifest's id of row ``index``."""
        return self.ids[index]

    @property
    def digest(self) -> str:
        """sha256 of the manifest's bytes and the listed files' names, sizes and mtimes."""
        if self._digest is None:
            names = [str(p) for p in self.paths]
            self._digest = files_digest(self._manifest_sha256, names, self.paths, what=self.spec)
        return self._digest
