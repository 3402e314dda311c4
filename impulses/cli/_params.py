"""Checks of a command's own arguments, and the parameter names the library's errors should carry."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from impulses.errors import ImpulsesError, ParameterError


@contextmanager
def renamed_params(**names: str) -> Iterator[None]:
    """Make library errors raised inside name this command's parameters.

    ``renamed_params(store="train")`` makes ``ParameterError("store", ...)`` read ``--train ...`` where
    the store came from ``--train``.
    """
    try:
        yield
    except ImpulsesError as err:
        err.params = tuple(names.get(param, param) for param in err.params)
        raise


def check_together(*pairs: tuple[str, object]) -> None:
    """Options that only work together: all given or none (``--test`` and ``--test-labels``)."""
    given = [value is not None for _, value in pairs]
    if any(given) and not all(given):
        raise ParameterError(tuple(name for name, _ in pairs), "go together: give both or neither")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def check_distinct(output: str, path: Path | None, **inputs: Path | None) -> None:
    """An output path must not be one of the inputs (nor another output): it would be overwritten."""
    if path is None:
        return
    for name, other in inputs.items():
        if other is not None and _same_file(path, other):
            raise ParameterError((output, name), f"name the same file ({path}): it would be overwritten")
