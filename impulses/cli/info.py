"""``impulses info``: what a store or a label set holds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from impulses.cli._options import JsonOption
from impulses.cli._output import print_json, print_table


def info_command(
    path: Annotated[Path, typer.Argument(help="An embedding store (.h5) or a label set (.parquet/.csv).")],
    as_json: JsonOption = False,
    check: Annotated[bool, typer.Option("--check", help="Also scan every embedding for NaN/Inf.")] = False,
    skip_nonfinite: Annotated[
        bool,
        typer.Option(
            "--skip-nonfinite",
            help="With --check: count the rows holding NaN/Inf (and show their first ids) instead of failing.",
        ),
    ] = False,
) -> None:
    """Show what a store or label set holds.

    Examples:

        impulses info runs/digits.h5

        impulses info runs/digits.h5 --check --skip-nonfinite

        impulses info labels.parquet --json
    """
    from impulses.info import describe

    summary = describe(path, check=check and not skip_nonfinite)
    if check and skip_nonfinite and summary.get("kind") == "embedding store":
        summary.update(_nonfinite_rows(path))
    if as_json:
        print_json(summary)
        return
    rows = [(k, v if isinstance(v, str) else json.dumps(v, default=str)) for k, v in summary.items()]
    print_table(str(path), rows)


def _nonfinite_rows(path: Path) -> dict[str, Any]:
    """How many rows of the store hold NaN or Inf, and the first of their ids (every row scanned)."""
    import numpy as np

    from impulses.cli._stores import open_store

    with open_store(path) as store:
        bad = np.flatnonzero(~store.finite_rows())
        if not bad.size:
            return {"finite": "yes (every row scanned)"}
        return {
            "finite": f"no: {bad.size} row(s) hold NaN or Inf",
            "nonfinite_rows": int(bad.size),
            "nonfinite_ids": [str(i) for i in store.ids[bad[:10]]],
        }
