"""How the numba kernels' threads wait at barriers: spinning, sleeping, or the choice impulses makes.

Each case runs in a fresh process (the policy is read when OpenMP starts), one head with the fused
kernel and 64 heads with the wide kernel, on 1 and 2 threads, 5 epochs of 33,000 x 2048 float16
synthetic PU features; best of 2 after a compile run. Policies: ``ACTIVE`` (spin without end),
``PASSIVE`` (sleep at once), ``spin`` (OpenMP's default: spin ~300,000 times, then sleep) and
``auto`` (neither variable set: :mod:`impulses.pu.kernels` picks spin on an idle machine, PASSIVE
when other work runs). ``--busy N`` runs N busy-looping processes beside every case (a loaded
machine); the load average is recorded with the results.

    python benchmarks/bench_wait_policy.py --out benchmarks/results/numba-wait-policy-idle.json
    python benchmarks/bench_wait_policy.py --busy 2 --out benchmarks/results/numba-wait-policy-busy.json
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
import os
import impulses.pu.kernels as kernels
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
print(json.dumps({"seconds": best, "policy_set": os.environ.get("OMP_WAIT_POLICY"), "chosen": kernels.WAIT_POLICY}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--busy", type=int, default=0, help="busy-looping processes run beside each case")
    parser.add_argument("--out", default="benchmarks/results/numba-wait-policy.json")
    args = parser.parse_args()
    rows = []
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    policies = {
        "ACTIVE": {"OMP_WAIT_POLICY": "ACTIVE"},
        "PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},
        "spin": {"GOMP_SPINCOUNT": "300000"},
        "auto": {},
    }
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    try:
        for kernel, n_heads in (("fused", 1), ("wide", 64)):
            for threads in (1, 2):
                for policy, extra in policies.items():
                    load = os.getloadavg()[0]
                    cmd = [sys.executable, "-c", CASE, kernel, str(n_heads), str(threads), str(args.epochs)]
                    done = subprocess.run(
                        cmd, env={**base, **extra}, capture_output=True, text=True, check=True
                    )
                    out = json.loads(done.stdout.strip().splitlines()[-1])
                    row = {"kernel": kernel, "heads": n_heads, "threads": threads, "policy": policy,
                           "chosen": out["chosen"], "seconds": round(out["seconds"], 3),
                           "load_before": round(load, 2)}  # fmt: skip
                    print(row, flush=True)
                    rows.append(row)
    finally:
        for process in busy:
            process.kill()
            process.wait()
    result = {
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "epochs": args.epochs,
        "busy_processes": args.busy,
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
