"""``impulses predict``: score a store, or new images, with trained heads: logits, probabilities, decisions."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from impulses.cli._options import (
    DataRootOption,
    DeviceOption,
    DownloadOption,
    JsonOption,
    ProgressOption,
    QuietOption,
    SkipNonfiniteOption,
)
from impulses.cli._output import note, print_json, say
from impulses.cli._params import check_distinct, renamed_params
from impulses.cli._stores import open_store, score_store
from impulses.errors import ImpulsesError, ParameterError

SCORE_SUFFIXES = (".parquet", ".csv")


def default_cache(out: Path) -> Path:
    """Where ``--data`` caches its embeddings by default: beside ``--out``, named after it."""
    return out.with_name(f"{out.stem}.embeddings.h5")


def predict_command(
    heads: Annotated[Path, typer.Option(help="heads.pt written by impulses train-head.")],
    out: Annotated[
        Path,
        typer.Option(
            help="Scores file (.parquet or .csv): id, one logit column per head, then "
            "HEAD_probability (--prevalence) and HEAD_decision (--threshold) columns."
        ),
    ],
    store: Annotated[Path | None, typer.Option(help="Embedding store (.h5) to score.")] = None,
    data: Annotated[
        str | None,
        typer.Option(
            help="Images to score instead of a store (a dataset spec as for impulses embed): embedded "
            "with the encoder and transform of the heads' training store, cached in --cache."
        ),
    ] = None,
    cache: Annotated[
        Path | None,
        typer.Option(
            help="With --data: the embedding store to write or resume (default: OUT.embeddings.h5)."
        ),
    ] = None,
    data_root: DataRootOption = None,
    download: DownloadOption = False,
    device: DeviceOption = "auto",
    prevalence: Annotated[
        float | None,
        typer.Option(
            help="P, the positive share of the scored population: adds calibrated p(y=1 | x) per head "
            "(calibrated heads, logistic-surrogate PU heads and pn)."
        ),
    ] = None,
    threshold: Annotated[
        str | None,
        typer.Option(
            help="Adds a 0/1 decision per head: logit0 (logit > 0, the paper's), bayes (probability >= "
            "0.5 at --prevalence) or rate:Q (the top Q share of rows by logit)."
        ),
    ] = None,
    allow_other_encoder: Annotated[
        bool,
        typer.Option(
            "--allow-other-encoder",
            help="Score a store embedded by another encoder or transform than the heads' training store.",
        ),
    ] = False,
    progress: ProgressOption = True,
    quiet: QuietOption = False,
    skip_nonfinite: SkipNonfiniteOption = False,
    as_json: JsonOption = False,
) -> None:
    """Score every sample of a store, or new images, with trained heads: one logit column per head (positive = class 1).

    A store embedded by another encoder or transform than the heads' training store is refused (--allow-other-encoder overrides). --data embeds the images first with the training store's encoder, exactly as impulses embed does (cached and resumable).

    Examples:

        impulses predict --heads runs/heads/heads.pt --store test.h5 --out scores.parquet

        impulses predict --heads runs/heads/heads.pt --store test.h5 --prevalence 0.4 --threshold bayes --out scores.csv --json

        impulses predict --heads runs/heads/heads.pt --data imagefolder:new-photos --threshold rate:0.05 --out new.parquet
    """
    import numpy as np
    import polars as pl
    from scipy.special import expit

    from impulses.atomic import atomic_path
    from impulses.pu.calibration import decide, parse_threshold
    from impulses.pu.heads import load_heads

    if out.suffix.lower() not in SCORE_SUFFIXES:
        raise ParameterError("out", f"{out}: scores are written as .parquet or .csv")
    if (store is None) == (data is None):
        raise ParameterError(("store", "data"), "are alternatives: give one of them")
    if cache is not None and data is None:
        raise ParameterError("cache", "holds the embeddings of --data: give --data too")
    rule = parse_threshold(threshold)[0] if threshold is not None else None
    if rule == "bayes" and prevalence is None:
        raise ParameterError("prevalence", "is needed by --threshold bayes (it thresholds probabilities)")
    cache = default_cache(out) if data is not None and cache is None else cache
    check_distinct("out", out, heads=heads, store=store, cache=cache)
    with renamed_params(path="heads"):
        trained = load_heads(heads)
    names = trained.names
    if prevalence is not None:  # refuse uncalibrated heads and a bad prevalence before any work
        trained.calibrated_logits(np.zeros((1, len(names))), prevalence)
    embedded: dict[str, Any] | None = None
    if data is not None:
        assert cache is not None
        embedded = embed_like_training(
            trained.meta.get("store_encoder"), heads, data, cache, data_root=data_root, download=download,
            device=device, progress=progress and not quiet,
        )  # fmt: skip
        note(f"{cache}: {embedded['status']} {embedded['rows']} rows", quiet=quiet or as_json)
        store = cache
    assert store is not None
    trained.check_store(open_store(store), allow_other_encoder=allow_other_encoder)
    scores = score_store(trained, store, skip_nonfinite=skip_nonfinite)
    logits = scores.select(names).to_numpy()
    extra: dict[str, Any] = {}
    probabilities = None
    if prevalence is not None:
        probabilities = expit(trained.calibrated_logits(logits, prevalence))
        extra.update({f"{name}_probability": probabilities[:, k] for k, name in enumerate(names)})
    if threshold is not None:
        decisions = decide(logits, threshold, probabilities).astype(np.int8)
        extra.update({f"{name}_decision": decisions[:, k] for k, name in enumerate(names)})
    if extra:
        scores = scores.with_columns(**{key: pl.Series(key, value) for key, value in extra.items()})
    with atomic_path(out) as tmp:
        if out.suffix.lower() == ".csv":
            scores.write_csv(tmp)
        else:
            scores.write_parquet(tmp)
    if as_json:
        summary: dict[str, Any] = {
            "heads": str(heads), "store": str(store), "out": str(out), "rows": scores.height,
            "head_names": names, "columns": scores.columns, "prevalence": prevalence, "threshold": threshold,
        }  # fmt: skip
        if threshold is not None:
            summary["positives"] = {name: int(scores[f"{name}_decision"].sum()) for name in names}
        if embedded is not None:
            summary["embedded"] = embedded
        print_json(summary)
        return
    say(f"wrote {scores.height:,} rows x {len(names)} head score(s) to {out}")


def embed_like_training(
    record: dict[str, Any] | None,
    heads: Path,
    data: str,
    cache: Path,
    *,
    data_root: Path | None,
    download: bool,
    device: str,
    progress: bool,
) -> dict[str, Any]:
    """Embed ``data`` into ``cache`` with the encoder and transform the heads' training store recorded.

    The encoder is loaded first and must hash to the recorded sha256 (a checkpoint that changed or
    is gone is refused before any image is embedded); then :func:`impulses.embed.extract.embed_dataset`
    writes (or resumes, or finds up to date) the cache store.

    Returns:
        The embedding run's summary.

    Raises:
        ImpulsesError: the heads record no encoder, it cannot be loaded again (a local weights
            file, a checkpoint that is gone) or its weights differ from the recorded ones.
    """
    from impulses.embed.extract import embed_dataset
    from impulses.encoders import load_encoder

    if not record or not record.get("encoder_spec"):
        raise ImpulsesError(
            f"{heads}: the heads do not record the encoder of their training store (saved before it was "
            "recorded, or trained on imported features); embed the images with impulses embed and use --store"
        )
    spec, origin = str(record["encoder_spec"]), record.get("weights")
    if origin == "file":
        raise ImpulsesError(
            f"{heads}: the training store was embedded by {spec} with a local weights file, whose path it "
            "does not record; embed the images with impulses embed --weights and use --store"
        )
    looks_like_file = "/" in spec or spec.endswith((".pt", ".pth"))
    if looks_like_file and not Path(spec).exists():
        raise ImpulsesError(
            f"{spec}: no such encoder checkpoint (the heads' training store was embedded with it)"
        )
    wanted = record.get("encoder_sha256")
    options = {"pretrained": origin == "pretrained", "random_init": origin == "random"}
    found = None
    for cifar_stem in (
        (False, True) if not looks_like_file else (False,)
    ):  # the stem changes the weights' hash
        loaded = load_encoder(spec, cifar_stem=cifar_stem, **options)
        found = loaded.sha256
        if not wanted or found == wanted:
            break
    else:
        raise ImpulsesError(
            f"{spec}: its weights (sha256 {str(found)[:12]}) are not those the heads' training store was "
            f"embedded with (sha256 {str(wanted)[:12]})"
        )
    image_size = (record.get("transform") or {}).get("image_size")
    with renamed_params(out="cache"):
        result = embed_dataset(
            data, spec, cache, data_root=data_root, download=download, cifar_stem=cifar_stem,
            image_size=image_size, device=device, progress=progress, **options,
        )  # fmt: skip
    return result.summary()
