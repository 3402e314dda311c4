"""How commands print: user text is never read as rich markup, JSON goes to stdout alone."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import Any

import typer

from impulses.runtime import console, err_console, make_progress


def say(text: str) -> None:
    """A result line on stdout, printed as typed (paths with ``[...]`` or ``:name:`` stay intact)."""
    console.print(text, markup=False, highlight=False, soft_wrap=True, emoji=False)


def note(text: str, *, quiet: bool = False) -> None:
    """An informational line on stderr (silenced by ``--quiet``)."""
    if not quiet:
        err_console.print(text, style="dim", markup=False, highlight=False, soft_wrap=True, emoji=False)


def warn(text: str) -> None:
    """A warning on stderr (shown even with ``--quiet``)."""
    err_console.print(text, markup=False, highlight=False, soft_wrap=True, emoji=False)


def error(text: str) -> None:
    """The one ``error: ...`` line of a failed command, on stderr."""
    err_console.print(f"error: {text}", markup=False, highlight=False, soft_wrap=True, emoji=False)


def json_value(value: Any) -> Any:
    """Plain JSON: numpy scalars as numbers, NaN (nothing to evaluate on) as null."""
    if hasattr(value, "item"):
        value = value.item()
    return None if isinstance(value, float) and math.isnan(value) else value


def print_json(data: Any) -> None:
    """``data`` as JSON on stdout."""
    typer.echo(json.dumps(data, indent=2, default=str))


def print_table(
    title: str,
    rows: Iterable[Sequence[Any]],
    columns: Sequence[str] | None = None,
    *,
    right: Sequence[str] = (),
) -> None:
    """A rich table whose title and cells are plain text (no markup, no emoji codes)."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title=Text(title), show_header=columns is not None, title_justify="left")
    for column in columns or ("", ""):
        table.add_column(Text(column), justify="right" if column in right else "left")
    for row in rows:
        table.add_row(*(Text(str(cell)) for cell in row))
    console.print(table)


class LazyProgress:
    """A progress bar that appears at its first update, so errors raised before the work starts come alone.

    Use as the ``on_epoch(done, total)`` callback of a library call, inside ``with``; ``on_start`` runs
    once, just before the bar appears (an informational line about the run).
    """

    def __init__(
        self, description: str, *, enabled: bool, on_start: Callable[[], None] | None = None
    ) -> None:
        self.description = description
        self.enabled = enabled
        self.on_start = on_start
        self._progress: Any = None
        self._task: Any = None

    def __call__(self, done: int, total: int) -> None:
        if self._progress is None:
            if self.on_start is not None:
                self.on_start()
            self._progress = make_progress(disable=not self.enabled)
            self._progress.start()
            self._task = self._progress.add_task(self.description, total=total)
        self._progress.update(self._task, completed=done, total=total)

    def __enter__(self) -> LazyProgress:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._progress is not None:
            self._progress.stop()
