"""Calibration of imbnnPU heads on Fashion-MNIST embeddings: ECE of p(y=1 | x) at prevalence 0.4, per route.

For each label set of the training labels (the fashion-mnist-imbalanced preset: π = p(y=1 | s=0)
= 0.0741), the labeled positives and the unlabeled rows are each split 80/20 (seeded); on the 80%
two imbnnPU heads train together at the true prior (the paper's settings: Adam 3e-4, batch 256,
100 epochs, π′ = 0.5), one with the sigmoid loss (the paper's) and one with the logistic surrogate.
The test set holds 40% positives, so ``predict_proba(prevalence=0.4)`` should match its labels:

- ``sigmoid raw``: σ(logit) of the sigmoid head (a score: before calibration);
- ``sigmoid + PU Platt``: the sigmoid head calibrated by PU Platt scaling on the held-out 20%
  (labeled positives and unlabeled rows only) at π, then shifted to P = 0.4;
- ``logistic raw``: σ(logit) of the logistic-surrogate head (log-odds at its balance π′ = 0.5);
- ``logistic + shift``: its logits shifted from π′ to P = 0.4 (no held-out data used);
- ``logistic + PU Platt``: the logistic head calibrated like the sigmoid one.

ECE uses 15 equal-width bins (:func:`impulses.pu.calibration.expected_calibration_error`).

    PYTHONPATH=. .venv/bin/python benchmarks/calibration.py --train runs/fm/train.h5 \\
        --labels runs/fm/labels.parquet --test runs/fm/test.h5 --test-labels runs/fm/test-labels.parquet \\
        --prior 0.0741 --out docs/results/calibration
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time
from pathlib import Path

import numpy as np

from impulses.atomic import atomic_path
from impulses.embed.store import EmbeddingStore
from impulses.pu.calibration import expected_calibration_error, held_out_rows
from impulses.pu.heads import HeadSpec, train_heads
from impulses.pu.labels import read_test_set, read_training_set
from impulses.pu.metrics import fast_auc

PREVALENCE = 0.4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", type=Path, required=True)
    parser.add_argument("--labels", type=Path, required=True)
    parser.add_argument("--test", type=Path, required=True)
    parser.add_argument("--test-labels", type=Path, required=True)
    parser.add_argument("--prior", type=float, required=True, help="the true π = p(y=1 | s=0)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--fraction", type=float, default=0.2, help="held-out share for PU Platt")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    training = read_training_set(EmbeddingStore.open(args.train), args.labels)
    test = read_test_set(EmbeddingStore.open(args.test), args.test_labels)
    rows = []
    for j, name in enumerate(training.names):
        s = training.S[:, j]
        held = held_out_rows(s, args.fraction, args.seed + j)
        heads = [
            HeadSpec("imbnnpu", args.prior, seed=args.seed, name="sigmoid"),
            HeadSpec("imbnnpu", args.prior, seed=args.seed, name="logistic", surrogate="logistic"),
        ]
        start = time.perf_counter()
        result = train_heads(training.X[~held], s[~held], heads, epochs=args.epochs, shuffle_seed=args.seed)
        seconds = time.perf_counter() - start
        logits = result.decision_function(test.X)
        raw = 1 / (1 + np.exp(-logits.astype(np.float64)))
        logistic = dataclasses.replace(result, W=result.W[:, 1:], b=result.b[1:], heads=heads[1:], meta={})
        shifted = logistic.predict_proba(test.X, prevalence=PREVALENCE)[:, 0]  # no held-out data used
        result.calibrate(training.X[held], s[held])  # PU Platt at each head's prior, held-out rows
        platt = result.predict_proba(test.X, prevalence=PREVALENCE)
        routes = {
            "sigmoid raw": raw[:, 0],
            "sigmoid + PU Platt": platt[:, 0],
            "logistic raw": raw[:, 1],
            "logistic + shift": shifted,
            "logistic + PU Platt": platt[:, 1],
        }
        auc = fast_auc(logits, test.y)
        for route, probs in routes.items():
            head = 0 if route.startswith("sigmoid") else 1
            rows.append(
                {"label_set": name, "route": route, "ece": expected_calibration_error(probs, test.y),
                 "mean_p": float(probs.mean()), "test_auc": float(auc[head]), "train_seconds": round(seconds, 2)}
            )  # fmt: skip
            print(
                f"{name:6s} {route:22s} ECE {rows[-1]['ece']:.4f}  mean p {rows[-1]['mean_p']:.3f}",
                flush=True,
            )

    import polars as pl

    frame = pl.DataFrame(rows)
    summary = frame.group_by("route", maintain_order=True).agg(
        pl.col("ece").mean().alias("ece_mean"), pl.col("ece").max().alias("ece_max"),
        pl.col("mean_p").mean().alias("mean_p"), pl.col("test_auc").mean().alias("test_auc"),
    )  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out / "results.csv") as tmp:
        frame.write_csv(tmp)
    with atomic_path(args.out / "summary.csv") as tmp:
        summary.write_csv(tmp)
    run = {
        "prior": args.prior, "prevalence": PREVALENCE, "test_positive_share": float(test.y.mean()),
        "epochs": args.epochs, "held_out_fraction": args.fraction, "seed": args.seed,
        "train_rows": len(training.X), "test_rows": len(test.X), "dim": int(training.X.shape[1]),
        "machine": platform.processor() or platform.machine(),
    }  # fmt: skip
    with atomic_path(args.out / "run.json") as tmp:
        tmp.write_text(json.dumps(run, indent=2) + "\n")
    print(summary)


if __name__ == "__main__":
    main()
