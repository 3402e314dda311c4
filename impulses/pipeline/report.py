"""An experiment's results as rich tables (``impulses demo``) and as committed files (the benchmark scripts)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from rich.table import Table

from impulses.pipeline.experiment import ExperimentConfig, ExperimentResult
from impulses.runtime import console

SHOWN = ("accuracy", "f1", "auc")  # the paper's metrics; average precision is in the CSV and report


def _cell(mean: float | None, std: float | None) -> str:
    if mean is None or math.isnan(mean):
        return "-"
    return f"{mean:.3f}" if std is None or math.isnan(std) else f"{mean:.3f} ± {std:.3f}"


def _table(title: str, frame: Any, keys: list[tuple[str, str]]) -> Table:
    table = Table(title=title, title_justify="left")
    for _, header in keys:
        table.add_column(header)
    for metric in SHOWN:
        table.add_column({"f1": "F1", "auc": "AUC"}.get(metric, metric), justify="right", no_wrap=True)
    for row in frame.iter_rows(named=True):
        cells = []
        for key, _ in keys:
            value = row[key]
            cells.append(
                "yes"
                if value is True
                else "no"
                if value is False
                else f"{value:g}"
                if isinstance(value, float)
                else str(value)
            )
        cells += [_cell(row[f"{m}_mean"], row[f"{m}_std"]) for m in SHOWN]
        table.add_row(*cells)
    return table


def print_experiment(result: ExperimentResult, config: ExperimentConfig) -> None:
    """The method table (mean ± std over label sets), the distortion sweep and where the files are."""
    s = result.split
    console.print(
        f"\n[bold]{config.name}[/bold]: {s['n_positive']:,} P : {s['n_negative']:,} N, L:U {s['lu_ratio']}, "
        f"π = p(y=1|s=0) = {s['prior']:.4f}; mean ± std over {config.n_label_sets} label sets"
    )
    console.print(
        _table("Methods (test set)", result.summary, [("method", "method"), ("pretrained", "pretrained")])
    )
    console.print(
        _table(
            "Prior misspecification: imbnnPU at b·π",
            result.distortion,
            [("distortion", "b"), ("prior", "b·π")],
        )
    )
    timing = ", ".join(f"{k} {v:.1f} s" for k, v in result.seconds.items())
    console.print(f"time: {timing}")
    for name in ("report", "runs", "plot_auc", "plot_tsne"):
        if name in result.files:
            console.print(f"{name}: {result.files[name]}", markup=False, highlight=False)


def publish_results(
    result: ExperimentResult,
    config: ExperimentConfig,
    docs_dir: str | Path,
    *,
    wall_seconds: float,
    argv: list[str],
) -> Path:
    """Copy an experiment's report, tables, figures and pretraining history into ``docs_dir``.

    Also writes ``run.json``: the exact command (``argv``), the config, stage and wall times, the
    machine and the split, so that every committed number says how it was made.

    Returns:
        The folder written.
    """
    import json
    import platform
    import shlex
    import shutil
    from dataclasses import asdict
    from datetime import datetime, timezone

    import torch

    from impulses import __version__
    from impulses.atomic import atomic_path

    docs = Path(docs_dir)
    docs.mkdir(parents=True, exist_ok=True)
    for name in ("report", "runs", "summary", "plot_auc", "plot_tsne"):
        shutil.copy2(result.files[name], docs / result.files[name].name)
    shutil.copy2(result.out_dir / "distortion.csv", docs / "distortion.csv")
    shutil.copy2(result.out_dir / "encoder" / "history.csv", docs / "pretrain_history.csv")
    meta = {
        "command": "python " + " ".join(shlex.quote(a) for a in [str(Path(argv[0])), *argv[1:]]),
        "config": asdict(config),
        "seconds": result.seconds,
        "wall_seconds": wall_seconds,
        "machine": {
            "cpu_count": torch.get_num_threads(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "device": str(torch.cuda.get_device_name(0)) if torch.cuda.is_available() else "cpu",
        },
        "impulses_version": __version__,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "split": result.split,
    }
    with atomic_path(docs / "run.json") as tmp:
        tmp.write_text(json.dumps(meta, indent=2, default=str) + "\n")
    return docs
