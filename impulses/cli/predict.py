"""``impulses predict``: score a store with trained heads."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from impulses.cli._options import JsonOption, SkipNonfiniteOption
from impulses.cli._output import print_json, say
from impulses.cli._params import check_distinct, renamed_params
from impulses.cli._stores import score_store
from impulses.errors import ParameterError

SCORE_SUFFIXES = (".parquet", ".csv")


def predict_command(
    heads: Annotated[Path, typer.Option(help="heads.pt written by impulses train-head.")],
    store: Annotated[Path, typer.Option(help="Embedding store (.h5) to score.")],
    out: Annotated[
        Path, typer.Option(help="Scores file (.parquet or .csv): id and one logit column per head.")
    ],
    skip_nonfinite: SkipNonfiniteOption = False,
    as_json: JsonOption = False,
) -> None:
    """Score every sample of a store with trained heads: one logit column per head (positive = class 1).

    Examples:

        impulses predict --heads runs/heads/heads.pt --store test.h5 --out scores.parquet

        impulses predict --heads runs/heads/heads.pt --store test.h5 --out scores.csv --json
    """
    from impulses.atomic import atomic_path
    from impulses.pu.heads import load_heads

    if out.suffix.lower() not in SCORE_SUFFIXES:
        raise ParameterError("out", f"{out}: scores are written as .parquet or .csv")
    check_distinct("out", out, heads=heads, store=store)
    with renamed_params(path="heads"):
        trained = load_heads(heads)
    scores = score_store(trained, store, skip_nonfinite=skip_nonfinite)
    with atomic_path(out) as tmp:
        if out.suffix.lower() == ".csv":
            scores.write_csv(tmp)
        else:
            scores.write_parquet(tmp)
    names = scores.columns[1:]
    if as_json:
        print_json({"heads": str(heads), "store": str(store), "out": str(out), "rows": scores.height,
                    "head_names": names})  # fmt: skip
        return
    say(f"wrote {scores.height:,} rows x {len(names)} head score(s) to {out}")
