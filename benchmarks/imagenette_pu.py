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
import sys
import time
from dataclasses import replace
from pathlib import Path

from impulses.pipeline.experiment import IMAGENETTE, run_experiment
from impulses.pipeline.report import print_experiment, publish_results

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data" / "imagenette"))
    parser.add_argument("--run-dir", default=str(ROOT / "runs" / "imagenette"))
    parser.add_argument("--docs-dir", default=str(ROOT / "docs" / "results" / "imagenette"))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", type=int, default=IMAGENETTE.workers)
    parser.add_argument("--pretrain-epochs", type=int, default=IMAGENETTE.pretrain_epochs)
    parser.add_argument(
        "--e2e-epochs", type=int, default=IMAGENETTE.e2e_epochs, help="epochs of the end-to-end baselines"
    )
    args = parser.parse_args()

    config = replace(
        IMAGENETTE,
        data_root=str(Path(args.data_root).resolve()),
        device=args.device,
        workers=args.workers,
        pretrain_epochs=args.pretrain_epochs,
        e2e_epochs=args.e2e_epochs,
    )
    started = time.perf_counter()
    result = run_experiment(config, args.run_dir)
    wall = time.perf_counter() - started
    print_experiment(result, config)

    docs = publish_results(result, config, args.docs_dir, wall_seconds=wall, argv=sys.argv)
    print(f"results copied to {docs}")


if __name__ == "__main__":
    main()
