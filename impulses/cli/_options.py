"""Options shared by several commands, as ``Annotated`` aliases (one help text, one spelling)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

DeviceOption = Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print the result as JSON on stdout (and nothing else there).")
]
ProgressOption = Annotated[
    bool, typer.Option("--progress/--no-progress", help="Show a progress bar (on stderr).")
]
QuietOption = Annotated[
    bool, typer.Option("-q", "--quiet", help="No progress bar and no informational lines on stderr.")
]
DATA_SPECS = (
    "digits, fashion-mnist[:train|:test], cifar10[:train|:test], cifar100[:train|:test], imagefolder:PATH, "
    "manifest:FILE.csv|.parquet or webdataset:SHARDS.tar; may end in a row range such as [0:5000]"
)
"""The dataset spec forms (:func:`impulses.data.sources.open_source`), for the help of every ``--data``."""
DataOption = Annotated[str, typer.Option(help=f"Dataset spec: {DATA_SPECS}.")]
OptionalDataOption = Annotated[
    str | None, typer.Option(help=f"Dataset spec (default: the resumed run's): {DATA_SPECS}.")
]
DataRootOption = Annotated[Path | None, typer.Option(help="Folder holding (or receiving) the dataset files.")]
DownloadOption = Annotated[
    bool, typer.Option("--download", help="Let torchvision download a missing dataset.")
]
CifarStemOption = Annotated[
    bool, typer.Option("--cifar-stem", help="3x3 stride-1 first conv, no max-pool (8-32 px images).")
]
SkipNonfiniteOption = Annotated[
    bool,
    typer.Option(
        "--skip-nonfinite",
        help="Rows whose embedding holds NaN or Inf: leave them out with a warning instead of stopping "
        "(predict gives them NaN scores).",
    ),
]
