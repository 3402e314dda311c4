"""Model selection on held-out PU data against the oracle: which head each PU criterion picks.

A sweep of linear heads (losses × prior distortions × seeds × label sets) is trained with
``run_sweep(..., val_fraction=F)``: each label set holds out a stratified share F of its labeled
positives and unlabeled rows and its heads train on the rest. Each PU criterion (PU-AUC, Lee & Liu,
PU accuracy, PU balanced accuracy, all computed from the held-out PU rows alone) then picks one head
per label set; the script compares its true test AUC and F1 with the oracle's (the best head on the
test labels) and with the median head's, and writes:

- ``selection.csv``: per label set and criterion, the chosen head and its test AUC/F1, the oracle's
  and the median head's, the gap and the chosen head's rank;
- ``heads.csv``: every head's row of the sweep (held-out criteria and test metrics);
- ``convergence.csv``: test AUC and F1 of every head at each evaluated epoch;
- ``report.md``: the tables, the settings, the stores' provenance and the run time.

Usage (the stores: ``train.h5``, ``labels.parquet`` with label sets s_0..s_2 and y,
``test.h5``, ``test-labels.parquet``, as ``benchmarks/fashion_mnist_pu.py`` writes them)::

    python benchmarks/pu_selection.py --stores STORES --out docs/results/pu-selection
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

from impulses.atomic import atomic_path
from impulses.embed.store import EmbeddingStore
from impulses.pu.labels import read_test_set, read_training_set
from impulses.pu.sweep import SELECTION_CRITERIA, run_sweep

DEFAULT_DISTORTIONS = "0.25,0.4,0.63,1,1.6,2.5,4"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--stores", type=Path, required=True, help="Folder with the train/test stores and labels."
    )
    parser.add_argument("--out", type=Path, default=Path("docs/results/pu-selection"))
    parser.add_argument("--losses", default="imbnnpu,nnpu")
    parser.add_argument("--distortions", default=DEFAULT_DISTORTIONS, help="Factors of the true π.")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--kernel", default="fused")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--val-seed", type=int, default=0)
    parser.add_argument("--bootstrap", type=int, default=200)
    parser.add_argument(
        "--eval-every", type=int, default=100, help="Test AUC/F1 every N epochs (convergence)."
    )
    return parser.parse_args(argv)


def selection_table(rows: pl.DataFrame) -> pl.DataFrame:
    """Per label set and criterion: the chosen head against the oracle and the median head (test labels)."""
    out = []
    for label_set in rows["label_set"].unique(maintain_order=True):
        group = rows.filter(pl.col("label_set") == label_set)
        auc, f1 = group["auc"].to_numpy(), group["f1"].to_numpy()
        for name, column in SELECTION_CRITERIA.items():
            values = group[column].to_numpy()
            k = int(np.nanargmax(values))  # the sweep's rule: the first of the best
            out.append(
                {
                    "label_set": label_set,
                    "criterion": name,
                    "head": group["head"][k],
                    "loss": group["loss"][k],
                    "distortion": group["distortion"][k],
                    "criterion_value": float(values[k]),
                    "test_auc": float(auc[k]),
                    "test_f1": float(f1[k]),
                    "oracle_auc": float(auc.max()),
                    "oracle_f1": float(f1.max()),
                    "median_auc": float(np.median(auc)),
                    "median_f1": float(np.median(f1)),
                    "auc_gap": float(auc.max() - auc[k]),
                    "f1_gap": float(f1.max() - f1[k]),
                    "auc_rank": int((auc > auc[k]).sum()) + 1,
                    "f1_rank": int((f1 > f1[k]).sum()) + 1,
                    "heads": int(group.height),
                    "spearman_auc": spearman(values, auc),
                    "spearman_f1": spearman(values, f1),
                }
            )
    return pl.DataFrame(out)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    keep = np.isfinite(a) & np.isfinite(b)
    return float(spearmanr(a[keep], b[keep]).statistic) if keep.sum() > 2 else float("nan")


def markdown(frame: pl.DataFrame, floats: str = "{:.4f}") -> str:
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * frame.width]
    for row in frame.iter_rows():
        cells = [floats.format(v) if isinstance(v, float) else str(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def command_line(argv: list[str]) -> str:
    """The command as run, with the stores' folder written STORES (the repository names no outside path)."""
    words = ["python", "benchmarks/pu_selection.py"]
    rest = iter(argv[1:])
    for word in rest:
        if word == "--stores":
            words += [word, "STORES"]
            next(rest, None)
        elif word.startswith("--stores="):
            words.append("--stores=STORES")
        else:
            words.append(word)
    return " ".join(words)


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    t0 = time.perf_counter()
    train_store = EmbeddingStore.open(args.stores / "train.h5")
    training = read_training_set(train_store, args.stores / "labels.parquet", None)
    test = read_test_set(EmbeddingStore.open(args.stores / "test.h5"), args.stores / "test-labels.parquet")
    if training.y is None:
        sys.exit("labels.parquet has no y: the true prior is needed")
    true_priors = {
        name: float(training.y[training.S[:, j] == 0].mean()) for j, name in enumerate(training.names)
    }
    prior = float(np.mean(list(true_priors.values())))
    distortions = [float(v) for v in args.distortions.split(",")]
    losses = args.losses.split(",")
    print(
        f"{len(training.X):,} x {training.X.shape[1]} training rows, label sets {training.names}, π = {prior:.4f}"
    )
    t_sweep = time.perf_counter()
    result = run_sweep(
        training.X, training.S, training.names, losses=losses, priors=[prior], distortions=distortions,
        seeds=args.seeds, X_test=test.X, y_test=test.y, epochs=args.epochs, batch_size=args.batch_size,
        lr=args.lr, kernel=args.kernel, threads=args.threads, eval_every=args.eval_every,
        val_fraction=args.val_fraction, val_seed=args.val_seed, select="pu-auc", bootstrap=args.bootstrap,
    )  # fmt: skip
    sweep_seconds = time.perf_counter() - t_sweep
    rows = result.rows
    table = selection_table(rows)

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "heads.csv") as tmp:
        rows.write_csv(tmp)
    with atomic_path(out / "selection.csv") as tmp:
        table.write_csv(tmp)
    convergence = None
    if result.history is not None and "auc" in result.history.columns:
        convergence = result.history.filter(pl.col("auc").is_not_null()).select(
            "head", "loss", "distortion", "seed", "label_set", "epoch", "auc", "f1"
        )
        with atomic_path(out / "convergence.csv") as tmp:
            convergence.write_csv(tmp)

    summary = table.group_by("criterion", maintain_order=True).agg(
        pl.col("test_auc").mean(),
        pl.col("oracle_auc").mean(),
        pl.col("median_auc").mean(),
        pl.col("auc_gap").max().alias("max_auc_gap"),
        pl.col("test_f1").mean(),
        pl.col("oracle_f1").mean(),
        pl.col("median_f1").mean(),
        pl.col("f1_gap").max().alias("max_f1_gap"),
        (pl.col("test_auc") >= pl.col("median_auc")).all().alias("auc_never_below_median"),
        pl.col("spearman_auc").mean(),
    )
    per_set = table.select(
        "label_set", "criterion", "head", "test_auc", "oracle_auc", "median_auc", "auc_gap", "auc_rank",
        "test_f1", "oracle_f1", "median_f1", "f1_rank",
    )  # fmt: skip
    pu_auc = table.filter(pl.col("criterion") == "pu-auc")
    target_gap = bool((pu_auc["auc_gap"] <= 0.01).all())
    target_median = bool((pu_auc["test_auc"] >= pu_auc["median_auc"]).all())
    lines = [
        "# PU model selection on held-out PU data (Fashion-MNIST, 3 label sets)",
        "",
        f"Sweep: losses {', '.join(losses)} × priors {', '.join(f'{d:g}' for d in distortions)} × π "
        f"(π = {prior:.4f}, the true p(y=1 | s=0); per label set {json.dumps({k: round(v, 6) for k, v in true_priors.items()})}) "
        f"× {args.seeds} seeds × {len(training.names)} label sets = {rows.height} heads. "
        f"Each label set holds out {args.val_fraction:g} of its labeled positives and of its unlabeled rows "
        f"(val_seed {args.val_seed}; held out per label set: "
        + ", ".join(f"{k} {v['labeled']} P + {v['unlabeled']} U" for k, v in result.validation.items())
        + "); its heads train on the rest "
        f"({args.epochs} epochs, batch {args.batch_size}, Adam lr {args.lr:g}, kernel {args.kernel}). "
        "Criteria use only the held-out PU rows (decision at logit 0; the accuracies at π); test metrics use "
        f"the {len(test.y):,} test labels ({test.y.mean():.0%} positive).",
        "",
        "Targets (PU-AUC selection): within 0.01 test AUC of the oracle on every label set: "
        f"**{'met' if target_gap else 'not met'}**; never below the median head: "
        f"**{'met' if target_median else 'not met'}**.",
        "",
        "## Mean over label sets",
        "",
        markdown(summary),
        "",
        "spearman_auc: rank correlation between the criterion and the test AUC over the heads of a label set.",
        "",
        "## Per label set",
        "",
        markdown(per_set),
        "",
    ]
    if convergence is not None:
        epochs = sorted(convergence["epoch"].unique().to_list())
        conv = (
            convergence.group_by("loss", "distortion", "epoch")
            .agg(pl.col("auc").mean())
            .sort("epoch")
            .pivot(on="epoch", index=["loss", "distortion"], values="auc")
            .sort("loss", "distortion")
        )
        conv.columns = [*conv.columns[:2], *(f"auc@{e}" for e in epochs)]
        lines += [
            "## Convergence (mean test AUC over seeds and label sets, by epoch)",
            "",
            markdown(conv),
            "",
        ]
    lines += [
        "## Provenance",
        "",
        f"Command: `{command_line(sys.argv if argv is None else ['benchmarks/pu_selection.py', *argv])}` "
        "(STORES: the folder of the stores).",
        "",
        f"Training store: encoder {train_store.meta.get('encoder')}, fingerprint "
        f"{train_store.fingerprint[:16]}…, {len(train_store):,} rows × {train_store.dim} ({train_store.dtype}).",
        f"Run time: sweep {sweep_seconds:.0f} s (training {result.heads.seconds:.0f} s), total "
        f"{time.perf_counter() - t0:.0f} s on {platform.machine()} ({platform.python_version()}), a shared 2-core CPU.",
        "",
    ]
    write_text(out / "report.md", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
