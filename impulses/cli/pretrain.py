"""``impulses pretrain``: contrastive pretraining of an encoder, checkpointed every epoch."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Annotated

import typer

from impulses.cli._options import (
    CifarStemOption,
    DataRootOption,
    DeviceOption,
    DownloadOption,
    JsonOption,
    OptionalDataOption,
    ProgressOption,
    QuietOption,
)
from impulses.cli._output import note, print_json, say


def pretrain_command(
    out: Annotated[Path, typer.Option("--out", help="Run directory: last.pt (checkpoint) and history.csv.")],
    data: OptionalDataOption = None,
    data_root: DataRootOption = None,
    download: DownloadOption = False,
    encoder: Annotated[
        str | None, typer.Option(help="Registered or timm encoder name. (default: resnet50)")
    ] = None,
    cifar_stem: CifarStemOption = False,
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
    device: DeviceOption = "auto",
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue OUT/last.pt exactly (unset options come from it).")
    ] = False,
    progress: ProgressOption = True,
    quiet: QuietOption = False,
    as_json: JsonOption = False,
) -> None:
    """Pretrain an encoder with the debiased contrastive loss (or NT-Xent); checkpoint every epoch.

    Runs on several processes under torchrun (DistributedDataParallel; the loss sees the global batch).
    The result feeds `impulses embed --encoder OUT/last.pt`. With --json, stdout holds the checkpoint
    path and the per-epoch history.

    Examples:

        impulses pretrain --data digits --encoder smallcnn --epochs 15 --batch-size 64 --lr 1e-3 --out runs/digits

        impulses pretrain --data cifar10:train --encoder resnet50 --cifar-stem --epochs 400 --out runs/c10

        torchrun --nproc_per_node 4 -m impulses pretrain --data cifar10:train --encoder resnet50 --cifar-stem --out runs/c10

        impulses pretrain --out runs/c10 --resume --epochs 500
    """
    from impulses.encoders.pretrain import run_pretraining
    from impulses.pu.sweep import check_output_dir  # the run folder must be creatable before any work

    check_output_dir(out)
    result = run_pretraining(
        out, data=data, data_root=data_root, download=download, resume=resume,
        progress=progress and not quiet, log=partial(note, quiet=quiet),
        encoder=encoder, preset=preset, image_size=image_size, loss=loss, epochs=epochs,
        batch_size=batch_size, lr=lr, weight_decay=weight_decay, temperature=temperature,
        tau_plus=tau_plus, projection_dim=projection_dim, seed=seed, knn_holdout=knn_holdout,
        weights=weights, cifar_stem=cifar_stem or None, pretrained=pretrained or None,
        sync_bn=sync_bn or None, workers=workers, device=device,
    )  # fmt: skip
    if not result.is_main:
        return
    if as_json:
        print_json({"checkpoint": str(result.checkpoint), "history": result.history})
    else:
        say(f"checkpoint: {result.checkpoint}  (use: impulses embed --encoder {result.checkpoint})")
