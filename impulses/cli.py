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


# ---------------------------------------------------------------------------------------------
# embed (embedding-cache helper's section)
# ---------------------------------------------------------------------------------------------
@app.command()
def embed(
    data: Annotated[
        str,
        typer.Option(
            help="Dataset spec: digits, fashion-mnist[:train|:test], cifar10[:train|:test], "
            "cifar100[:train|:test] or imagefolder:PATH; may end in a row range such as [0:5000]."
        ),
    ],
    encoder: Annotated[
        str, typer.Option(help="A registered or timm encoder name, or an `impulses pretrain` checkpoint.")
    ],
    out: Annotated[Path, typer.Option("--out", help="The store to write (HDF5, e.g. runs/digits.h5).")],
    data_root: Annotated[
        Path | None, typer.Option(help="Folder holding (or receiving) the dataset files.")
    ] = None,
    download: Annotated[
        bool, typer.Option("--download", help="Let torchvision download a missing dataset.")
    ] = False,
    weights: Annotated[Path | None, typer.Option(help="A local state dict for the named encoder.")] = None,
    pretrained: Annotated[
        bool, typer.Option("--pretrained", help="timm's published weights for the named encoder.")
    ] = False,
    cifar_stem: Annotated[
        bool, typer.Option("--cifar-stem", help="3x3 stride-1 first conv, no max-pool (8-32 px images).")
    ] = False,
    image_size: Annotated[
        int | None, typer.Option(help="Input side in pixels. [default: the encoder's test transform]")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Images per forward pass (and per committed chunk).")] = 256,
    workers: Annotated[
        int | None,
        typer.Option(help="DataLoader worker processes. [default: 0 for in-memory datasets, else 4]"),
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    dtype: Annotated[str, typer.Option(help="Stored dtype: float16 or float32.")] = "float16",
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing store or unfinished run of another run.")
    ] = False,
    skip_bad: Annotated[
        bool,
        typer.Option("--skip-bad", help="Skip unreadable images (listed in the store) instead of stopping."),
    ] = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary at the end.")] = False,
) -> None:
    """Run a frozen encoder over a dataset once and cache one embedding per image in an HDF5 store.

    Rerunning the same command resumes an interrupted run from its last finished chunk, or says the
    store is up to date. Runs on several processes under torchrun: each writes a shard store and rank 0
    joins them (HDF5 virtual datasets) into --out.

    Examples:

        impulses embed --data digits --encoder smallcnn --out runs/digits.h5

        impulses embed --data fashion-mnist:test --data-root data/fashion-mnist --encoder resnet18 --cifar-stem --out runs/fm-test.h5

        impulses embed --data imagefolder:photos --encoder resnet50 --pretrained --skip-bad --out runs/photos.h5

        impulses embed --data cifar10:train --encoder runs/c10/last.pt --out runs/c10-train.h5

        torchrun --nproc_per_node 4 -m impulses embed --data cifar10:train --encoder resnet50 --cifar-stem --out runs/c10.h5
    """
    import torch

    from impulses.embed.datasets import ArraySource, RangeSource, open_source
    from impulses.embed.extract import ConfigTransform
    from impulses.embed.extract import embed as run_embed
    from impulses.embed.shards import RankInfo, embed_sharded
    from impulses.embed.store import DTYPES, StoreSpec
    from impulses.encoders import load_encoder
    from impulses.runtime import resolve_device

    if dtype not in DTYPES:
        raise ImpulsesError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if image_size is not None and image_size < 1:
        raise ImpulsesError(f"--image-size must be a positive number of pixels, got {image_size}")
    if batch_size < 1:
        raise ImpulsesError(f"--batch-size must be at least 1, got {batch_size}")
    if workers is not None and workers < 0:
        raise ImpulsesError(f"--workers must be 0 or more, got {workers}")
    ranks = RankInfo.from_env()
    source = open_source(data, data_root=data_root, download=download)
    loaded = load_encoder(encoder, cifar_stem=cifar_stem, pretrained=pretrained, weights=weights)
    transform = dict(loaded.transform)
    if image_size is not None:
        transform["image_size"] = image_size
    spec = StoreSpec(loaded.name, source.spec, loaded.sha256, transform, source.digest)
    torch_device = resolve_device(device)
    if torch_device.type == "cuda" and ranks.distributed and torch_device.index is None:
        torch_device = torch.device("cuda", ranks.local_rank)
    if workers is None:
        in_memory = isinstance(source.base if isinstance(source, RangeSource) else source, ArraySource)
        workers = 0 if in_memory else 4
    options = {
        "spec": spec,
        "batch_size": batch_size,
        "workers": workers,
        "device": torch_device,
        "dtype": dtype,
        "overwrite": overwrite,
        "skip_bad": skip_bad,
        "progress": progress,
        "extra_attrs": {"encoder_spec": encoder, "encoder_preset": loaded.preset},
    }
    if ranks.distributed:
        result = embed_sharded(source, loaded.model, ConfigTransform(transform), out, ranks=ranks, **options)
    else:
        result = run_embed(source, loaded.model, ConfigTransform(transform), out, **options)
    if ranks.rank != 0:
        return
    summary = {
        "store": str(result.path),
        "status": result.status,
        "rows": result.rows,
        "dim": result.dim,
        "dtype": dtype,
        "images_embedded": result.images,
        "seconds": round(result.seconds, 3),
        "images_per_s": round(result.images_per_s, 1),
        "skipped": len(result.skipped),
        "processes": ranks.world_size,
    }
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    elif result.status == "up-to-date":
        message = f"{out}: up to date ({result.rows} rows x {result.dim}); nothing to do"
        console.print(message, markup=False, highlight=False, soft_wrap=True)
    else:
        skipped = f", {len(result.skipped)} unreadable image(s) skipped" if result.skipped else ""
        message = (
            f"{out}: {result.status} {result.rows} rows x {result.dim} ({dtype}){skipped}; "
            f"{result.images} images at {result.images_per_s:,.0f} img/s"
        )
        console.print(message, markup=False, highlight=False, soft_wrap=True)


# ---------------------------------------------------------------------------------------------
# pretrain (encoders helper's section)
# ---------------------------------------------------------------------------------------------
@app.command()
def pretrain(
    out: Annotated[Path, typer.Option("--out", help="Run directory: last.pt (checkpoint) and history.csv.")],
    data: Annotated[
        str | None,
        typer.Option(
            help="Dataset spec: digits, fashion-mnist[:train], cifar10[:train], imagefolder:PATH, ..."
        ),
    ] = None,
    data_root: Annotated[
        Path | None, typer.Option(help="Folder holding (or receiving) the dataset files.")
    ] = None,
    download: Annotated[
        bool, typer.Option("--download", help="Download the dataset if it is missing.")
    ] = False,
    encoder: Annotated[
        str | None, typer.Option(help="Registered or timm encoder name. [default: resnet50]")
    ] = None,
    cifar_stem: Annotated[
        bool, typer.Option("--cifar-stem", help="3x3 stride-1 first conv, no max-pool (8-32 px images).")
    ] = False,
    pretrained: Annotated[
        bool, typer.Option("--pretrained", help="Start from timm's published weights.")
    ] = False,
    weights: Annotated[Path | None, typer.Option(help="Start from a local state dict (strict).")] = None,
    preset: Annotated[
        str | None,
        typer.Option(help="Augmentations: cifar, imagenet or small-gray. [default: from the images]"),
    ] = None,
    image_size: Annotated[
        int | None, typer.Option(help="Input side in pixels. [default: the preset's]")
    ] = None,
    loss: Annotated[str | None, typer.Option(help="debiased or ntxent. [default: debiased]")] = None,
    epochs: Annotated[
        int | None, typer.Option(help="Total epochs (a resumed run continues up to it). [default: 100]")
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="Global batch of images (2 views each). [default: 128]")
    ] = None,
    lr: Annotated[float | None, typer.Option(help="Adam learning rate. [default: 3e-4]")] = None,
    weight_decay: Annotated[float | None, typer.Option(help="Adam weight decay. [default: 1e-6]")] = None,
    temperature: Annotated[float | None, typer.Option(help="Softmax temperature t. [default: 0.5]")] = None,
    tau_plus: Annotated[
        float | None, typer.Option(help="Positive-class prior tau+ of the debiased loss. [default: 0.1]")
    ] = None,
    projection_dim: Annotated[int | None, typer.Option(help="Projector output size. [default: 128]")] = None,
    seed: Annotated[
        int | None, typer.Option(help="Seed of init, data order and augmentations. [default: 0]")
    ] = None,
    knn_holdout: Annotated[
        float | None, typer.Option(help="Share held out for the kNN monitor (0: none). [default: 0.1]")
    ] = None,
    sync_bn: Annotated[
        bool, typer.Option("--sync-bn", help="SyncBatchNorm across torchrun processes.")
    ] = False,
    workers: Annotated[int, typer.Option(help="DataLoader worker processes.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue OUT/last.pt exactly (unset options come from it).")
    ] = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the per-epoch history as JSON at the end.")
    ] = False,
) -> None:
    """Pretrain an encoder with the debiased contrastive loss (or NT-Xent); checkpoint every epoch.

    Runs on several processes under torchrun (DistributedDataParallel; the loss sees the global batch).
    The result feeds `impulses embed --encoder OUT/last.pt`.

    Examples:

        impulses pretrain --data digits --encoder smallcnn --epochs 15 --batch-size 64 --lr 1e-3 --out runs/digits

        impulses pretrain --data cifar10:train --encoder resnet50 --cifar-stem --epochs 400 --out runs/c10

        torchrun --nproc_per_node 4 -m impulses pretrain --data cifar10:train --encoder resnet50 --cifar-stem --out runs/c10

        impulses pretrain --out runs/c10 --resume --epochs 500
    """
    from dataclasses import asdict

    from impulses.encoders.checkpoint import CHECKPOINT_NAME, load_checkpoint
    from impulses.encoders.distributed import env_context
    from impulses.encoders.pretrain import PretrainConfig, config_fields
    from impulses.encoders.pretrain import pretrain as run_pretrain

    given: dict[str, object] = {
        "data": data,
        "encoder": encoder,
        "preset": preset,
        "image_size": image_size,
        "loss": loss,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "weight_decay": weight_decay,
        "temperature": temperature,
        "tau_plus": tau_plus,
        "projection_dim": projection_dim,
        "seed": seed,
        "knn_holdout": knn_holdout,
        "weights": None if weights is None else str(weights),
        "cifar_stem": cifar_stem or None,
        "pretrained": pretrained or None,
        "sync_bn": sync_bn or None,
    }
    checkpoint = out / CHECKPOINT_NAME
    base = (
        load_checkpoint(checkpoint)["config"] if resume and checkpoint.exists() else asdict(PretrainConfig())
    )
    merged = {
        **base,
        **{k: v for k, v in given.items() if v is not None},
        "workers": workers,
        "device": device,
    }
    config = PretrainConfig(**{k: merged[k] for k in config_fields() if k in merged})
    if not config.data:
        raise ImpulsesError("--data is required (e.g. --data digits)")
    try:
        from impulses.embed.datasets import open_source
    except ImportError as err:
        raise ImpulsesError(f"--data needs impulses.embed.datasets, which is not available ({err})") from None
    source = open_source(config.data, data_root=data_root, download=download)
    config.data = getattr(source, "spec", config.data)
    main_rank = env_context().is_main
    result = run_pretrain(
        source,
        config,
        out,
        resume=resume,
        progress=progress,
        log=(lambda msg: err_console.print(msg, markup=False)),
    )
    if not main_rank:
        return
    if as_json:
        typer.echo(json.dumps({"checkpoint": str(result.checkpoint), "history": result.history}, indent=2))
    else:
        console.print(f"checkpoint: {result.checkpoint}  (use: impulses embed --encoder {result.checkpoint})")


# ---------------------------------------------------------------------------------------------
# split, estimate-prior (splits/prior helper's section)
# ---------------------------------------------------------------------------------------------
def _split_stats_table(title: str, rows: list[tuple[str, str]]) -> None:
    from rich.table import Table

    table = Table(title=title, show_header=False, title_justify="left")
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)


@app.command()
def split(
    store: Annotated[
        Path, typer.Option(help="Training embedding store whose targets give the true classes.")
    ],
    out: Annotated[Path, typer.Option(help="Label set to write: .parquet or .csv (id, y, s or s_0..s_K-1).")],
    positive_classes: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated positive classes: indices or names (a CIFAR-100 store also takes "
            "superclass names such as 'vehicles 1')."
        ),
    ] = None,
    preset: Annotated[
        str | None,
        typer.Option(
            help="A split of the paper's Table I: cifar10-imbalanced, cifar100-vehicles, fashion-mnist-imbalanced."
        ),
    ] = None,
    n_positive: Annotated[
        int | None,
        typer.Option(help="Keep this many positives (seeded random subset); default: all, or the preset's."),
    ] = None,
    label_frequency: Annotated[
        float | None,
        typer.Option(help="c: share of the kept positives that are labeled, in (0, 1]; default 0.2."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the downsampling and of the labeled subsets.")] = 0,
    n_label_sets: Annotated[
        int,
        typer.Option(
            help="K independent labeled subsets of the same samples, written as columns s_0..s_K-1."
        ),
    ] = 1,
    test: Annotated[
        Path | None, typer.Option(help="Test embedding store: also write its label set (id, y).")
    ] = None,
    test_out: Annotated[
        Path | None, typer.Option(help="Where to write the test label set (with --test).")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print machine-readable JSON instead of a table.")
    ] = False,
) -> None:
    """Make a PU label set from a store's classes and print π = p(y=1|s=0), P:N and L:U.

    Examples:

        impulses split --store train.h5 --preset fashion-mnist-imbalanced --out labels.parquet

        impulses split --store train.h5 --preset cifar10-imbalanced --out l.parquet --test test.h5 --test-out t.parquet

        impulses split --store digits.h5 --positive-classes 0,1,2 --label-frequency 0.3 --n-label-sets 3 --out l.csv
    """
    from impulses.embed.store import EmbeddingStore
    from impulses.pu.splits import (
        check_targets,
        get_preset,
        make_split,
        make_test_labels,
        parse_class_list,
        preset_classes,
        resolve_classes,
        write_label_set,
    )

    if (positive_classes is None) == (preset is None):
        raise ImpulsesError("give exactly one of --positive-classes and --preset")
    if (test is None) != (test_out is None):
        raise ImpulsesError("--test and --test-out go together: give both or neither")
    train = EmbeddingStore.open(store)
    targets = check_targets(train.targets, where=str(store))
    class_names = train.class_names
    n_classes = int(targets.max()) + 1
    if preset is not None:
        spec = get_preset(preset)
        classes = preset_classes(spec, class_names, n_classes)
        n_positive = spec.n_positive if n_positive is None else n_positive
        label_frequency = spec.label_frequency if label_frequency is None else label_frequency
    else:
        classes = resolve_classes(parse_class_list(positive_classes or ""), class_names, n_classes=n_classes)
    result = make_split(
        train.ids,
        targets,
        classes,
        n_positive=n_positive,
        label_frequency=0.2 if label_frequency is None else label_frequency,
        seed=seed,
        n_label_sets=n_label_sets,
    )
    test_frame = None
    if test is not None:
        test_store = EmbeddingStore.open(test)
        if (
            class_names is not None
            and test_store.class_names is not None
            and test_store.class_names != class_names
        ):
            raise ImpulsesError(f"--test {test}: its class names differ from those of --store {store}")
        test_frame = make_test_labels(
            test_store.ids, check_targets(test_store.targets, where=str(test)), classes
        )
    write_label_set(result.labels, out)
    if test_frame is not None and test_out is not None:
        write_label_set(test_frame, test_out)

    stats = result.stats
    names = [class_names[c] if class_names and c < len(class_names) else str(c) for c in classes]
    summary = {
        "store": str(store),
        "preset": preset,
        "positive_classes": [int(c) for c in classes],
        "positive_class_names": names,
        "seed": seed,
        "label_sets": result.label_columns,
        "out": str(out),
        **stats.as_dict(),
    }
    if test_frame is not None:
        summary.update(
            test=str(test),
            test_out=str(test_out),
            test_rows=test_frame.height,
            test_positive=int(test_frame["y"].sum()),
        )
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    rows = [
        (
            "positive classes",
            ", ".join(f"{c} {n}" if n != str(c) else n for c, n in zip(classes, names, strict=True)),
        ),
        ("P : N", f"{stats.n_positive:,} : {stats.n_negative:,}  ({stats.pn_ratio})"),
        ("L : U", f"{stats.n_labeled:,} : {stats.n_unlabeled:,}  (c = {stats.label_frequency:.4g})"),
        ("π = p(y=1 | s=0)", f"{stats.prior:.4f}"),
        ("p(y=1)", f"{stats.class_prior:.4f}"),
        ("label sets", ", ".join(result.label_columns) + f"  (seed {seed})"),
    ]
    if stats.n_dropped_positive or stats.n_unknown:
        rows.append(
            ("left out", f"{stats.n_dropped_positive:,} positives (downsampled), {stats.n_unknown:,} unknown")
        )
    rows.append(("written", str(out)))
    if test_frame is not None:
        n_test, n_test_pos = test_frame.height, int(test_frame["y"].sum())
        rows.append(
            ("test", f"{test_out}: {n_test:,} rows, {n_test_pos:,} positive ({n_test_pos / n_test:.1%})")
        )
    _split_stats_table(f"PU split of {store}" + (f" (preset {preset})" if preset else ""), rows)


def _read_pu_labels(path: Path, label_set: str | None) -> "tuple[list[str], np.ndarray, np.ndarray | None]":  # noqa: F821, UP037
    """Ids, the chosen s column and y (when present) of a label set."""
    import numpy as np
    import polars as pl

    from impulses.errors import LabelSetError

    if not path.exists():
        raise LabelSetError(f"{path}: no such label set")
    try:
        frame = pl.read_parquet(path) if path.suffix.lower() == ".parquet" else pl.read_csv(path)
    except Exception as err:
        raise LabelSetError(f"{path}: not a readable label set ({err})") from None
    sets = [c for c in frame.columns if c == "s" or c.startswith("s_")]
    column = "s" if label_set is None else (label_set if label_set in sets else f"s_{label_set}")
    if column not in frame.columns:
        if label_set is None and sets:
            raise LabelSetError(f"{path} holds label sets {', '.join(sets)}: choose one with --label-set")
        raise LabelSetError(
            f"{path}: no label column {column!r} (label columns: {', '.join(sets) or 'none'})"
        )
    if "id" not in frame.columns:
        raise LabelSetError(f"{path}: no id column")
    s = frame[column].to_numpy()
    if not np.isin(s, (0, 1)).all():
        raise LabelSetError(f"{path}: column {column} must hold only 0 and 1")
    y = frame["y"].to_numpy() if "y" in frame.columns else None
    return [str(i) for i in frame["id"].to_list()], s.astype(np.int64), y


@app.command("estimate-prior")
def estimate_prior_command(
    train: Annotated[Path, typer.Option(help="Training embedding store holding the label set's ids.")],
    labels: Annotated[
        Path, typer.Option(help="Label set (.parquet/.csv) with id and s (or s_<name>), optionally y.")
    ],
    label_set: Annotated[
        str | None, typer.Option(help="Which label set of a file with several (s_<name>): give NAME.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the cross-fitting folds.")] = 0,
    folds: Annotated[
        int, typer.Option(help="Cross-fitting folds of the P-vs-U classifier (at least 2).")
    ] = 2,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print machine-readable JSON instead of a table.")
    ] = False,
) -> None:
    """Estimate the prior π = p(y=1|s=0), the share of positives among the unlabeled (BBE and Elkan–Noto).

    BBE (Garg et al. 2021) gives a confidence interval; with a y column the true π is shown too.

    Examples:

        impulses estimate-prior --train train.h5 --labels labels.parquet

        impulses estimate-prior --train train.h5 --labels labels.csv --label-set 2 --json
    """
    from impulses.embed.store import EmbeddingStore
    from impulses.pu.prior import estimate_prior

    ids, s, y = _read_pu_labels(labels, label_set)
    store = EmbeddingStore.open(train)
    rows = store.rows_of(ids, what=f"ids of {labels}")
    order = rows.argsort()
    features = store.read(rows[order])
    s, y = s[order], (y[order] if y is not None else None)
    err_console.print(
        f"fitting the P-vs-U classifier on {len(ids):,} x {store.dim} features ...", style="dim"
    )
    estimates = estimate_prior(features, s, n_folds=folds, seed=seed)
    n_l, n_u = int(s.sum()), int((s == 0).sum())
    true_prior = float(y[s == 0].mean()) if y is not None and n_u else None
    summary = {
        "train": str(train),
        "labels": str(labels),
        "label_set": label_set,
        "n_labeled": n_l,
        "n_unlabeled": n_u,
        "convention": "prior = p(y=1 | s=0), the share of positives among the unlabeled",
        "estimates": {name: est.as_dict() for name, est in estimates.items()},
        "true_prior": true_prior,
    }
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    from rich.table import Table

    table = Table(
        title=f"π = p(y=1 | s=0) of {labels} ({n_l:,} labeled, {n_u:,} unlabeled)", title_justify="left"
    )
    for column in ("method", "π estimate", "interval", "p(y=1)", "error"):
        table.add_column(column, justify="left" if column in ("method", "interval") else "right")
    for name, est in estimates.items():
        interval = (
            f"[{est.lower:.4f}, {est.upper:.4f}] (δ = {est.details['delta']})"
            if est.lower is not None
            else ""
        )
        class_prior = (n_l + est.prior * n_u) / (n_l + n_u)
        error = f"{est.prior - true_prior:+.4f}" if true_prior is not None else ""
        table.add_row(
            {"bbe": "BBE", "elkan-noto": "Elkan–Noto"}[name],
            f"{est.prior:.4f}",
            interval,
            f"{class_prior:.4f}",
            error,
        )
    if true_prior is not None:
        table.add_row(
            "true (from y)", f"{true_prior:.4f}", "", f"{(n_l + true_prior * n_u) / (n_l + n_u):.4f}", ""
        )
    console.print(table)
