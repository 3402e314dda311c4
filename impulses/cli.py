"""The ``impulses`` command line: thin Typer commands over the library.

Every command maps the errors a user can fix (:class:`impulses.errors.ImpulsesError`) to one line on
stderr and exit code 2, in one place (:func:`main`). Heavy imports (torch, timm) happen inside the
commands so ``--help`` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from impulses.errors import ImpulsesError
from impulses.runtime import console, err_console

app = typer.Typer(
    name="impulses",
    help="Embedding cache and imbalanced positive-unlabeled learning with self-supervision (ImPULSeS).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script and ``python -m impulses``."""
    try:
        app(args=argv, prog_name="impulses")
    except ImpulsesError as err:
        err_console.print(f"error: {err}", markup=False, highlight=False, soft_wrap=True)
        raise SystemExit(err.exit_code) from None


def _show_version(value: bool) -> None:
    if value:
        from impulses import __version__

        typer.echo(f"impulses {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_show_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Pretrain or load an encoder once, cache its embeddings, then train PU heads on them in seconds."""


# ---------------------------------------------------------------------------------------------
# info
# ---------------------------------------------------------------------------------------------
@app.command()
def info(
    path: Annotated[Path, typer.Argument(help="An embedding store (.h5) or a label set (.parquet/.csv).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of a table.")] = False,
    check: Annotated[bool, typer.Option("--check", help="Also scan every embedding for NaN/Inf.")] = False,
) -> None:
    """Show what a store or label set holds.

    Examples:

        impulses info runs/digits.h5

        impulses info labels.parquet --json
    """
    from impulses.info import describe

    summary = describe(path, check=check)
    if as_json:
        typer.echo(json.dumps(summary, indent=2, default=str))
        return
    from rich.table import Table

    table = Table(title=str(path), show_header=False)
    for key, value in summary.items():
        table.add_row(key, value if isinstance(value, str) else json.dumps(value, default=str))
    console.print(table)
