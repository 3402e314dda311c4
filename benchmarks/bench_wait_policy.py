"""How the numba kernels' threads wait at barriers: spinning (OpenMP ACTIVE) vs sleeping (PASSIVE).

Each case runs in a fresh process (the policy is read when OpenMP starts), one head with the fused
kernel and 64 heads with the wide kernel, on 1 and 2 threads, 5 epochs of 33,000 x 2048 float16
synthetic PU features; best of 2 after a compile run. The interesting machine is a busy one: the
load average is recorded with the results.

    python benchmarks/bench_wait_policy.py --out benchmarks/results/numba-wait-policy.json
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

CASE = r"""
import json, sys, time
import numpy as np
from impulses.pu.heads import HeadSpec, train_heads
kernel, n_heads, threads, epochs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = np.random.default_rng(0)
X = rng.standard_normal((33000, 2048), dtype=np.float32).astype(np.float16)
s = (rng.random(33000) < 0.05).astype(np.int8)
heads = [HeadSpec("imbnnpu", prior=0.01 + 0.01 * (k % 16), seed=k // 16) for k in range(n_heads)]
train_heads(X[:2000], s[:2000], heads, epochs=1, kernel=kernel, threads=threads)  # compile / load
best = None
for _ in range(2):
    t = time.perf_counter()
    train_heads(X, s, heads, epochs=epochs, kernel=kernel, threads=threads)
    best = min(best or 1e9, time.perf_counter() - t)
print(json.dumps({"seconds": best}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/results/numba-wait-policy.json")
    args = parser.parse_args()
    rows = []
    for kernel, n_heads in (("fused", 1), ("wide", 64)):
        for threads in (1, 2):
            for policy in ("ACTIVE", "PASSIVE"):
                env = {**os.environ, "OMP_WAIT_POLICY": policy}
                load = os.getloadavg()[0]
                cmd = [sys.executable, "-c", CASE, kernel, str(n_heads), str(threads), str(args.epochs)]
                done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
                seconds = json.loads(done.stdout.strip().splitlines()[-1])["seconds"]
                row = {"kernel": kernel, "heads": n_heads, "threads": threads, "policy": policy,
                       "seconds": round(seconds, 3), "load_before": round(load, 2)}  # fmt: skip
                print(row, flush=True)
                rows.append(row)
    result = {
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "epochs": args.epochs,
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
