"""The Imagenette experiment: ImPULSeS on colour photos, machines against the rest, at 32 px.

Runs :data:`impulses.pipeline.experiment.IMAGENETTE` (every photo decoded once to 32 px, debiased
pretraining of a CPU-sized encoder on the PU training photos, embedding, the paper's heads over 3 label
sets and the prior-misspecification sweep, imbnnPU and PN end to end without pretraining, a linear
imbnnPU head on raw pixels as the floor, figures) in a run folder, then copies the report, tables,
figures, config and the exact command into ``docs/results/imagenette/``. Rerunning resumes: finished
steps (decoded images, checkpoint, stores, baselines) are reused.

    python benchmarks/imagenette_pu.py --data-root ../shared/data/imagenette
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import shutil
import sys
import time
from dataclasses import asdict, replace
from datetime import datetime, timezone
from pathlib import Path

import torch

from impulses import __version__
from impulses.pipeline.experiment import IMAGENETTE, run_experiment
from impulses.pipeline.report import print_experiment

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data" / "imagenette"))
    parser.add_argument("--run-dir", default=str(ROOT / "runs" / "imagenette"))
    parser.add_argument("--docs-dir", default=str(ROOT / "docs" / "results" / "imagenette"))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", type=int, default=IMAGENETTE.workers)
    parser.add_argument("--pretrain-epochs", type=int, default=IMAGENETTE.pretrain_epochs)
    args = parser.parse_args()

    config = replace(
        IMAGENETTE,
        data_root=str(Path(args.data_root).resolve()),
        device=args.device,
        workers=args.workers,
        pretrain_epochs=args.pretrain_epochs,
    )
    started = time.perf_counter()
    result = run_experiment(config, args.run_dir)
    wall = time.perf_counter() - started
    print_experiment(result, config)

    docs = Path(args.docs_dir)
    docs.mkdir(parents=True, exist_ok=True)
    for name in ("report", "runs", "summary", "plot_auc", "plot_tsne"):
        shutil.copy2(result.files[name], docs / result.files[name].name)
    shutil.copy2(Path(args.run_dir) / "distortion.csv", docs / "distortion.csv")
    shutil.copy2(Path(args.run_dir) / "encoder" / "history.csv", docs / "pretrain_history.csv")
    meta = {
        "command": "python " + " ".join(shlex.quote(a) for a in [str(Path(sys.argv[0])), *sys.argv[1:]]),
        "config": asdict(config),
        "seconds": result.seconds,
        "wall_seconds": wall,
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
    (docs / "run.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
    print(f"results copied to {docs}")


if __name__ == "__main__":
    main()
