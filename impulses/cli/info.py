"""``impulses info``: what a store or a label set holds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from impulses.cli._options import JsonOption
from impulses.cli._output import print_json, print_table


def info_command(
    path: Annotated[Path, typer.Argument(help="An embedding store (.h5) or a label set (.parquet/.csv).")],
    as_json: JsonOption = False,
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
        print_json(summary)
        return
    rows = [(k, v if isinstance(v, str) else json.dumps(v, default=str)) for k, v in summary.items()]
    print_table(str(path), rows)
