"""Which encoder and augmentation strength give the best 32 px colour representation per CPU-minute.

Data: Imagenette's train photos (9,469, 10 classes) decoded once to 32 px; evaluation on its val
photos (3,925). Every setting pretrains with the debiased contrastive loss (batch 256, lr 1e-3,
seed 0, the Imagenette experiment's settings) for the same budget of training-step seconds
(``--budget``; the sum of ``history.csv``'s per-epoch ``seconds``, so the kNN monitor, which is off
here, and checkpoint writes do not count), then its frozen encoder embeds train and val and two
probes read the features:

- kNN top-1 on val: cosine similarity to the train features, k = 200, weights exp(s / 0.1)
  (:func:`impulses.encoders.knn.knn_top1`, the pretraining monitor's rule);
- linear-probe accuracy on val: multinomial logistic regression on the standardised train features
  (scikit-learn, C = 1).

Settings: ``smallcnn-pooled`` with the ``cifar`` preset (the Imagenette experiment's), with milder
crops (scale 0.2-1 instead of 0.08-1) and with the ``imagenet`` preset's strength at 32 px (jitter
1.0, blur p 0.5, solarisation p 0.2); ``smallcnn`` (no pool after its first layer: about 4x the
arithmetic per image); ``resnet18`` with the CIFAR stem. Before them, the parity check of the
batched views: ``smallcnn-pooled``/``cifar`` for ``--parity-epochs`` epochs with today's batched
on-device views and with torchvision's per-image pipeline (PIL transforms per image on the same
decoded images), same seed; their kNN top-1 should agree within about a point.
(The per-image run swaps pretraining's views for torchvision's pipeline; everything else is the
same loop.) The batched parity run then continues to the budget as the baseline setting.

    python benchmarks/encoder_study.py --data-root ../shared/data/imagenette \
        --out benchmarks/results/encoder-study.json
    python benchmarks/encoder_study.py --data-root ../shared/data/imagenette --parity-only \
        --parity-seeds 1 --out benchmarks/results/encoder-study-parity-seed1.json   # another seed
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

import impulses.encoders.pretrain as pretrain_module
from impulses.data.decoded import DecodedSource, decode_source
from impulses.data.sources import open_source
from impulses.encoders.augment import PRESETS, AugmentationPreset, SimCLRViews, normalize_images
from impulses.encoders.knn import knn_top1
from impulses.encoders.load import load_encoder
from impulses.encoders.pretrain import PretrainConfig, pretrain

ROOT = Path(__file__).resolve().parents[1]
SIDE = 32

PRESETS["cifar-crop20"] = replace(PRESETS["cifar"], name="cifar-crop20", crop_scale=(0.2, 1.0))
PRESETS["cifar-strong"] = replace(
    PRESETS["cifar"], name="cifar-strong", jitter_strength=1.0, blur_p=0.5, solarize_p=0.2
)

SETTINGS = [  # name, encoder, cifar_stem, preset
    ("smallcnn-pooled/cifar", "smallcnn-pooled", False, "cifar"),
    ("smallcnn-pooled/cifar-crop20", "smallcnn-pooled", False, "cifar-crop20"),
    ("smallcnn-pooled/cifar-strong", "smallcnn-pooled", False, "cifar-strong"),
    ("smallcnn/cifar", "smallcnn", False, "cifar"),
    ("resnet18-cifar-stem/cifar", "resnet18", True, "cifar"),
]


class _Seeds:
    """One torchvision seed per view (what :class:`PerImageViews` draws instead of batch parameters)."""

    def __init__(self, values: torch.Tensor) -> None:
        self.values = values

    def __len__(self) -> int:
        return len(self.values)

    def take(self, rows: torch.Tensor | slice) -> _Seeds:
        return _Seeds(self.values[rows])


class PerImageViews:
    """BatchViews' interface over torchvision's per-image PIL pipeline (the pipeline before the batched views).

    Each view is one image through :class:`impulses.encoders.augment.SimCLRViews` under its own seed,
    drawn from the batch generator, so the parity run is reproducible too.
    """

    def __init__(self, preset: AugmentationPreset, image_size: int | None = None) -> None:
        self.views = SimCLRViews(preset, image_size)

    def draw(self, n: int, height: int, width: int, generator: torch.Generator) -> _Seeds:
        return _Seeds(torch.randint(0, 2**31 - 1, (n,), generator=generator))

    def apply(self, images: torch.Tensor, seeds: _Seeds) -> torch.Tensor:
        return torch.stack(
            [
                self.views(Image.fromarray(image.numpy()), seed=int(seed))[0]
                for image, seed in zip(images, seeds.values, strict=True)
            ]
        )


def decoded(spec: str, data_root: Path, work: Path) -> DecodedSource:
    """The source ``spec`` served from its 32 px decoded array (decoded once into ``work``)."""
    name, _, path = spec.partition(":")
    source = open_source(f"{name}:{data_root / path}", data_root=data_root)  # imagefolder:PATH under the root
    folder = work / f"decoded-{''.join(c if c.isalnum() else '_' for c in spec.split(':', 1)[-1])}-{SIDE}px"
    return DecodedSource(source, decode_source(source, image_size=SIDE, channels=3, path=folder))


def config_for(encoder: str, cifar_stem: bool, preset: str, epochs: int, **extra: object) -> PretrainConfig:
    """The study's pretraining settings (the Imagenette experiment's, without the kNN monitor)."""
    return PretrainConfig(
        data="imagefolder:train", encoder=encoder, cifar_stem=cifar_stem, preset=preset, image_size=SIDE,
        epochs=epochs, batch_size=256, lr=1e-3, knn_holdout=0.0, device="cpu", **{"seed": 0, **extra},
    )  # fmt: skip


def step_seconds(history: list[dict]) -> float:
    """Seconds of training steps in a run's history (the kNN monitor and checkpoint writes excluded)."""
    return sum(float(r["seconds"]) for r in history if r["epoch"] > 0)


def train_for(source: DecodedSource, config: PretrainConfig, out: Path, budget: float | None) -> list[dict]:
    """Pretrain ``config.epochs`` epochs, or (``budget``) epoch by epoch until the steps took ``budget`` s."""

    def run(epochs: int) -> list[dict]:
        resume = (out / "last.pt").exists()
        quiet = {"progress": False, "log": lambda _: None}
        return pretrain(source, replace(config, epochs=epochs), out, resume=resume, **quiet).history

    if budget is None:
        return run(config.epochs)
    history = run(max(1, config.epochs))
    while step_seconds(history) < budget:
        history = run(history[-1]["epoch"] + 1)
    return history


@torch.no_grad()
def features(checkpoint: Path, source: DecodedSource, batch: int = 512) -> np.ndarray:
    """The frozen encoder's features of every decoded image (test transform: normalise only)."""
    encoder = load_encoder(checkpoint)
    mean, std = encoder.transform["mean"], encoder.transform["std"]
    images = source.decoded.images
    out = []
    for start in range(0, len(images), batch):
        x = normalize_images(torch.from_numpy(np.array(images[start : start + batch])), mean, std)
        out.append(encoder.model(x.contiguous(memory_format=torch.channels_last)).float().numpy())
    return np.concatenate(out)


def probes(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray) -> dict:
    """kNN top-1 (k = 200, T = 0.1, cosine) and linear-probe accuracy on val."""
    normalise = torch.nn.functional.normalize
    knn = knn_top1(
        normalise(torch.from_numpy(val_x), dim=1), torch.from_numpy(val_y),
        normalise(torch.from_numpy(train_x), dim=1), torch.from_numpy(train_y), k=200, temperature=0.1,
    )  # fmt: skip
    scaler = StandardScaler().fit(train_x)
    probe = LogisticRegression(C=1.0, max_iter=2000).fit(scaler.transform(train_x), train_y)
    linear = float((probe.predict(scaler.transform(val_x)) == val_y).mean())
    return {"knn_top1": round(float(knn), 4), "linear_probe": round(linear, 4)}


def evaluate(name: str, out: Path, history: list[dict], train: DecodedSource, val: DecodedSource) -> dict:
    """One row of the study: training budget spent, throughput, and both probes on val."""
    t0 = time.perf_counter()
    train_x, val_x = features(out / "last.pt", train), features(out / "last.pt", val)
    row = {
        "setting": name,
        "epochs": history[-1]["epoch"],
        "train_seconds": round(step_seconds(history), 1),
        "images_per_s": round(float(np.median([r["images_per_s"] for r in history if r["epoch"] > 0])), 1),
        **probes(train_x, train.decoded.targets, val_x, val.decoded.targets),
        "embed_seconds": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(row), flush=True)
    return row


def main(argv: list[str] | None = None) -> None:
    """Run the parity check and the settings; write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=ROOT.parent / "shared" / "data" / "imagenette")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "encoder-study")
    parser.add_argument("--budget", type=float, default=180.0, help="training-step seconds per setting")
    parser.add_argument("--parity-epochs", type=int, default=5)
    parser.add_argument(
        "--parity-seeds", type=int, nargs="+", default=[0], help="pretraining seeds of the parity pair"
    )
    parser.add_argument("--parity-only", action="store_true", help="the parity check alone, no settings")
    parser.add_argument("--only", nargs="*", help="setting names to run (default all)")
    parser.add_argument(
        "--train-spec", default="imagefolder:train", help="smoke runs: e.g. imagefolder:train[::20]"
    )
    parser.add_argument("--val-spec", default="imagefolder:val")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "encoder-study.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(os.cpu_count() or 1)
    args.work.mkdir(parents=True, exist_ok=True)
    load_start = os.getloadavg()
    train = decoded(args.train_spec, args.data_root, args.work)
    val = decoded(args.val_spec, args.data_root, args.work)
    print(f"train {len(train)}, val {len(val)} photos at {SIDE} px; budget {args.budget:.0f} s per setting")

    parity = []
    for seed in [] if args.only else args.parity_seeds:
        for label, decode in (("per-image (torchvision, PIL)", False), ("decode-once + batched views", True)):
            # seed 0's batched run continues to the budget as the baseline setting
            name = (
                "parity-per-image"
                if not decode
                else "smallcnn-pooled_cifar"
                if seed == 0
                else "parity-batched"
            )
            out = args.work / (name if seed == 0 else f"{name}-seed{seed}")
            config = config_for("smallcnn-pooled", False, "cifar", args.parity_epochs, seed=seed)
            batch_views = pretrain_module.BatchViews
            pretrain_module.BatchViews = batch_views if decode else PerImageViews
            try:
                history = train_for(train, config, out, None)
            finally:
                pretrain_module.BatchViews = batch_views
            parity.append(
                {"seed": seed, **evaluate(label, out, history[: args.parity_epochs + 1], train, val)}
            )
    rows = []
    for name, encoder, cifar_stem, preset in [] if args.parity_only else SETTINGS:
        if args.only and name not in args.only:
            continue
        out = args.work / name.replace("/", "_")
        history = train_for(train, config_for(encoder, cifar_stem, preset, 1), out, args.budget)
        rows.append(evaluate(name, out, history, train, val))

    result = {
        "benchmark": "encoder and augmentation study, Imagenette at 32 px (kNN and linear probe on val)",
        "command": "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu_count": os.cpu_count(), "torch": torch.__version__, "platform": platform.platform(),
                    "loadavg_start": load_start, "loadavg_end": os.getloadavg()},
        "budget_seconds": args.budget,
        "parity": {"epochs": args.parity_epochs, "rows": parity,
                   "knn_difference_batched_minus_per_image": [
                       round(b["knn_top1"] - a["knn_top1"], 4) for a, b in zip(parity[::2], parity[1::2], strict=True)]},
        "rows": rows,
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
