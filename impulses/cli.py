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
