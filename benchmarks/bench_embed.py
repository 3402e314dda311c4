"""Benchmark `impulses embed`'s extraction against a naive loop: images/s and peak memory at two sizes.

Both sides run the same encoder (same weights) on the same images with the same test transform,
batch size and DataLoader workers, in the same run, each measurement in a fresh subprocess:

- ``ours``: :func:`impulses.embed.extract.embed`, what ``impulses embed`` runs (inference_mode,
  channels_last, BatchNorm folded on CPU, bf16 autocast on CUDA, rows written chunk by chunk to a
  float16 HDF5 store).
- ``naive``: a torchvision-style loop: a Dataset returning (transform(image), target), a default
  DataLoader, the model in eval mode but float32, its parameters requiring grad as a freshly created
  model's do, no ``inference_mode``/``no_grad``, each batch's rows appended to a list, ``np.save`` at the end.

Images/s is wall time around the whole call (model preparation and the final write/save included),
median over interleaved repeats (also reported: the ratio of the best runs, and images per CPU-second,
which other jobs on a shared machine disturb less). Peak memory is the growth of the process's resident set over the
loop (RSS sampled every 2 ms from /proc, minus the RSS just before), and, separately, the peak of
Python/NumPy heap allocations traced by ``tracemalloc`` (torch tensors are not traced), at two
dataset sizes: flat in N means the same peak at both.

CPU: ResNet-18 with the CIFAR stem on a Fashion-MNIST subset (32 px, grayscale replicated to RGB).
GPU (only when CUDA exists): ResNet-50 at 224 px, plus the fraction of the GPU's measured dense bf16
matmul throughput that the encoder's forward FLOPs (counted by torch's FlopCounterMode) reach.

    flock /tmp/impulses-heavy.lock .venv/bin/python benchmarks/bench_embed.py
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA_ROOT = Path("/work/shared/data/fashion-mnist")


# -- one measurement, in its own process ------------------------------------------------------------
def _cpu_seconds() -> float:
    """User + system CPU time of this process (all its threads) and of its finished children."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Samples the resident set size in a thread; ``peak`` is the largest value seen."""

    def __init__(self, interval: float = 0.002) -> None:
        self.interval, self.peak, self._stop = interval, _rss_bytes(), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes())
            time.sleep(self.interval)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())


def _naive(
    source: Any, model: Any, config: dict, out: Path, batch_size: int, workers: int, device: Any
) -> int:
    """The baseline loop described in the module docstring; returns the number of rows saved."""
    import numpy as np
    import torch
    from torch.utils.data import DataLoader, Dataset

    from impulses.encoders.augment import test_transform

    class Images(Dataset):
        def __init__(self) -> None:
            self.transform = test_transform(config)

        def __len__(self) -> int:
            return len(source)

        def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
            image, _, target = source[i]
            return self.transform(image), target

    model = model.to(device).eval()
    for parameter in model.parameters():
        parameter.requires_grad_(True)  # as timm.create_model returns it
    rows = []
    for images, _ in DataLoader(Images(), batch_size=batch_size, num_workers=workers):
        rows.append(model(images.to(device)).detach().cpu().numpy())
    array = np.concatenate(rows)
    np.save(out, array)
    return int(array.shape[0])


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Run one method once and return its timing and memory figures."""
    import torch

    from impulses.data.sources import open_source
    from impulses.embed.extract import ConfigTransform, embed
    from impulses.embed.store import StoreSpec
    from impulses.encoders import load_encoder

    device = torch.device(args.device)
    loaded = load_encoder(args.encoder, cifar_stem=args.cifar_stem, random_init=True)  # timing only
    config = dict(loaded.transform)
    if args.image_size:
        config["image_size"] = args.image_size
    source = open_source(f"{args.data}[0:{args.n}]", data_root=args.data_root)
    _ = source[0]  # touch the data once, so both sides start from loaded arrays
    if args.trace_memory:
        import tracemalloc

        tracemalloc.start()
    with tempfile.TemporaryDirectory() as tmp:
        before = _rss_bytes()
        cpu_before = _cpu_seconds()
        with PeakRSS() as rss:
            start = time.perf_counter()
            if args.method == "ours":
                spec = StoreSpec(loaded.name, source.spec, loaded.sha256, config)
                result = embed(
                    source,
                    loaded.model,
                    ConfigTransform(config),
                    Path(tmp) / "store.h5",
                    spec=spec,
                    batch_size=args.batch_size,
                    workers=args.workers,
                    device=device,
                    progress=False,
                )
                rows = result.rows
            else:
                rows = _naive(
                    source,
                    loaded.model,
                    config,
                    Path(tmp) / "rows.npy",
                    args.batch_size,
                    args.workers,
                    device,
                )
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - start
        cpu = _cpu_seconds() - cpu_before
    traced_peak = None
    if args.trace_memory:
        traced_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return {
        "method": args.method,
        "n": rows,
        "seconds": seconds,
        "images_per_s": rows / seconds,
        "cpu_seconds": cpu,
        "images_per_cpu_s": rows / cpu,
        "rss_growth_mb": (rss.peak - before) / 2**20,
        "traced_peak_mb": None if traced_peak is None else traced_peak / 2**20,
        "cuda_peak_mb": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None,
        "threads": torch.get_num_threads(),
    }


# -- the orchestration ----------------------------------------------------------------------------------
def _run_one(base: list[str], method: str, n: int, *, trace: bool = False) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--measure", "--method", method, "--n", str(n), *base]
    if trace:
        cmd.append("--trace-memory")
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False)
    if out.returncode != 0:
        raise SystemExit(f"measurement failed: {' '.join(cmd)}\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(
        f"  {method:5s} n={n:6d}{' (traced)' if trace else '':9s} {result['images_per_s']:8.1f} img/s  "
        f"RSS +{result['rss_growth_mb']:7.1f} MB"
        + (f"  traced peak {result['traced_peak_mb']:7.2f} MB" if trace else ""),
        flush=True,
    )
    return result


def section(name: str, base: list[str], n_speed: int, sizes: list[int], repeats: int) -> dict[str, Any]:
    """Speed (interleaved repeats at n_speed) and memory (traced runs at each size) of ours vs naive."""
    print(f"{name}: {' '.join(base)}", flush=True)
    speed: dict[str, list[dict[str, Any]]] = {"ours": [], "naive": []}
    for _ in range(repeats):
        for method in ("ours", "naive"):
            speed[method].append(_run_one(base, method, n_speed))
    memory: dict[str, dict[int, dict[str, Any]]] = {"ours": {}, "naive": {}}
    for n in sizes:
        for method in ("ours", "naive"):
            memory[method][n] = _run_one(base, method, n, trace=True)
    ips = {m: statistics.median(r["images_per_s"] for r in runs) for m, runs in speed.items()}
    best = {m: max(r["images_per_s"] for r in runs) for m, runs in speed.items()}
    per_cpu = {m: statistics.median(r["images_per_cpu_s"] for r in runs) for m, runs in speed.items()}
    pairs = [
        o["images_per_s"] / n["images_per_s"] for o, n in zip(speed["ours"], speed["naive"], strict=True)
    ]
    lo, hi = sizes[0], sizes[-1]
    summary = {
        "images": n_speed,
        "images_per_s": ips,
        "images_per_s_runs": {m: [round(r["images_per_s"], 2) for r in runs] for m, runs in speed.items()},
        "speedup": ips["ours"] / ips["naive"],
        "speedup_of_best_runs": best["ours"] / best["naive"],
        "speedup_per_pair": [round(p, 3) for p in pairs],
        "images_per_cpu_s": per_cpu,
        "speedup_per_cpu_s": per_cpu["ours"] / per_cpu["naive"],
        "rss_growth_mb": {m: {n: round(memory[m][n]["rss_growth_mb"], 1) for n in sizes} for m in memory},
        "traced_peak_mb": {m: {n: round(memory[m][n]["traced_peak_mb"], 3) for n in sizes} for m in memory},
        "traced_peak_growth_mb": {
            m: round(memory[m][hi]["traced_peak_mb"] - memory[m][lo]["traced_peak_mb"], 3) for m in memory
        },
        "rss_growth_delta_mb": {
            m: round(memory[m][hi]["rss_growth_mb"] - memory[m][lo]["rss_growth_mb"], 1) for m in memory
        },
        "memory_sizes": sizes,
        "runs": {"speed": speed, "memory": {m: list(v.values()) for m, v in memory.items()}},
    }
    print(
        f"  => median ours {ips['ours']:.1f} img/s, naive {ips['naive']:.1f} img/s: {summary['speedup']:.2f}x "
        f"(best runs {summary['speedup_of_best_runs']:.2f}x, per CPU-second {summary['speedup_per_cpu_s']:.2f}x, "
        f"pairs {', '.join(f'{p:.2f}' for p in pairs)}); "
        f"traced peak growth {lo}->{hi} images: ours {summary['traced_peak_growth_mb']['ours']:+.3f} MB, "
        f"naive {summary['traced_peak_growth_mb']['naive']:+.3f} MB; RSS growth delta: ours "
        f"{summary['rss_growth_delta_mb']['ours']:+.1f} MB, naive {summary['rss_growth_delta_mb']['naive']:+.1f} MB",
        flush=True,
    )
    return summary


def bf16_matmul_tflops(size: int = 8192, iters: int = 50) -> float:
    """Measured dense bf16 matmul throughput of the current GPU (TFLOP/s)."""
    import torch

    a = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    for _ in range(5):
        a @ b
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iters):
        a @ b
    torch.cuda.synchronize()
    return 2 * size**3 * iters / (time.perf_counter() - start) / 1e12


def forward_flops(encoder: str, image_size: int, cifar_stem: bool) -> float:
    """FLOPs of one image's forward pass, counted by torch (2 per multiply-add)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from impulses.encoders import load_encoder

    model = load_encoder(encoder, cifar_stem=cifar_stem, random_init=True).model
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(torch.zeros(1, 3, image_size, image_size))
    return float(counter.get_total_flops())


def machine() -> dict[str, Any]:
    import torch

    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    with contextlib.suppress(OSError):
        info["load_average_at_start"] = os.getloadavg()
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="fashion-mnist:train")
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT)
    parser.add_argument("--n", type=int, default=2000, help="images in the CPU speed runs")
    parser.add_argument(
        "--sizes", type=int, nargs=2, default=[500, 4000], help="dataset sizes of the memory runs"
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--gpu-n", type=int, default=20000, help="images in the GPU speed runs")
    parser.add_argument("--gpu-sizes", type=int, nargs=2, default=[5000, 20000])
    parser.add_argument("--gpu-workers", type=int, default=min(16, os.cpu_count() or 1))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "embed.json")
    # one measurement (internal)
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--method", choices=("ours", "naive"), help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    parser.add_argument("--encoder", default="resnet18", help=argparse.SUPPRESS)
    parser.add_argument("--cifar-stem", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--image-size", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--trace-memory", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args)))
        return

    import torch

    common = ["--data", args.data, "--data-root", str(args.data_root), "--batch-size", str(args.batch_size)]
    report: dict[str, Any] = {
        "benchmark": "embed",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "targets": {"cpu_speedup_min": 1.5, "memory": "peak independent of N"},
    }
    cpu_base = [
        *common,
        "--workers",
        str(args.workers),
        "--device",
        "cpu",
        "--encoder",
        "resnet18",
        "--cifar-stem",
    ]
    cpu = section("CPU, ResNet-18 + CIFAR stem, 32 px", cpu_base, args.n, args.sizes, args.repeats)
    cpu.update(encoder="resnet18 (CIFAR stem)", image_size=32, device="cpu", workers=args.workers)
    cpu["meets_speed_target"] = cpu["speedup"] >= 1.5
    cpu["note"] = (
        "2 cores shared with other jobs: wall-clock runs vary; speedup is the ratio of medians, also given "
        "for the best runs and per CPU-second. RSS growth varies by about +-20 MB between runs of one size "
        "(allocator caching); the traced Python/NumPy heap is exact."
    )
    report["cpu"] = cpu
    if torch.cuda.is_available():
        gpu_base = [*common, "--workers", str(args.gpu_workers), "--device", "cuda", "--encoder", "resnet50"]
        gpu_base += ["--image-size", "224"]
        gpu = section("GPU, ResNet-50, 224 px", gpu_base, args.gpu_n, args.gpu_sizes, args.repeats)
        peak = bf16_matmul_tflops()
        flops = forward_flops("resnet50", 224, cifar_stem=False)
        achieved = gpu["images_per_s"]["ours"] * flops / 1e12
        gpu.update(
            encoder="resnet50",
            image_size=224,
            device=torch.cuda.get_device_name(0),
            workers=args.gpu_workers,
            bf16_matmul_tflops=peak,
            forward_gflops_per_image=flops / 1e9,
            achieved_tflops=achieved,
            fraction_of_bf16_matmul=achieved / peak,
        )
        print(
            f"  GPU: {achieved:.1f} TFLOP/s of a measured {peak:.1f} bf16 matmul TFLOP/s = {achieved / peak:.1%}"
        )
        report["gpu"] = gpu
    else:
        report["gpu"] = "not run: no CUDA device on this machine"
    with contextlib.suppress(OSError):
        report["machine"]["load_average_at_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
