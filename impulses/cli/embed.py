"""``impulses embed``: a frozen encoder over a dataset, one cached embedding per image."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from impulses.cli._options import (
    CifarStemOption,
    DataOption,
    DataRootOption,
    DeviceOption,
    DownloadOption,
    JsonOption,
    ProgressOption,
    QuietOption,
)
from impulses.cli._output import print_json, say
from impulses.cli._stores import check_store_out


def embed_command(
    data: DataOption,
    encoder: Annotated[
        str, typer.Option(help="A registered or timm encoder name, or an `impulses pretrain` checkpoint.")
    ],
    out: Annotated[Path, typer.Option("--out", help="The store to write (HDF5, e.g. runs/digits.h5).")],
    data_root: DataRootOption = None,
    download: DownloadOption = False,
    weights: Annotated[Path | None, typer.Option(help="A local state dict for the named encoder.")] = None,
    pretrained: Annotated[
        bool, typer.Option("--pretrained", help="timm's published weights for the named encoder.")
    ] = False,
    random_init: Annotated[
        bool,
        typer.Option(
            "--random-init", help="Embed with a timm encoder's random initial weights (a baseline)."
        ),
    ] = False,
    cifar_stem: CifarStemOption = False,
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
    device: DeviceOption = "auto",
    dtype: Annotated[str, typer.Option(help="Stored dtype: float16 or float32.")] = "float16",
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing store or unfinished run of another run.")
    ] = False,
    skip_bad: Annotated[
        bool,
        typer.Option("--skip-bad", help="Skip unreadable images (listed in the store) instead of stopping."),
    ] = False,
    progress: ProgressOption = True,
    quiet: QuietOption = False,
    as_json: JsonOption = False,
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

    check_store_out(out)
    result = embed_dataset(
        data, encoder, out, data_root=data_root, download=download, weights=weights, pretrained=pretrained,
        random_init=random_init, cifar_stem=cifar_stem, image_size=image_size, batch_size=batch_size,
        workers=workers, device=device, dtype=dtype, overwrite=overwrite, skip_bad=skip_bad,
        progress=progress and not quiet,
    )  # fmt: skip
    if not result.is_main:
        return
    summary = result.summary()
    if as_json:
        print_json(summary)
    elif summary["status"] == "up-to-date":
        say(f"{out}: up to date ({summary['rows']} rows x {summary['dim']}); nothing to do")
    else:
        skipped = f", {summary['skipped']} unreadable image(s) skipped" if summary["skipped"] else ""
        say(
            f"{out}: {summary['status']} {summary['rows']} rows x {summary['dim']} ({summary['dtype']}){skipped}; "
            f"{summary['images_embedded']} images at {summary['images_per_s']:,.0f} img/s"
        )
