"""The Fashion-MNIST experiment: ImPULSeS against its baselines on the `fashion-mnist-imbalanced` split.

Runs :data:`impulses.pipeline.experiment.FASHION_MNIST` (debiased pretraining of a CPU-sized encoder,
embedding, the paper's heads and baselines over 3 label sets, the prior-misspecification sweep and the
figures) in a run folder, then copies the report, tables, figures, config and the exact command into
``docs/results/fashion-mnist/``. Rerunning resumes: finished steps (checkpoint, stores) are reused.

    python benchmarks/fashion_mnist_pu.py --data-root ../shared/data/fashion-mnist
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

from impulses.pipeline.experiment import FASHION_MNIST, run_experiment
from impulses.pipeline.report import print_experiment, publish_results

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data" / "fashion-mnist"))
    parser.add_argument("--run-dir", default=str(ROOT / "runs" / "fashion-mnist"))
    parser.add_argument("--docs-dir", default=str(ROOT / "docs" / "results" / "fashion-mnist"))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", type=int, default=FASHION_MNIST.workers)
    args = parser.parse_args()

    config = replace(FASHION_MNIST, data_root=args.data_root, device=args.device, workers=args.workers)
    started = time.perf_counter()
    result = run_experiment(config, args.run_dir)
    wall = time.perf_counter() - started
    print_experiment(result, config)

    docs = publish_results(result, config, args.docs_dir, wall_seconds=wall, argv=sys.argv)
    print(f"results copied to {docs}")


if __name__ == "__main__":
    main()
