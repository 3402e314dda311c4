"""Heads trained from a store larger than their memory budget, against the same run in memory.

Data: synthetic PU features with class structure (NOT real embeddings), written to an HDF5 file in
float16 chunks of 256 rows (an EmbeddingStore's layout): 10 Gaussian classes in a 64-d subspace plus
noise in all D dimensions through a ReLU, 4 positive classes (30% of rows), c = 0.2; a 10,000-row
test set in memory. Each run is a fresh subprocess so its peak resident memory (``VmHWM`` of
/proc/self/status) is its own:

- ``memory``: the whole store read into memory, full-shuffle epochs (``train_heads`` on the array);
- ``windowed``: ``train_heads(store, max_memory=budget)``, block-shuffled epochs over windows of a
  quarter of the budget, the next window read on a thread;
- ``windowed_third``: the same on the first third of the rows (peak memory should not change with N).

``--heads N`` trains N imbnnPU heads (seeds 0..N-1) at once in every run: a wide sweep's arithmetic,
which consumes the features far more slowly than one head, so the reads matter less; the AUC is
head 0's.

Reported: seconds and rows/s per epoch, peak RSS, the RSS before training (interpreter, torch,
numba), and test AUC. Targets (issue 14): peak RSS under the budget, windowed throughput within 1.5x
of in-memory per row, |AUC difference| <= 0.002.

    python benchmarks/bench_outofcore.py                          # budget 1G, store 3x the budget
    python benchmarks/bench_outofcore.py --budget 256M --ratio 3 --epochs 2 --out /tmp/oc.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

POSITIVE_CLASSES = (0, 1, 8, 9)


def rss_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return -1


def make_rows(n: int, dim: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Features (float16) and class of ``n`` rows: ReLU(class mean in a 64-d subspace + noise)."""
    means = np.random.default_rng(99).normal(size=(10, 64))
    basis = np.linalg.qr(np.random.default_rng(1234).normal(size=(dim, 64)))[0].T
    target = rng.integers(0, 10, size=n)
    latent = means[target] + 2.0 * rng.normal(size=(n, 64))
    x = (latent @ basis) * 1.5 + rng.standard_normal(size=(n, dim), dtype=np.float32)
    return np.maximum(x, 0).astype(np.float16), target


def build(root: Path, n: int, dim: int) -> dict:
    import h5py

    rng = np.random.default_rng(0)
    y = np.empty(n, dtype=np.int64)
    with h5py.File(root / "train.h5", "w") as f:
        ds = f.create_dataset("embeddings", shape=(n, dim), dtype="float16", chunks=(256, dim))
        for start in range(0, n, 65536):
            x, t = make_rows(min(65536, n - start), dim, rng)
            ds[start : start + len(x)] = x
            y[start : start + len(x)] = np.isin(t, POSITIVE_CLASSES)
    s = ((y == 1) & (rng.random(n) < 0.2)).astype(np.int8)
    Xt, tt = make_rows(10_000, dim, rng)
    np.save(root / "s.npy", s)
    np.save(root / "test_x.npy", Xt)
    np.save(root / "test_y.npy", np.isin(tt, POSITIVE_CLASSES).astype(np.int8))
    return {"prior": float(y[s == 0].mean()), "positives": int(y.sum()), "labeled": int(s.sum())}


def child(args: argparse.Namespace) -> None:
    """One run in this process: print a JSON line with its timings, memory and AUC."""
    import h5py

    from impulses.embed.store import read_rows
    from impulses.pu.heads import HeadSpec, train_heads
    from impulses.pu.metrics import fast_auc

    root = Path(args.root)
    s = np.load(root / "s.npy")
    Xt, yt = np.load(root / "test_x.npy"), np.load(root / "test_y.npy")
    ds = h5py.File(root / "train.h5", "r")["embeddings"]
    n = len(s) if args.mode != "windowed_third" else len(s) // 3
    head = [HeadSpec("imbnnpu", args.prior, seed=k) for k in range(args.heads)]  # a seed sweep's arithmetic
    train_heads(Xt[:2000], yt[:2000], head, epochs=1)  # compile or load the kernel
    del Xt  # the test features are scored after the peak is read
    baseline = rss_kib("VmRSS")
    t0 = time.perf_counter()
    if args.mode == "memory":
        X = np.empty((n, ds.shape[1]), dtype=np.float16)
        read_rows(ds, 0, n, X)  # as train_heads(store) without max_memory reads it (preadv per chunk)
        t_read = time.perf_counter() - t0
        result = train_heads(X, s[:n], head, epochs=args.epochs, threads=args.threads)
    else:
        t_read = 0.0
        result = train_heads(
            ds,
            s[:n],
            head,
            epochs=args.epochs,
            max_memory=args.budget,
            rows=np.arange(n),
            threads=args.threads,
        )
    seconds = time.perf_counter() - t0
    peak = rss_kib("VmHWM")
    Xt = np.load(root / "test_x.npy")
    auc = float(fast_auc(result.decision_function(Xt)[:, 0], yt)[0])
    print(json.dumps({
        "mode": args.mode, "rows": n, "epochs": args.epochs, "seconds": seconds, "read_seconds": t_read,
        "train_seconds": result.seconds, "rows_per_second": n * args.epochs / result.seconds,
        "peak_rss_bytes": peak * 1024, "rss_before_training_bytes": baseline * 1024, "test_auc": auc,
        "window_rows": result.config["window_rows"], "threads": result.config["threads"],
    }))  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    from impulses.pu.trainer import parse_bytes

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", default="1G", help="max_memory of the windowed runs")
    parser.add_argument("--ratio", type=float, default=3.0, help="store size / budget")
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="train_heads threads (default its own; 1 on a loaded machine)",
    )
    parser.add_argument("--repeats", type=int, default=2, help="interleaved repeats of each mode; medians")
    parser.add_argument("--heads", type=int, default=1, help="imbnnPU heads (seeds 0..N-1) trained at once")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "outofcore.json")
    parser.add_argument("--child", choices=("memory", "windowed", "windowed_third"), help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--prior", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.budget = parse_bytes(args.budget)
    if args.child:
        args.mode = args.child
        child(args)
        return
    n = int(args.budget * args.ratio) // (args.dim * 2)
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        data = build(root, n, args.dim)
        t_build = time.perf_counter() - t0
        print(f"store: {n:,} x {args.dim} float16 = {n * args.dim * 2 / 2**30:.2f} GiB, budget "
              f"{args.budget / 2**30:.2f} GiB; built in {t_build:.0f} s; prior {data['prior']:.4f}")  # fmt: skip
        runs: dict[str, list[dict]] = {"memory": [], "windowed": [], "windowed_third": []}
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        for rep in range(args.repeats):
            for mode in runs:
                command = [sys.executable, __file__, "--child", mode, "--root", str(root), "--prior",
                           str(data["prior"]), "--budget", str(args.budget), "--epochs", str(args.epochs),
                           "--heads", str(args.heads),
                           *(["--threads", str(args.threads)] if args.threads else [])]  # fmt: skip
                out = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
                runs[mode].append(json.loads(out.stdout.strip().splitlines()[-1]))
                r = runs[mode][-1]
                print(f"  {rep} {mode:15s} train {r['train_seconds']:.1f} s ({r['rows_per_second']:,.0f} rows/s), "
                      f"peak RSS {r['peak_rss_bytes'] / 2**20:,.0f} MiB (before training "
                      f"{r['rss_before_training_bytes'] / 2**20:,.0f}), AUC {r['test_auc']:.4f}")  # fmt: skip
    med = {mode: {key: float(np.median([r[key] for r in rs])) for key in ("train_seconds", "rows_per_second",
           "peak_rss_bytes", "rss_before_training_bytes", "test_auc")} for mode, rs in runs.items()}  # fmt: skip
    ratios = {
        "windowed_over_memory_seconds_per_row": med["memory"]["rows_per_second"]
        / med["windowed"]["rows_per_second"],
        "auc_windowed_minus_memory": med["windowed"]["test_auc"] - med["memory"]["test_auc"],
        "peak_rss_windowed_over_budget": med["windowed"]["peak_rss_bytes"] / args.budget,
        "peak_rss_windowed_third_over_windowed": med["windowed_third"]["peak_rss_bytes"]
        / med["windowed"]["peak_rss_bytes"],
    }
    targets = {
        "peak RSS under the budget": med["windowed"]["peak_rss_bytes"] < args.budget,
        "throughput within 1.5x of in-memory per row": ratios["windowed_over_memory_seconds_per_row"] <= 1.5,
        "test AUC within 0.002 of the full shuffle": abs(ratios["auc_windowed_minus_memory"]) <= 0.002,
    }
    print("ratios: " + ", ".join(f"{k} = {v:.4g}" for k, v in ratios.items()))
    for name, ok in targets.items():
        print(f"  [{'met' if ok else 'MISSED'}] {name}")
    result = {
        "command": " ".join(["python", *map(shlex.quote, sys.argv)]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "loadavg_start": load_start,
                    "loadavg_end": os.getloadavg()},
        "data": {"synthetic": True, "rows": n, "dim": args.dim, "dtype": "float16", "chunk_rows": 256,
                 "store_bytes": n * args.dim * 2, "build_seconds": t_build, **data},
        "budget_bytes": args.budget, "epochs": args.epochs, "heads": args.heads, "threads": args.threads, "runs": runs, "medians": med, "ratios": ratios,
        "targets_met": targets,
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
