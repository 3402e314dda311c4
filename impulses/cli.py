"""The ``impulses`` command line: thin Typer commands over the library.

Every command maps the errors a user can fix (:class:`impulses.errors.ImpulsesError`) to one line on
stderr and exit code 2, in one place (:func:`main`). Heavy imports (torch, timm) happen inside the
commands so ``--help`` stays fast.
"""

from __future__ import annotations

import inspect
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
        message = err.render(lambda param: "--" + param.replace("_", "-"))
        err_console.print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)
        raise SystemExit(err.exit_code) from None


def _show_version(value: bool) -> None:
    if value:
        from impulses import __version__

        typer.echo(f"impulses {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_show_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """Pretrain or load an encoder once, cache its embeddings, then train PU heads on them in seconds."""


# ---------------------------------------------------------------------------------------------
# info
# ---------------------------------------------------------------------------------------------
@app.command()
def info(
    path: Annotated[Path, typer.Argument(help="An embedding store (.h5) or a label set (.parquet/.csv).")],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print machine-readable JSON instead of a table.")
    ] = False,
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
        int | None, typer.Option(help="Input side in pixels (default: the encoder's test transform).")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Images per forward pass (and per committed chunk).")] = 256,
    workers: Annotated[
        int | None,
        typer.Option(
            help="DataLoader worker processes (default: 0 for in-memory data, 4 for image folders)."
        ),
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
    from impulses.embed.extract import embed_dataset

    result = embed_dataset(
        data,
        encoder,
        out,
        data_root=data_root,
        download=download,
        weights=weights,
        pretrained=pretrained,
        cifar_stem=cifar_stem,
        image_size=image_size,
        batch_size=batch_size,
        workers=workers,
        device=device,
        dtype=dtype,
        overwrite=overwrite,
        skip_bad=skip_bad,
        progress=progress,
    )
    if not result.is_main:
        return
    summary = result.summary()
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
        str | None, typer.Option(help="Registered or timm encoder name. (default: resnet50)")
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
        typer.Option(help="Augmentations: cifar, imagenet or small-gray. (default: from the images)"),
    ] = None,
    image_size: Annotated[
        int | None, typer.Option(help="Input side in pixels. (default: the preset's)")
    ] = None,
    loss: Annotated[str | None, typer.Option(help="debiased or ntxent. (default: debiased)")] = None,
    epochs: Annotated[
        int | None, typer.Option(help="Total epochs (a resumed run continues up to it). (default: 100)")
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="Global batch of images (2 views each). (default: 128)")
    ] = None,
    lr: Annotated[float | None, typer.Option(help="Adam learning rate. (default: 3e-4)")] = None,
    weight_decay: Annotated[float | None, typer.Option(help="Adam weight decay. (default: 1e-6)")] = None,
    temperature: Annotated[float | None, typer.Option(help="Softmax temperature t. (default: 0.5)")] = None,
    tau_plus: Annotated[
        float | None, typer.Option(help="Positive-class prior tau+ of the debiased loss. (default: 0.1)")
    ] = None,
    projection_dim: Annotated[int | None, typer.Option(help="Projector output size. (default: 128)")] = None,
    seed: Annotated[
        int | None, typer.Option(help="Seed of init, data order and augmentations. (default: 0)")
    ] = None,
    knn_holdout: Annotated[
        float | None, typer.Option(help="Share held out for the kNN monitor (0: none). (default: 0.1)")
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
        from impulses.data.sources import open_source
    except ImportError as err:
        raise ImpulsesError(f"--data needs impulses.data.sources, which is not available ({err})") from None
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
        write_label_frame,
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
    write_label_frame(result.labels, out)
    if test_frame is not None and test_out is not None:
        write_label_frame(test_frame, test_out)

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
    import numpy as np

    from impulses.embed.store import EmbeddingStore
    from impulses.errors import LabelSetError
    from impulses.pu.labels import read_label_set
    from impulses.pu.prior import estimate_prior

    label_file = read_label_set(labels, names=[label_set] if label_set is not None else None)
    if len(label_file.names) > 1:
        raise LabelSetError(
            f"{labels} holds label sets {', '.join(label_file.names)}: choose one with --label-set"
        )
    store = EmbeddingStore.open(train)
    rows = label_file.rows_in(store)
    order = rows.argsort()
    features = store.read(rows[order])
    s = label_file.s[order, 0].astype(np.int64)
    y = label_file.y[order] if label_file.y is not None else None
    err_console.print(
        f"fitting the P-vs-U classifier on {len(rows):,} x {store.dim} features ...", style="dim"
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


# ---------------------------------------------------------------------------------------------
# train-head, predict (PU heads helper's section)
# ---------------------------------------------------------------------------------------------
RESULT_COLUMNS = (
    "head", "loss", "prior", "base_prior", "distortion", "seed", "label_set", "epochs",
    "accuracy", "f1", "auc", "ap", "seconds", "eval_on", "skipped_batches",
)  # fmt: skip


def parse_priors(values: list[str] | None, prior_range: str | None) -> list[float | str]:
    """``--prior`` values (numbers or ``auto``) and ``--prior-range START:STOP:N`` (inclusive linspace)."""
    priors: list[float | str] = []
    for value in values or []:
        if value.strip().lower() == "auto":
            priors.append("auto")
            continue
        try:
            priors.append(float(value))
        except ValueError:
            raise ImpulsesError(f"--prior {value!r} is not a number (or 'auto')") from None
    if prior_range:
        parts = prior_range.split(":")
        try:
            start, stop, count = float(parts[0]), float(parts[1]), int(parts[2])
            if len(parts) != 3 or count < 1:
                raise ValueError
        except (ValueError, IndexError):
            raise ImpulsesError(
                f"--prior-range {prior_range!r} must be START:STOP:N, e.g. 0.05:0.5:10"
            ) from None
        step = (stop - start) / (count - 1) if count > 1 else 0.0
        priors.extend(start + i * step for i in range(count))
    for prior in priors:
        if prior != "auto" and not 0 < float(prior) < 1:
            raise ImpulsesError(
                f"--prior {prior:g} is not in (0, 1): π is p(y=1 | s=0), a share of the unlabeled"
            )
    return list(dict.fromkeys(priors))


def auto_prior(features: "np.ndarray", s: "np.ndarray", label_set: str) -> float:  # noqa: F821, UP037
    """``--prior auto``: the BBE estimate of π = p(y=1 | s=0) from one label set's features (Garg et al. 2021)."""
    from impulses.pu.prior import estimate_prior

    estimate = estimate_prior(features, s, methods=("bbe",))["bbe"]
    if not 0 < estimate.prior < 1:
        raise ImpulsesError(
            f"--prior auto (label set {label_set}): the BBE estimate {estimate.prior:g} is not in (0, 1); "
            "give the prior as a number"
        )
    err_console.print(
        f"--prior auto (label set {label_set}): BBE estimate π = {estimate.prior:.4f} "
        f"(interval {estimate.lower:.4f}-{estimate.upper:.4f})",
        markup=False,
        highlight=False,
    )
    return float(estimate.prior)


def parse_distortions(value: str) -> list[float]:
    """``--distortion 0.1,0.5,1,2``: factors applied to every base prior."""
    try:
        factors = [float(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise ImpulsesError(f"--distortion {value!r} must be comma-separated numbers, e.g. 0.5,1,2") from None
    if not factors:
        raise ImpulsesError("--distortion: give at least one factor, e.g. 1")
    return list(dict.fromkeys(factors))


@app.command("train-head")
def train_head(
    train: Annotated[Path, typer.Option(help="Training embedding store (.h5) holding the label set's ids.")],
    labels: Annotated[
        Path,
        typer.Option(
            help="Label set (.parquet/.csv): id, s and/or s_<name> (one label set each), optional y."
        ),
    ],
    out: Annotated[Path, typer.Option(help="Directory for results.csv, heads.pt (and history.csv).")],
    prior: Annotated[
        list[str] | None,
        typer.Option(
            help="π = p(y=1 | s=0), repeatable: a number in (0, 1), or 'auto' (BBE estimate per label set)."
        ),
    ] = None,
    prior_range: Annotated[
        str | None, typer.Option(help="More priors: START:STOP:N, N evenly spaced values, ends included.")
    ] = None,
    distortion: Annotated[
        str,
        typer.Option(
            help="B1,B2,...: train each PU head at prior × B (the paper's misspecification study); "
            "a product outside (0, 1) is an error."
        ),
    ] = "1",
    loss: Annotated[
        list[str] | None, typer.Option(help="Repeatable: imbnnpu (default), nnpu, upu, bce, wbce, pn.")
    ] = None,
    seeds: Annotated[int, typer.Option(help="Seeds 0..N-1 of each head's initialisation.")] = 1,
    label_set: Annotated[
        list[str] | None,
        typer.Option(help="Only these label sets of the file (s, s_NAME or NAME); default all."),
    ] = None,
    epochs: Annotated[int, typer.Option(help="Passes over the training rows.")] = 100,
    batch_size: Annotated[int, typer.Option(help="Rows per step.")] = 256,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = 3e-4,
    prior_prime: Annotated[
        float, typer.Option(help="π′ of imbnnPU: the positives' share of the loss.")
    ] = 0.5,
    beta: Annotated[float, typer.Option(help="nnPU β: correct when R_n < −β.")] = 0.0,
    gamma: Annotated[float, typer.Option(help="nnPU γ: the correction step's scale.")] = 1.0,
    stratified: Annotated[
        bool, typer.Option(help="Give every batch its share of labeled positives (P and U dealt separately).")
    ] = False,
    shuffle_seed: Annotated[
        int, typer.Option(help="Seed of the per-epoch batch order shared by all heads.")
    ] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    threads: Annotated[
        int | None,
        typer.Option(
            help="CPU threads. Fused kernel: default all cores, at most one per 256 feature columns "
            "(the weights do not depend on it). "
            "Torch kernel: default 1 for small sweeps, torch's setting for large ones; on a machine "
            "shared with other jobs, 1 is often much faster."
        ),
    ] = None,
    kernel: Annotated[
        str,
        typer.Option(
            help="How a CPU step reads its batch: fused (numba; reads shuffled rows in place, fastest "
            "for few heads), torch (gather + MKL, fastest for many) or auto (fused up to 12 heads)."
        ),
    ] = "auto",
    test: Annotated[Path | None, typer.Option(help="Test embedding store (with --test-labels).")] = None,
    test_labels: Annotated[Path | None, typer.Option(help="Test label set (.parquet/.csv): id, y.")] = None,
    eval_every: Annotated[
        int,
        typer.Option(
            help="With --test: test metrics every N epochs into DIR/history.csv (0: only at the end)."
        ),
    ] = 0,
    plot: Annotated[
        Path | None,
        typer.Option(
            help="With --test: write the figures here: test AUC over epochs per prior distortion, "
            "and a t-SNE of the test embeddings by class and by P/N."
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the result rows as JSON on stdout (and nothing else there).")
    ] = False,
) -> None:
    """Train a sweep of linear PU heads on cached embeddings in one pass per epoch, and evaluate them.

    The heads are losses × priors × distortions × seeds × label sets (bce/wbce ignore the prior; pn trains on the true labels y).

    Metrics (decision at logit 0) are on --test when given, else on the training rows' y when the label set has it; 'seconds' is the wall time of the one joint training run of all heads.

    Examples:

        impulses train-head --train train.h5 --labels labels.parquet --prior 0.074 --out runs/heads

        impulses train-head --train train.h5 --labels l.parquet --prior 0.074 --distortion 0.1,0.5,1,2,5,10 --seeds 3 --test test.h5 --test-labels t.parquet --eval-every 1 --out runs/distortion

        impulses train-head --train train.h5 --labels l.parquet --prior-range 0.02:0.5:25 --loss imbnnpu --loss nnpu --loss bce --out runs/sweep --json
    """
    import numpy as np

    from impulses.embed.store import EmbeddingStore
    from impulses.pu.heads import check_kernel, head_grid, train_heads
    from impulses.pu.labels import read_label_set, read_test_labels
    from impulses.pu.losses import get_loss
    from impulses.pu.metrics import evaluate_heads
    from impulses.runtime import make_progress, resolve_device

    losses = [get_loss(name).name for name in (loss or ["imbnnpu"])]
    base_priors = parse_priors(prior, prior_range)
    distortions = parse_distortions(distortion)
    if seeds < 1:
        raise ImpulsesError(f"--seeds {seeds}: train at least one seed")
    if (test is None) != (test_labels is None):
        raise ImpulsesError("--test and --test-labels go together: give both or neither")
    if plot is not None and test is None:
        raise ImpulsesError("--plot draws test-set figures: give --test and --test-labels too")
    if plot is not None and eval_every == 0:
        eval_every = 1  # the AUC-over-epochs figure needs every epoch
    torch_device = resolve_device(device)
    check_kernel(kernel, torch_device, "--kernel")
    label_file = read_label_set(labels, names=label_set)
    needs_y = any(get_loss(name).labels == "y" for name in losses)
    if needs_y and label_file.y is None:
        raise ImpulsesError(f"--loss pn trains on true labels, but {labels} has no 'y' column")
    concrete = [float(p) for p in base_priors if p != "auto"]

    def grid_for(priors: list[float] | dict[str, list[float]]) -> list:
        return head_grid(
            losses, priors, distortions, range(seeds), label_file.names,
            prior_prime=prior_prime, beta=beta, gamma=gamma,
        )  # fmt: skip

    grid = grid_for(concrete) if "auto" not in base_priors else None  # bad priors fail before any loading
    store = EmbeddingStore.open(train)
    rows = label_file.rows_in(store)
    X = store.read(rows, dtype=store.dtype)  # float16 stays float16: train_heads widens per batch, exactly
    columns = [label_file.s[:, j] for j in range(len(label_file.names))]
    if needs_y:
        columns.append(label_file.y)
    S = np.stack(columns, axis=1)
    if grid is None:  # --prior auto: estimated per label set, from its features
        grid = grid_for(
            {
                name: [*concrete, auto_prior(X, label_file.s[:, j], name)]
                for j, name in enumerate(label_file.names)
            }
        )

    X_test = y_test = None
    eval_on = "none"
    if test is not None and test_labels is not None:
        test_file = read_test_labels(test_labels)
        test_store = EmbeddingStore.open(test)
        if test_store.dim != store.dim:
            raise ImpulsesError(
                f"--test {test} has dim {test_store.dim}, --train {train} has dim {store.dim}"
            )
        test_rows = test_file.rows_in(test_store)
        X_test, y_test = test_store.read(test_rows, dtype=test_store.dtype), test_file.y
        test_targets, test_classes = test_store.targets[test_rows], test_store.class_names
        eval_on = "test"
    elif label_file.y is not None:
        X_test, y_test = X, label_file.y
        eval_on = "train (y)"

    specs = [head.spec for head in grid]
    err_console.print(
        f"training {len(specs)} head(s) on {len(X):,} x {store.dim} features "
        f"({len(label_file.names)} label set(s)) on {torch_device}",
        style="dim",
        highlight=False,
    )
    with make_progress() as progress:
        task = progress.add_task("epochs", total=epochs)
        result = train_heads(
            X, S, specs, epochs=epochs, batch_size=batch_size, lr=lr, stratified=stratified,
            shuffle_seed=shuffle_seed, device=torch_device, threads=threads, kernel=kernel,
            X_test=X_test if eval_every > 0 and eval_on == "test" else None,
            y_test=y_test if eval_every > 0 and eval_on == "test" else None,
            eval_every=eval_every, track_loss=eval_every > 0,
            on_epoch=lambda done, total: progress.update(task, completed=done),
        )  # fmt: skip
    if X_test is not None:
        metrics = evaluate_heads(result.decision_function(X_test), y_test)
    else:
        metrics = [dict.fromkeys(("accuracy", "f1", "auc", "ap"), float("nan")) for _ in specs]
    rows_out = []
    for k, (head, m) in enumerate(zip(grid, metrics, strict=True)):
        rows_out.append({
            "head": head.spec.name, "loss": head.spec.loss, "prior": head.spec.prior,
            "base_prior": head.base_prior, "distortion": head.distortion, "seed": head.spec.seed,
            "label_set": head.label_set, "epochs": epochs, "accuracy": m["accuracy"], "f1": m["f1"],
            "auc": m["auc"], "ap": m["ap"], "seconds": round(result.seconds, 3), "eval_on": eval_on,
            "skipped_batches": int(result.skipped_batches[k]),
        })  # fmt: skip
    _write_train_outputs(out, rows_out, result, store, train, labels, label_file.names)
    if plot is not None:
        for path in _write_plots(plot, rows_out, result.history, X_test, test_targets, y_test, test_classes):
            err_console.print(f"figure: {path}", markup=False, highlight=False)
    skipping = [row for row in rows_out if row["skipped_batches"]]
    if skipping:
        most = max(row["skipped_batches"] for row in skipping)
        err_console.print(
            f"warning: {len(skipping)} head(s) took no step on up to {most} of {result.batches_per_epoch * epochs} "
            "batches, which held no labeled positive or no unlabeled row (results.csv: skipped_batches); "
            "--stratified avoids that",
            highlight=False,
            soft_wrap=True,
        )
    if as_json:
        typer.echo(json.dumps([{k: _json_value(v) for k, v in row.items()} for row in rows_out]))
        return
    _print_results(rows_out, out)


def _json_value(value: object) -> object:
    """Plain JSON: numpy scalars as numbers, NaN (no evaluation set) as null."""
    if hasattr(value, "item"):
        value = value.item()
    return None if isinstance(value, float) and value != value else value


def _write_train_outputs(out, rows, result, store, train, labels, label_sets) -> None:
    """DIR/results.csv, DIR/heads.pt and (with a history) DIR/history.csv."""
    import polars as pl

    from impulses import __version__
    from impulses.pu.heads import save_heads

    out.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(rows, schema_overrides={"prior": pl.Float64, "base_prior": pl.Float64,
                                         "distortion": pl.Float64}).write_csv(out / "results.csv")  # fmt: skip
    save_heads(
        out / "heads.pt", result,
        store_dim=store.dim, feature_dtype=store.dtype, train_store=str(train),
        store_fingerprint=store.fingerprint, labels=str(labels), label_sets=list(label_sets),
        grid=[{k: row[k] for k in ("head", "loss", "prior", "base_prior", "distortion", "seed", "label_set")}
              for row in rows],
        impulses_version=__version__,
    )  # fmt: skip
    if result.history:
        records = []
        for entry in result.history:
            for k, row in enumerate(rows):
                record = {"head": row["head"], "loss": row["loss"], "prior": row["prior"],
                          "distortion": row["distortion"], "seed": row["seed"], "label_set": row["label_set"],
                          "epoch": entry["epoch"]}  # fmt: skip
                for key in ("train_loss", "auc", "f1", "accuracy", "test_loss"):
                    if key in entry:
                        record[key] = float(entry[key][k])
                records.append(record)
        pl.DataFrame(records, infer_schema_length=None).write_csv(out / "history.csv")


def _write_plots(plot_dir, rows, history, X_test, targets, y_test, class_names) -> list[Path]:
    """Fig. 3 (test AUC over epochs, one line per prior distortion, a panel per PU loss) and Fig. 2 (t-SNE)."""
    from impulses.plots import plot_auc_over_epochs, plot_tsne

    records = [
        {"distortion": row["distortion"], "epoch": entry["epoch"], "auc": float(entry["auc"][k]),
         "head": f"{row['label_set']}/seed {row['seed']}", "panel": row["loss"]}
        for entry in history if "auc" in entry
        for k, row in enumerate(rows) if row["distortion"] is not None
    ]  # fmt: skip
    written = []
    if records:
        written.append(plot_auc_over_epochs(records, Path(plot_dir) / "auc_over_epochs.png"))
    written.append(plot_tsne(X_test, targets, y_test, Path(plot_dir) / "tsne.png", class_names=class_names))
    return written


def _print_results(rows: list[dict], out: Path) -> None:
    from rich.table import Table

    table = Table(title=f"{len(rows)} head(s) -> {out}/results.csv, heads.pt", title_justify="left")
    for column in ("head", "prior", "accuracy", "f1", "auc", "ap"):
        table.add_column(column, justify="left" if column == "head" else "right")
    for row in rows:
        prior = "" if row["prior"] is None else f"{row['prior']:.4g}"
        table.add_row(row["head"], prior, *(f"{row[m]:.4f}" for m in ("accuracy", "f1", "auc", "ap")))
    console.print(table)
    console.print(f"metrics on: {rows[0]['eval_on']}; trained in {rows[0]['seconds']:.2f} s", highlight=False)


@app.command()
def predict(
    heads: Annotated[Path, typer.Option(help="heads.pt written by impulses train-head.")],
    store: Annotated[Path, typer.Option(help="Embedding store (.h5) to score.")],
    out: Annotated[
        Path, typer.Option(help="Scores file (.parquet or .csv): id and one logit column per head.")
    ],
) -> None:
    """Score every sample of a store with trained heads: one logit column per head (positive = class 1).

    Examples:

        impulses predict --heads runs/heads/heads.pt --store test.h5 --out scores.parquet
    """
    import numpy as np
    import polars as pl
    import torch

    from impulses.embed.store import EmbeddingStore
    from impulses.pu.heads import load_heads

    if out.suffix.lower() not in (".parquet", ".csv"):
        raise ImpulsesError(f"--out {out}: scores are written as .parquet or .csv")
    payload = load_heads(heads)
    data = EmbeddingStore.open(store)
    if data.dim != payload["dim"]:
        raise ImpulsesError(
            f"--store {store} has dim {data.dim}, but the heads in {heads} were trained on dim {payload['dim']}"
        )
    W, b = payload["W"].float(), payload["b"].float()
    scores = np.empty((len(data), W.shape[1]), dtype=np.float32)
    for start, block in data.iter_batches(65536):
        scores[start : start + len(block)] = torch.addmm(b, torch.from_numpy(block), W).numpy()
    names = [h.get("name") or f"head{k}" for k, h in enumerate(payload["heads"])]
    frame = pl.DataFrame({"id": [str(i) for i in data.ids], **{n: scores[:, k] for k, n in enumerate(names)}})
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".csv":
        frame.write_csv(out)
    else:
        frame.write_parquet(out)
    typer.echo(f"wrote {len(data):,} rows x {len(names)} head score(s) to {out}")


# ---------------------------------------------------------------------------------------------
# demo (integrator's section)
# ---------------------------------------------------------------------------------------------
@app.command()
def demo(
    out: Annotated[
        Path, typer.Option("--out", help="Run folder: label sets, checkpoint, stores, tables.")
    ] = Path("runs/demo"),
    plot: Annotated[
        Path | None, typer.Option(help="Where to write the figures. (default: OUT/plots)")
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")] = True,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the per-run rows as JSON at the end.")
    ] = False,
) -> None:
    """The whole ImPULSeS pipeline on scikit-learn's digits, in a few minutes on a CPU.

    An imbalanced PU split (positives {0, 1, 8, 9}, c = 0.2, 3 label sets), debiased contrastive
    pretraining of a small encoder, the embedding store, linear heads (ImPULSeS = imbnnPU at the true
    prior, nnPU, BCE, wBCE, the PN upper bound, a prior-distortion sweep 0.1x-10x), the baselines
    trained end to end without pretraining, and a results table. Rerunning reuses finished steps.

    Examples:

        impulses demo

        impulses demo --out runs/demo2 --plot figures --json
    """
    from dataclasses import replace

    from impulses.pipeline.experiment import DEMO, run_experiment
    from impulses.pipeline.report import print_experiment

    config = replace(DEMO, device=device)
    log = (
        (lambda msg: err_console.print(msg, markup=False, highlight=False))
        if as_json
        else (lambda msg: console.print(msg, markup=False, highlight=False))
    )
    result = run_experiment(config, out, plot_dir=plot, progress=progress, log=log)
    if as_json:
        typer.echo(result.runs.write_json())
        return
    print_experiment(result, config)


def _unwrap(doc: str) -> str:
    """A docstring with each prose paragraph on one line, so the terminal, not the source, wraps it.

    Rich markup mode keeps single line breaks; paragraphs with indented lines (examples) stay as written.
    """
    paragraphs = inspect.cleandoc(doc).split("\n\n")
    return "\n\n".join(
        p if any(line.startswith(" ") for line in p.splitlines()) else " ".join(p.split("\n"))
        for p in paragraphs
    )


for _command in app.registered_commands:
    if _command.help is None and _command.callback is not None and _command.callback.__doc__:
        _command.help = _unwrap(_command.callback.__doc__)
