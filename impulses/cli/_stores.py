"""How commands read embedding stores: rows holding NaN/Inf are an error, or left out with ``--skip-nonfinite``.

A NaN in one feature row turns every weight of a head trained on it into NaN, and every score of a
head applied to it into NaN, so no command uses such rows silently. Each helper here reads what its
command needs (a label set's rows, a test set, a whole store's scores, a store's targets), finds the
non-finite rows in what it read, and either raises one :class:`StoreError` naming the store, the
count and the first bad id, or, with ``skip_nonfinite``, leaves them out with a warning naming how
many:

- training and test rows (train-head, estimate-prior) are dropped before any work starts;
- predict keeps every id, and writes NaN scores for the rows it could not score;
- split labels none of them (they count as samples of unknown class).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from impulses.atomic import check_creatable
from impulses.cli._output import warn
from impulses.cli._params import renamed_params
from impulses.errors import LabelSetError, ParameterError, StoreError

_SHOWN_IDS = 3


def open_store(path: str | os.PathLike[str]) -> Any:
    """The store at ``path``, validated, reading rows as stored (NaN/Inf included: the helpers check)."""
    from impulses.embed.store import EmbeddingStore

    return EmbeddingStore.open(path, allow_nonfinite=True)


def check_store_out(out: Path) -> None:
    """``out`` (``--out``) can become a store file: not a folder, below a folder, not under a file.

    Raises:
        ParameterError: It names a folder, its folder would have to be created where a file is, or
            that folder cannot be written.
    """
    if out.is_dir():
        raise ParameterError("out", f"{out} is a folder; name the store file to write (e.g. {out}/store.h5)")
    check_creatable(out, out.absolute().parent, "out")


def _ids_text(ids: np.ndarray) -> str:
    shown = ", ".join(repr(str(i)) for i in ids[:_SHOWN_IDS])
    return shown + (f" and {len(ids) - _SHOWN_IDS} more" if len(ids) > _SHOWN_IDS else "")


def check_rows(path: Path, ids: np.ndarray, finite: np.ndarray, *, skip: bool) -> str | None:
    """Raise when some of the rows ``ids`` (``finite`` False) hold NaN/Inf, or with ``skip`` say so.

    Args:
        path: The store, named in the message.
        ids: The id of each row read.
        finite: One boolean per row, False where the embedding holds NaN or Inf.
        skip: Leave those rows out instead of raising.

    Returns:
        None when every row is finite, else (``skip``) what to warn about once the rows are left out
        (after every other check, so that a failing command prints its one error line alone).

    Raises:
        StoreError: Some rows are not finite and ``skip`` is false.
    """
    bad = np.flatnonzero(~finite)
    if not bad.size:
        return None
    count = f"{bad.size} of {len(finite):,} rows hold NaN or Inf (first ids: {_ids_text(ids[bad])})"
    if not skip:
        raise StoreError(f"{path}: {count}; fix the store, or leave them out with --skip-nonfinite")
    return f"{path}: {count}"


def _warn_left_out(message: str | None, what: str) -> None:
    if message is not None:
        warn(f"warning: {message}; {what} (--skip-nonfinite)")


def _keep_rows(data: Any, keep: np.ndarray) -> Any:
    """A training or test set with only the rows ``keep`` (every array field with one entry per row is cut)."""
    fields = {
        name: value[keep]
        for name, value in vars(data).items()
        if isinstance(value, np.ndarray) and value.shape[:1] == keep.shape
    }
    return replace(data, **fields)


def read_training(
    path: Path,
    labels: Path,
    names: list[str] | None,
    *,
    skip_nonfinite: bool,
    require_y: bool = False,
    param: str = "train",
    features: bool = True,
) -> Any:
    """``read_training_set`` of the store ``path`` (given as ``--param``), with the non-finite rule.

    Returns:
        The :class:`~impulses.pu.labels.TrainingSet`, without the non-finite rows when skipped; with
        ``features`` false its ``X`` is not read (nor checked).

    Raises:
        StoreError: Rows hold NaN/Inf and ``skip_nonfinite`` is false.
        LabelSetError: With the rows left out, a label set has no labeled positive left.
    """
    from impulses.embed.store import finite_mask
    from impulses.pu.labels import read_training_set

    with renamed_params(store=param):
        training = read_training_set(open_store(path), labels, names, require_y=require_y, features=features)
    if not features:  # read in windows while training (max_memory): those rows are not checked here
        return training
    finite = finite_mask(training.X)
    message = check_rows(path, training.store.ids[training.rows], finite, skip=skip_nonfinite)
    if message is None:
        return training
    training = _keep_rows(training, finite)
    if not len(training.X):
        raise StoreError(f"{path}: every row of {labels} holds NaN or Inf; nothing is left to train on")
    for j, name in enumerate(training.names):
        if not training.S[:, j].any():
            raise LabelSetError(
                f"{labels}: label set {name!r} has no labeled positive left once the rows holding "
                f"NaN or Inf in {path} are left out"
            )
    _warn_left_out(message, "left out of training")
    return training


def read_test(path: Path, labels: Path, *, skip_nonfinite: bool) -> Any:
    """``read_test_set`` of the store ``path`` (``--test``) and ``labels`` (``--test-labels``), with the rule.

    Raises:
        StoreError: Rows hold NaN/Inf and ``skip_nonfinite`` is false, or every row does.
    """
    from impulses.embed.store import finite_mask
    from impulses.pu.labels import read_test_set

    store = open_store(path)
    with renamed_params(store="test", labels="test_labels"):
        test_set = read_test_set(store, labels)
    finite = finite_mask(test_set.X)
    message = check_rows(path, store.ids[test_set.rows], finite, skip=skip_nonfinite)
    if message is None:
        return test_set
    if not finite.any():
        raise StoreError(f"{path}: every row of {labels} holds NaN or Inf; nothing is left to test on")
    _warn_left_out(message, "left out of the test metrics")
    return _keep_rows(test_set, finite)


def score_store(heads: Any, path: Path, *, skip_nonfinite: bool) -> Any:
    """Scores of every row of the store ``path`` (``--store``) by ``heads``, with the non-finite rule.

    With ``skip_nonfinite`` every id keeps its row, and a row whose embedding holds NaN or Inf scores
    NaN for every head (never a number computed from it).

    Returns:
        The ``id`` + one column per head polars frame of ``HeadsResult.score_store``.
    """
    import polars as pl

    from impulses.embed.store import finite_mask

    store = open_store(path)
    scores = heads.score_store(store)
    matrix = scores.select(scores.columns[1:]).to_numpy()
    if finite_mask(matrix).all():  # a NaN or Inf feature always makes its row's scores non-finite
        return scores
    finite = store.finite_rows()
    _warn_left_out(check_rows(path, store.ids, finite, skip=skip_nonfinite), "their scores are NaN")
    nan = pl.lit(float("nan"), dtype=pl.Float32)
    bad = pl.lit(pl.Series(~finite))
    return scores.with_columns(
        pl.when(bad).then(nan).otherwise(pl.col(c)).alias(c) for c in scores.columns[1:]
    )


@dataclass
class SplittableStore:
    """A store as a PU split sees it: ids, class names, and -1 (unknown) as the class of unusable rows."""

    path: Path
    ids: np.ndarray
    targets: np.ndarray
    class_names: list[str] | None
    left_out: str | None = None  # the warning about rows left out, shown once the split succeeded

    def warn_left_out(self) -> None:
        _warn_left_out(self.left_out, "the label set leaves them out")


def splittable(path: Path, *, skip_nonfinite: bool) -> SplittableStore:
    """The store ``path`` for ``split_store``: every row scanned; rows with NaN/Inf are an error or unlabeled.

    Returns:
        The store's ids and classes, with class -1 for the rows left out (the split neither labels
        nor counts them); call ``warn_left_out()`` once the split is written.
    """
    with open_store(path) as store:
        finite = store.finite_rows()
        message = check_rows(path, store.ids, finite, skip=skip_nonfinite)
        targets = np.where(finite, store.targets, -1)
        return SplittableStore(store.path, store.ids, targets, store.class_names, message)
