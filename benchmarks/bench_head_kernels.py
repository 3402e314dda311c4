"""Fused and wide (numba) against torch (gather + MKL) head kernels, by number of heads: where ``auto`` switches.

Same data as ``bench_heads.py`` (synthetic 33,000 x 2048 float16 features, 600 labeled positives):
for K imbnnPU heads (priors spread, one seed each) the kernels train ``--epochs`` epochs with their
default threads, interleaved, ``--repeats`` times; the best time of each is scaled to 100 epochs and
the ratios printed. ``impulses.pu.heads.FUSED_MAX_HEADS`` is the largest K where fused beats wide
(``auto`` takes wide above it).

    python benchmarks/bench_head_kernels.py      # writes benchmarks/results/head_kernels.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_heads import build_task

from impulses.embed.store import EmbeddingStore
from impulses.pu.heads import HeadSpec, train_heads
from impulses.pu.kernels import FUSED_MAX_HEADS


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heads", default="1,2,4,8,12,16,24,32,64", help="comma-separated K values")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "head_kernels.json")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        task = build_task(Path(tmp), 1.0, 2048)
        X = EmbeddingStore.open(Path(tmp) / "train.h5").read(dtype="float16")
    s = task["s"]
    for kernel in ("fused", "wide"):  # compile or load from numba's cache
        train_heads(X[:2000], s[:2000], [HeadSpec("imbnnpu", 0.1)], epochs=1, kernel=kernel)
    rows = []
    for k in (int(v) for v in args.heads.split(",")):
        heads = [HeadSpec("imbnnpu", 0.02 + 0.01 * j, seed=j) for j in range(k)]
        seconds: dict[str, list[float]] = {"fused": [], "wide": [], "torch": []}
        threads: dict[str, int] = {}
        for _ in range(args.repeats):
            for kernel in seconds:
                result = train_heads(X, s, heads, epochs=args.epochs, kernel=kernel)
                seconds[kernel].append(result.seconds * 100 / args.epochs)
                threads[kernel] = result.config["threads"]
        best = {kernel: min(v) for kernel, v in seconds.items()}
        rows.append(
            {
                "heads": k,
                "fused_seconds_per_100_epochs": best["fused"],
                "torch_seconds_per_100_epochs": best["torch"],
                "wide_seconds_per_100_epochs": best["wide"],
                "torch_over_fused": best["torch"] / best["fused"],
                "wide_over_fused": best["wide"] / best["fused"],
                "threads": threads,
                "repeats": seconds,
            }
        )
        print(
            f"K={k:3d}: fused {best['fused']:6.2f} s  wide {best['wide']:6.2f} s  torch {best['torch']:6.2f} s  "
            f"(per 100 epochs; wide/fused {best['wide'] / best['fused']:.2f}, threads {threads})",
            flush=True,
        )
    wins = [r["heads"] for r in rows if r["wide_over_fused"] > 1]
    print(
        f"fused is faster than wide up to K = {max(wins) if wins else 0}; FUSED_MAX_HEADS = {FUSED_MAX_HEADS}"
    )
    result = {
        "command": " ".join(["python", *map(shlex.quote, sys.argv)]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "platform": platform.platform(),
            "loadavg_end": os.getloadavg(),
        },
        "data": "bench_heads.py's synthetic 33,000 x 2048 float16 features (not real embeddings)",
        "epochs": args.epochs,
        "rows": rows,
        "fused_max_heads": FUSED_MAX_HEADS,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
