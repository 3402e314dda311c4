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

``--suite pipeline --imagenette DIR``: the whole training step with its data, images/s and images
per CPU-second (this process and its DataLoader workers), for (1) today's per-image pipeline
(JPEG decode + torchvision PIL views per image in a DataLoader worker), (2) decode once + batched
views (:mod:`impulses.data.decoded`, :class:`impulses.encoders.augment.BatchViews`), (3) the model
alone on random tensors already in memory (the ceiling), and the augmentation alone with
``kornia.augmentation`` against ours. The images are Imagenette photos downscaled to 32 and 64 px
colour JPEGs (built in a temporary folder). Variants alternate in blocks; medians are reported.
The machine may be shared with other jobs: compare the ratios measured in the same run.

    python benchmarks/bench_pretrain.py --suite pipeline --imagenette IMAGENETTE_DIR
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


# -- the pipeline suite ------------------------------------------------------------------------------
def build_jpegs(imagenette: Path, folder: Path, side: int, n: int) -> Path:
    """``n`` Imagenette train photos (every class, in order) as ``side`` px colour JPEGs under ``folder``."""
    from PIL import Image

    from impulses.data.sources import ImageFolderSource

    photos = ImageFolderSource(imagenette / "train")
    step = max(1, len(photos) // n)
    out = folder / f"imagenette-{side}px"
    for k, index in enumerate(range(0, step * n, step)):
        image, rel, _ = photos[index]
        target = out / Path(rel).parent / f"{k:05d}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        short = min(image.size)
        box = ((image.width - short) // 2, (image.height - short) // 2)
        image.crop((*box, box[0] + short, box[1] + short)).resize((side, side), Image.BILINEAR).save(
            target, quality=90
        )
    return out


class _PerImageViews(torch.utils.data.Dataset):
    """Today's per-image pipeline: decode the JPEG, two torchvision PIL views seeded per image."""

    def __init__(self, source, views) -> None:
        self.source, self.views = source, views

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int):
        from impulses.encoders.pretrain import derived_seed

        return self.views(self.source[i][0], seed=derived_seed(0, 0, i))


def _cpu_seconds() -> float:
    import resource

    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def pipeline_case(
    label: str, folder: Path, *, encoder: str, cifar_stem: bool, batch: int, steps: int, blocks: int
) -> dict:
    from impulses.data.decoded import decode_source
    from impulses.data.sources import ImageFolderSource
    from impulses.encoders.augment import PRESETS, BatchViews, SimCLRViews

    source = ImageFolderSource(folder)
    side = source[0][0].size[0]
    preset = PRESETS["cifar"]
    cpu = torch.device("cpu")
    base = build(encoder, 3, cifar_stem, cpu).to(memory_format=torch.channels_last)

    def make():
        model = copy.deepcopy(base)
        return model, torch.optim.Adam(model.parameters(), lr=3e-4)

    per_model, per_opt = make()
    new_model, new_opt = make()
    ceil_model, ceil_opt = make()
    loader = torch.utils.data.DataLoader(
        _PerImageViews(source, SimCLRViews(preset, side)), batch_size=batch, shuffle=True, drop_last=True,
        num_workers=1, persistent_workers=False,
    )  # fmt: skip
    decode_start = time.perf_counter()
    decoded = decode_source(source, image_size=side, channels=3)
    decode_seconds = time.perf_counter() - decode_start
    views = BatchViews(preset, side)
    rng = np.random.default_rng(0)
    x_ceiling = torch.randn(2 * batch, 3, side, side)

    def per_image_block() -> None:
        it = iter(loader)
        for _ in range(steps):
            x1, x2 = next(it)
            contrastive_step(per_model, x1, x2, per_opt, loss_fn, channels_last=True)
        del it  # workers exit: their CPU time is counted

    def batched_block() -> None:
        for b in range(steps):
            images, _ = decoded.batch(np.sort(rng.choice(len(decoded), batch, replace=False)))
            x1, x2 = views(images, torch.Generator().manual_seed(b))
            contrastive_step(new_model, x1, x2, new_opt, loss_fn, channels_last=True)

    def ceiling_block() -> None:
        for _ in range(steps):
            x1, x2 = x_ceiling.chunk(2)
            contrastive_step(ceil_model, x1, x2, ceil_opt, loss_fn, channels_last=True)

    blocks_by_name = {
        "per_image": per_image_block,
        "decoded_batched": batched_block,
        "model_only": ceiling_block,
    }
    rates: dict[str, list[float]] = {name: [] for name in blocks_by_name}
    per_cpu: dict[str, list[float]] = {name: [] for name in blocks_by_name}
    for block in blocks_by_name.values():  # warm-up
        block()
    for _ in range(blocks):
        for name, block in blocks_by_name.items():
            wall, cpu_time = time.perf_counter(), _cpu_seconds()
            block()
            wall, cpu_time = time.perf_counter() - wall, _cpu_seconds() - cpu_time
            rates[name].append(steps * batch / wall)
            per_cpu[name].append(steps * batch / max(cpu_time, 1e-9))
    result = {
        name: {
            "images_per_s": statistics.median(rates[name]),
            "images_per_cpu_s": statistics.median(per_cpu[name]),
            "images_per_s_all": rates[name],
        }
        for name in blocks_by_name
    }
    ceiling = result["model_only"]["images_per_s"]
    for row in result.values():
        row["share_of_model_only"] = row["images_per_s"] / ceiling
    print(f"\n{label} ({encoder}, batch {batch}, {side} px, {len(source)} JPEGs)")
    for name, row in result.items():
        print(
            f"  {name:16s} {row['images_per_s']:8.1f} img/s  {row['images_per_cpu_s']:8.1f} img/CPU-s  "
            f"{row['share_of_model_only']:.0%} of model-only"
        )
    return {
        "case": label,
        "encoder": encoder + (" (CIFAR stem)" if cifar_stem else ""),
        "side": side,
        "batch": batch,
        "n_images": len(source),
        "decode_once_seconds": decode_seconds,
        "variants": result,
    }


def augment_case(batch: int, side: int, repeats: int) -> dict:
    """The cifar preset's two views of a batch: kornia.augmentation against our BatchViews (CPU)."""
    import kornia.augmentation as K

    from impulses.encoders.augment import PRESETS, BatchViews

    preset = PRESETS["cifar"]
    s = preset.jitter_strength
    kornia_views = torch.nn.Sequential(
        K.RandomResizedCrop((side, side), scale=preset.crop_scale),
        K.RandomHorizontalFlip(),
        K.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s, p=preset.jitter_p),
        K.RandomGrayscale(p=preset.grayscale_p),
        K.Normalize(torch.tensor(preset.mean), torch.tensor(preset.std)),
    )
    ours = BatchViews(preset, side)
    images = torch.randint(0, 256, (batch, side, side, 3), dtype=torch.uint8)

    def run_kornia() -> None:
        x = images.permute(0, 3, 1, 2).float().div(255)
        kornia_views(torch.cat([x, x]))

    def run_ours() -> None:
        ours(images, torch.Generator().manual_seed(0))

    times: dict[str, list[float]] = {"kornia": [], "ours": []}
    run_kornia(), run_ours()
    for _ in range(repeats):
        for name, fn in (("kornia", run_kornia), ("ours", run_ours)):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    result = {name: {"ms_per_batch": 1000 * statistics.median(t)} for name, t in times.items()}
    print(f"\naugmentation only, {batch} images x 2 views, {side} px: " + ", ".join(
        f"{name} {row['ms_per_batch']:.1f} ms" for name, row in result.items()))  # fmt: skip
    return {"case": f"augment-{side}px", "batch": batch, "variants": result}


def main_pipeline(args: argparse.Namespace, argv: list[str] | None) -> int:
    import tempfile

    if args.imagenette is None:
        raise SystemExit("--suite pipeline needs --imagenette DIR (the Imagenette 2 folder with train/)")
    n = 512 if args.quick else args.images
    steps, blocks = (1, 2) if args.quick else (3, args.blocks)
    cases = []
    with tempfile.TemporaryDirectory() as tmp:
        folder32 = build_jpegs(args.imagenette, Path(tmp), 32, n)
        folder64 = build_jpegs(args.imagenette, Path(tmp), 64, n)
        cases.append(augment_case(args.batch, 32, 5))
        cases.append(
            pipeline_case(
                "cpu-32px-smallcnn-pooled",
                folder32,
                encoder="smallcnn-pooled",
                cifar_stem=False,
                batch=args.batch,
                steps=steps,
                blocks=blocks,
            )
        )
        cases.append(
            pipeline_case(
                "cpu-64px-smallcnn-pooled",
                folder64,
                encoder="smallcnn-pooled",
                cifar_stem=False,
                batch=args.batch,
                steps=steps,
                blocks=blocks,
            )
        )
        cases.append(
            pipeline_case(
                "cpu-32px-resnet18-cifar",
                folder32,
                encoder="resnet18",
                cifar_stem=True,
                batch=args.batch // 2,
                steps=1,
                blocks=blocks,
            )
        )
    share = cases[1]["variants"]["decoded_batched"]["share_of_model_only"]
    record = {
        "benchmark": "pretraining pipeline: per-image vs decode-once + batched views vs model only",
        "command": "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "platform": platform.platform(),
            "shared": "the CPU was shared with other jobs: compare ratios within this run",
            "load_average_at_end": os.getloadavg(),
        },
        "method": "alternating blocks of steps per variant, median images/s; CPU seconds include workers",
        "cases": cases,
        "targets": {"cpu_32px_smallcnn_pooled_decoded_batched_ge_90pct_of_model_only": share >= 0.9},
    }
    out = args.out if args.out != RESULTS else RESULTS.with_name("pretrain-pipeline.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"\ntargets: {record['targets']}\nwrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer steps (a smoke run; not for the record)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--suite", choices=("step", "pipeline"), default="step")
    parser.add_argument("--imagenette", type=Path, help="Imagenette 2 folder (pipeline suite)")
    parser.add_argument("--blocks", type=int, default=5, help="repeats per variant (pipeline suite)")
    parser.add_argument("--images", type=int, default=2048, help="photos per resolution (pipeline suite)")
    args = parser.parse_args(argv)
    if args.suite == "pipeline":
        return main_pipeline(args, argv)
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
