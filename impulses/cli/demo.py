"""``impulses demo``: the whole pipeline on scikit-learn's digits."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Annotated

import typer

from impulses.cli._options import DeviceOption, JsonOption, ProgressOption, QuietOption
from impulses.cli._output import note, say


def demo_command(
    out: Annotated[
        Path, typer.Option("--out", help="Run folder: label sets, checkpoint, stores, tables.")
    ] = Path("runs/demo"),
    plot: Annotated[
        Path | None, typer.Option(help="Where to write the figures. (default: OUT/plots)")
    ] = None,
    device: DeviceOption = "auto",
    progress: ProgressOption = True,
    quiet: QuietOption = False,
    as_json: JsonOption = False,
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

    from impulses.pipeline import experiment
    from impulses.pipeline.report import print_experiment

    config = replace(experiment.DEMO, device=device)
    log = partial(note, quiet=quiet) if as_json or quiet else say
    result = experiment.run_experiment(config, out, plot_dir=plot, progress=progress and not quiet, log=log)
    if as_json:
        typer.echo(result.runs.write_json())
        return
    print_experiment(result, config)
