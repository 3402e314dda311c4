"""Is ImPULSeS's lead on Imagenette the end-to-end baseline's small budget? imbnnPU end to end, longer.

Reads the run folder of ``benchmarks/imagenette_pu.py`` (its label sets, test labels, 32 px decoded
photos and encoder checkpoint, whose test transform the baselines use) and trains the experiment's
imbnnPU end-to-end baseline (``smallcnn-pooled`` from random initialisation, batch 128, lr 1e-3, the
true π, the seed the experiment gives each label set) for each ``--epochs`` value on each label set,
then reports test AUC and F1, mean ± std over the label sets, beside the experiment's own rows.

    python benchmarks/imagenette_e2e_budget.py --run-dir runs/imagenette --epochs 10 \
        --out benchmarks/results/imagenette-e2e-budget.json
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import polars as pl

from impulses.data.decoded import DecodedSource, decode_source
from impulses.data.sources import open_source
from impulses.encoders import load_encoder
from impulses.encoders.augment import test_transform
from impulses.pipeline.end_to_end import EndToEndConfig, images_to_tensor, run_end_to_end
from impulses.pipeline.experiment import IMAGENETTE
from impulses.pu.metrics import evaluate_heads

ROOT = Path(__file__).resolve().parents[1]


def photos(data_root: Path, split: str, run_dir: Path) -> DecodedSource:
    """The ``split`` photos served from the experiment's 32 px decoded array."""
    source = open_source(f"imagefolder:{data_root / split}")
    folder = run_dir / f"decoded-{'train' if split == 'train' else 'test'}-{IMAGENETTE.image_size}px"
    decoded = decode_source(source, image_size=int(IMAGENETTE.image_size or 32), channels=3, path=folder)
    return DecodedSource(source, decoded)


def summarize(rows: list[dict]) -> list[dict]:
    """Mean and sample standard deviation (ddof 1, as the experiment's tables) of AUC and F1 per budget."""
    out = []
    for epochs in dict.fromkeys(r["epochs"] for r in rows):
        mine = [r for r in rows if r["epochs"] == epochs]
        stats = {}
        for metric in ("auc", "f1"):
            values = np.array([r[metric] for r in mine], dtype=float)
            stats[f"{metric}_mean"] = float(values.mean())
            stats[f"{metric}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        out.append({"epochs": epochs, **stats})
    return out


def main() -> None:
    """Train the longer baselines and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=ROOT.parent / "shared" / "data" / "imagenette")
    parser.add_argument("--run-dir", type=Path, default=ROOT / "runs" / "imagenette")
    parser.add_argument("--epochs", type=int, nargs="+", default=[10])
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "imagenette-e2e-budget.json"
    )
    args = parser.parse_args()

    labels = pl.read_parquet(args.run_dir / "labels.parquet")
    test_labels = pl.read_parquet(args.run_dir / "test-labels.parquet")
    train, test = photos(args.data_root, "train", args.run_dir), photos(args.data_root, "val", args.run_dir)
    row_of = {train.sample_id(row): row for row in range(len(train))}
    test_row_of = {test.sample_id(row): row for row in range(len(test))}
    transform = test_transform(dict(load_encoder(str(args.run_dir / "encoder" / "last.pt")).transform))
    train_x = images_to_tensor(train, [row_of[i] for i in labels["id"].to_list()], transform)
    test_x = images_to_tensor(test, [test_row_of[i] for i in test_labels["id"].to_list()], transform)
    y_test = test_labels["y"].to_numpy().astype(np.int64)
    y = labels["y"].to_numpy()
    columns = [c for c in labels.columns if c.startswith("s_")]

    rows = []
    for epochs in args.epochs:
        for k, column in enumerate(columns):
            s = labels[column].to_numpy().astype(np.int64)
            prior = float(y[s == 0].mean())
            config = EndToEndConfig(
                encoder=IMAGENETTE.encoder, loss="imbnnpu", prior=prior, epochs=epochs,
                batch_size=IMAGENETTE.e2e_batch_size, lr=IMAGENETTE.e2e_lr, seed=IMAGENETTE.seed + k,
            )  # fmt: skip
            started = time.perf_counter()
            logits, _ = run_end_to_end(train_x, s, test_x, config)
            metrics = evaluate_heads(logits, y_test)[0]
            row = {"epochs": epochs, "label_set": k, "auc": metrics["auc"], "f1": metrics["f1"],
                   "seconds": round(time.perf_counter() - started, 1)}  # fmt: skip
            rows.append(row)
            print(json.dumps(row), flush=True)
    summary = summarize(rows)
    for line in summary:
        print(json.dumps(line))
    experiment = (
        pl.read_csv(args.run_dir / "summary.csv").to_dicts()
        if (args.run_dir / "summary.csv").exists()
        else []
    )
    result = {
        "benchmark": "imbnnPU end to end on the Imagenette experiment's split, longer budgets",
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "rows": rows,
        "summary": summary,
        "experiment_summary": experiment,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
