"""Steps/s of our pretraining step against a loop written like the published debiased-contrastive code.

Reference-style step (github.com/chingyaoc/DCL, main.py): two forward passes (one per view), the
negative mask rebuilt in a Python loop every step, ``exp`` of the raw similarity matrix,
``masked_select``, float32 throughout. Our step (:func:`impulses.encoders.pretrain.contrastive_step`):
both views in one forward pass, the log-space debiased loss, and on CUDA bf16 autocast +
channels_last. Same encoder, same initial weights, same batch, same run; blocks of steps of each
variant alternate so that drifting machine load hits all variants alike, and the median block rate
is reported. The batch is fixed random tensors, so the timing is the optimisation step alone (no
data loading or augmentation).

CPU: the small encoder (``smallcnn``) on 8x8 grayscale (the digits demo) and 32x32 RGB inputs;
``ours`` is what ``impulses pretrain`` runs on a CPU (channels_last), ``ours_contiguous`` and
``ours_loss_two_forwards_contiguous`` take the layout and then the single forward pass away, to
show where the difference comes from. GPU (only when CUDA is present): ResNet-50 with the CIFAR
stem at 32 px, our step with and without bf16 + channels_last, against the float32 reference-style
loop. Targets: CPU ``ours`` >= 1x, GPU ``ours_bf16_channels_last`` >= 2x.

    python benchmarks/bench_pretrain.py [--quick]
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from impulses.encoders.losses import debiased_contrastive_loss
from impulses.encoders.pretrain import ContrastiveModel, contrastive_step
from impulses.encoders.projector import Projector
from impulses.encoders.registry import create_encoder

RESULTS = Path(__file__).parent / "results" / "pretrain.json"
TEMPERATURE, TAU_PLUS = 0.5, 0.1


def get_negative_mask(batch_size: int) -> torch.Tensor:
    """As in the reference code: rebuilt every step with a Python loop."""
    negative_mask = torch.ones((batch_size, 2 * batch_size), dtype=bool)
    for i in range(batch_size):
        negative_mask[i, i] = 0
        negative_mask[i, i + batch_size] = 0
    return torch.cat((negative_mask, negative_mask), 0)


def reference_criterion(out_1: torch.Tensor, out_2: torch.Tensor, batch_size: int) -> torch.Tensor:
    """The published criterion (debiased branch), on L2-normalised projections."""
    out = torch.cat([out_1, out_2], dim=0)
    neg = torch.exp(torch.mm(out, out.t().contiguous()) / TEMPERATURE)
    mask = get_negative_mask(batch_size).to(out.device)
    neg = neg.masked_select(mask).view(2 * batch_size, -1)
    pos = torch.exp(torch.sum(out_1 * out_2, dim=-1) / TEMPERATURE)
    pos = torch.cat([pos, pos], dim=0)
    n = batch_size * 2 - 2
    ng = (-TAU_PLUS * n * pos + neg.sum(dim=-1)) / (1 - TAU_PLUS)
    ng = torch.clamp(ng, min=n * np.e ** (-1 / TEMPERATURE))
    return (-torch.log(pos / (pos + ng))).mean()


def reference_step(model: ContrastiveModel, x1: torch.Tensor, x2: torch.Tensor, optimizer) -> torch.Tensor:
    """One step as the reference train loop does it: a forward pass per view, normalise, criterion, Adam."""
    out_1 = F.normalize(model(x1), dim=-1)
    out_2 = F.normalize(model(x2), dim=-1)
    loss = reference_criterion(out_1, out_2, x1.shape[0])
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.detach()


def loss_fn(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    return debiased_contrastive_loss(z1, z2, TEMPERATURE, TAU_PLUS)


def two_forward_step(model: ContrastiveModel, x1: torch.Tensor, x2: torch.Tensor, optimizer) -> torch.Tensor:
    """Our loss, but the reference's two forward passes: separates the loss's share of the gain."""
    loss = loss_fn(model(x1), model(x2))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def build(name: str, in_chans: int, cifar_stem: bool, device: torch.device) -> ContrastiveModel:
    torch.manual_seed(0)
    encoder = create_encoder(name, in_chans=in_chans, cifar_stem=cifar_stem)
    return ContrastiveModel(encoder, Projector(encoder.num_features, 128)).to(device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(
    variants: dict[str, Callable[[], torch.Tensor]],
    device: torch.device,
    *,
    steps: int,
    blocks: int,
    warmup: int,
) -> dict[str, dict[str, float]]:
    """Median steps/s over alternating blocks of ``steps`` steps per variant."""
    for step in variants.values():
        for _ in range(warmup):
            step()
    sync(device)
    rates: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(blocks):
        for name, step in variants.items():
            sync(device)
            start = time.perf_counter()
            for _ in range(steps):
                loss = step()
            float(loss)  # one host sync per block
            sync(device)
            rates[name].append(steps / (time.perf_counter() - start))
    return {
        name: {"steps_per_s": statistics.median(r), "min": min(r), "max": max(r), "blocks": len(r)}
        for name, r in rates.items()
    }


def case(
    label: str,
    *,
    encoder: str,
    in_chans: int,
    side: int,
    batch: int,
    cifar_stem: bool,
    device: torch.device,
    steps: int,
    blocks: int,
    warmup: int,
    gpu: bool = False,
) -> dict:
    g = torch.Generator().manual_seed(1)
    x1 = torch.randn(batch, in_chans, side, side, generator=g).to(device)
    x2 = torch.randn(batch, in_chans, side, side, generator=g).to(device)
    base = build(encoder, in_chans, cifar_stem, device)

    def make(channels_last: bool = False):
        model = copy.deepcopy(base)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model, torch.optim.Adam(model.parameters(), lr=3e-4)

    # the two criteria agree on the same projections (sanity: we time equivalent work)
    with torch.no_grad():
        z1, z2 = torch.randn(batch, 128, generator=g), torch.randn(batch, 128, generator=g)
        ref = reference_criterion(F.normalize(z1, dim=-1), F.normalize(z2, dim=-1), batch).item()
        ours = loss_fn(z1, z2).item()
        assert abs(ref - ours) < 1e-4 * max(1.0, abs(ref)), (ref, ours)

    m_ref, o_ref = make()
    variants: dict[str, Callable[[], torch.Tensor]] = {
        "reference_fp32": lambda: reference_step(m_ref, x1, x2, o_ref)
    }
    if gpu:
        m_fp32, o_fp32 = make()
        m_amp, o_amp = make(channels_last=True)
        variants["ours_fp32"] = lambda: contrastive_step(m_fp32, x1, x2, o_fp32, loss_fn)
        variants["ours_bf16_channels_last"] = lambda: contrastive_step(
            m_amp, x1, x2, o_amp, loss_fn, amp=True, channels_last=True
        )
    else:
        m_ours, o_ours = make(channels_last=True)
        m_flat, o_flat = make()
        m_two, o_two = make()
        # "ours": what `impulses pretrain` runs on a CPU (one forward, log-space loss, channels_last)
        variants["ours"] = lambda: contrastive_step(m_ours, x1, x2, o_ours, loss_fn, channels_last=True)
        variants["ours_contiguous"] = lambda: contrastive_step(m_flat, x1, x2, o_flat, loss_fn)
        variants["ours_loss_two_forwards_contiguous"] = lambda: two_forward_step(m_two, x1, x2, o_two)
    rates = measure(variants, device, steps=steps, blocks=blocks, warmup=warmup)
    ref_rate = rates["reference_fp32"]["steps_per_s"]
    for row in rates.values():
        row["ratio_vs_reference"] = row["steps_per_s"] / ref_rate
    result = {
        "case": label,
        "device": str(device),
        "encoder": encoder + (" (CIFAR stem)" if cifar_stem else ""),
        "input": [in_chans, side, side],
        "batch": batch,
        "variants": rates,
    }
    print(f"\n{label}  ({encoder}, batch {batch}, {in_chans}x{side}x{side}, {device})")
    for name, row in rates.items():
        print(
            f"  {name:30s} {row['steps_per_s']:8.2f} steps/s   x{row['ratio_vs_reference']:.2f} vs reference"
        )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer steps (a smoke run; not for the record)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    steps, blocks = (3, 2) if args.quick else (10, 5)
    cpu = torch.device("cpu")
    cases = [
        case("cpu-digits", encoder="smallcnn", in_chans=1, side=8, batch=args.batch, cifar_stem=False, device=cpu,
             steps=steps, blocks=blocks, warmup=3),
        case("cpu-32px-rgb", encoder="smallcnn", in_chans=3, side=32, batch=args.batch, cifar_stem=False,
             device=cpu, steps=max(2, steps // 2), blocks=blocks, warmup=2),
    ]  # fmt: skip
    gpu_name = None
    if torch.cuda.is_available():
        gpu = torch.device("cuda")
        gpu_name = torch.cuda.get_device_name(gpu)
        cases.append(
            case("gpu-resnet50-cifar", encoder="resnet50", in_chans=3, side=32, batch=args.batch, cifar_stem=True,
                 device=gpu, steps=steps * 2, blocks=blocks, warmup=5, gpu=True)
        )  # fmt: skip
    else:
        print("\nno CUDA device: the GPU section (ResNet-50, bf16 + channels_last) was not run")
    targets = {
        "cpu_ours_vs_reference_ge_1": all(
            c["variants"]["ours"]["ratio_vs_reference"] >= 1.0 for c in cases if c["device"] == "cpu"
        ),
        "gpu_ours_bf16_vs_reference_fp32_ge_2": (
            None
            if gpu_name is None
            else cases[-1]["variants"]["ours_bf16_channels_last"]["ratio_vs_reference"] >= 2
        ),
    }
    record = {
        "benchmark": "pretrain step: ours vs reference-style DCL loop",
        "command": "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cuda_device": gpu_name,
            "load_average_at_end": os.getloadavg(),
        },
        "method": "fixed random batch, same initial weights; alternating blocks of steps, median block steps/s",
        "cases": cases,
        "targets": targets,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"\ntargets: {targets}\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
