"""``impulses import``: features made elsewhere (.npy, .npz, Parquet, safetensors) as an embedding store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from impulses.cli._options import JsonOption
from impulses.cli._output import print_json, say
from impulses.cli._stores import check_store_out
from impulses.errors import ParameterError


def import_command(
    features: Annotated[
        Path,
        typer.Argument(
            metavar="FEATURES",
            help="Feature file: .npy, .npz, .parquet or .safetensors (N rows x D features).",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="The store to write (HDF5, e.g. runs/features.h5).")],
    id_column: Annotated[
        str, typer.Option(help="Parquet column holding the sample ids (default 'id'; row numbers if absent).")
    ] = "id",
    target_column: Annotated[
        str | None,
        typer.Option(
            help="Column (or .npz/.safetensors array) holding the classes; default target, label or y when present."
        ),
    ] = None,
    embedding_column: Annotated[
        str | None,
        typer.Option(
            help="Column (or array) holding the features; default: the one list/array column, else the "
            "numbered columns f0.. or 0.. (embeddings or X for arrays)."
        ),
    ] = None,
    class_names: Annotated[
        str | None,
        typer.Option(help="Comma-separated class names: string targets are numbered by their place here."),
    ] = None,
    dtype: Annotated[str, typer.Option(help="Stored dtype: float16 or float32.")] = "float16",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing store.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Import a feature matrix computed elsewhere (text, tabular or foundation-model embeddings) as a store.

    Every command that reads a store reads the result: split, estimate-prior, train-head, predict. Ids
    come from the file (or are the row numbers), targets from its class column when there is one.
    Rows holding NaN or Inf, duplicate ids and values the dtype cannot hold are refused. The store
    records the file it came from and its sha256.

    Examples:

        impulses import features.npz --out runs/features.h5

        impulses import clip.parquet --id-column path --embedding-column clip --target-column label --out runs/clip.h5

        impulses import text.safetensors --dtype float32 --out runs/text.h5 --json
    """
    import numpy as np

    from impulses.embed.features import import_features

    if out.exists() and features.exists() and out.resolve() == features.resolve():
        raise ParameterError("out", f"names the FEATURES file ({features}): it would be overwritten")
    check_store_out(out)
    names = [name.strip() for name in class_names.split(",")] if class_names else None
    store = import_features(
        features, out, id_column=id_column, target_column=target_column, embedding_column=embedding_column,
        dtype=dtype, overwrite=overwrite, class_names=names,
    )  # fmt: skip
    with store:
        summary = {
            "features": str(features),
            "out": str(out),
            "rows": len(store),
            "dim": store.dim,
            "dtype": store.dtype,
            "classes": len(np.unique(store.targets[store.targets >= 0])),
            "sha256": store.meta.get("encoder_sha256"),
        }
    if as_json:
        print_json(summary)
        return
    classes = f", {summary['classes']} classes" if summary["classes"] else ""
    say(
        f"{out}: imported {summary['rows']:,} rows x {summary['dim']} ({summary['dtype']}{classes}) from {features}"
    )
