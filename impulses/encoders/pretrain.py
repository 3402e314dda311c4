"""Contrastive pretraining of an encoder (+ projector) with the debiased or NT-Xent loss.

:func:`pretrain` takes any map-style image source (``len(source)``; ``source[i]`` is a tuple whose first
element is a PIL image and whose last is the integer class, -1 when unknown) and writes, every epoch,
``OUT/last.pt`` (see :mod:`impulses.encoders.checkpoint`) and ``OUT/history.csv`` (loss, kNN top-1,
images/s per epoch). Reproducibility: the model is initialised from ``seed``; the data order is
DistributedSampler's permutation seeded by (seed, epoch); each image's two views are drawn from a
generator seeded by (seed, epoch, index). So a run resumed after epoch e continues exactly as an
uninterrupted one, independently of the number of DataLoader workers.

Under torchrun (WORLD_SIZE > 1) the model is wrapped in DistributedDataParallel (optional SyncBN),
``batch_size`` is the GLOBAL batch (split evenly over ranks) and the loss sees the global batch's
negatives. On CUDA the step runs under bf16 autocast (``amp``); activations are channels_last
(NHWC) on every device (``channels_last``), which speeds up oneDNN's CPU convolutions as well.

The kNN monitor: a seeded slice of the source (``knn_holdout``, at most 5,000 images) is held out of
pretraining; every epoch its features are classified by weighted kNN against up to ``knn_bank``
training images (test transform, no augmentation): the k = 200 most similar vote with weight
exp(cosine / 0.1) (k = 200 as in the DCL reference code's monitor). Epoch 0 in the history is the
initial encoder, so every run records its own random-init baseline.
"""

from __future__ import annotations

import csv
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from impulses.atomic import atomic_path
from impulses.encoders.augment import PRESETS, SimCLRViews, get_preset, test_transform, test_transform_config
from impulses.encoders.checkpoint import (
    CHECKPOINT_NAME,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from impulses.encoders.distributed import DistContext, all_reduce_mean, barrier, init_distributed
from impulses.encoders.knn import extract_features, knn_top1
from impulses.encoders.losses import LOSSES
from impulses.encoders.projector import Projector
from impulses.encoders.registry import create_encoder
from impulses.errors import ImpulsesError

HISTORY_NAME = "history.csv"
HISTORY_FIELDS = ("epoch", "loss", "knn_top1", "images_per_s", "seconds")
MAX_KNN_QUERIES = 5000


class ImageSource(Protocol):
    """What pretraining needs from a dataset: ``len`` and items ``(image, ..., target)``."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Sequence[Any]: ...


@dataclass
class PretrainConfig:
    """Every hyperparameter of a run (stored in the checkpoint). Defaults: DESIGN.md's paper protocol."""

    data: str = ""  # the source's spec, recorded for the record and for --resume
    encoder: str = "resnet50"
    cifar_stem: bool = False
    pretrained: bool = False
    weights: str | None = None
    preset: str | None = None  # None: small-gray for <=32 px grayscale, cifar for <=32 px, else imagenet
    image_size: int | None = None  # None: the preset's size (small-gray: the source's native size)
    loss: str = "debiased"
    epochs: int = 100
    batch_size: int = 128  # the global batch (two views of each image)
    lr: float = 3e-4
    weight_decay: float = 1e-6
    temperature: float = 0.5
    tau_plus: float = 0.1
    projection_dim: int = 128
    seed: int = 0
    knn_holdout: float = 0.1
    knn_bank: int = 10000
    knn_k: int = 200
    knn_temperature: float = 0.1
    sync_bn: bool = False
    # run-time choices: they may change between a run and its --resume
    workers: int = 0
    device: str = "auto"
    amp: bool = True  # bf16 autocast, CUDA only
    channels_last: bool = True  # NHWC activations: faster convolutions on CUDA and on CPU (oneDNN)

    RUNTIME = ("epochs", "workers", "device", "amp", "channels_last")

    def validate(self) -> None:
        """Reject impossible values with a message naming the option."""
        checks = [
            (self.loss in LOSSES, f"--loss {self.loss!r} is not one of {', '.join(LOSSES)}"),
            (self.epochs >= 0, f"--epochs must be >= 0, got {self.epochs}"),
            (self.batch_size >= 2, f"--batch-size must be >= 2, got {self.batch_size}"),
            (self.lr > 0, f"--lr must be > 0, got {self.lr}"),
            (self.temperature > 0, f"--temperature must be > 0, got {self.temperature}"),
            (0 <= self.tau_plus < 1, f"--tau-plus must be in [0, 1), got {self.tau_plus}"),
            (0 <= self.knn_holdout < 1, f"--knn-holdout must be in [0, 1), got {self.knn_holdout}"),
            (self.workers >= 0, f"--workers must be >= 0, got {self.workers}"),
            (
                self.image_size is None or self.image_size >= 4,
                f"--image-size must be >= 4, got {self.image_size}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ImpulsesError(message)
        if self.preset is not None:
            get_preset(self.preset)

    def training_dict(self) -> dict[str, Any]:
        """The settings that define the training trajectory (compared on --resume)."""
        return {k: v for k, v in asdict(self).items() if k not in self.RUNTIME}


@dataclass
class PretrainResult:
    """Where the checkpoint is and what each epoch measured."""

    checkpoint: Path
    history: list[dict[str, Any]] = field(default_factory=list)


class ContrastiveModel(nn.Module):
    """Encoder followed by the projector: images -> projections (the projector is dropped after training)."""

    def __init__(self, encoder: nn.Module, projector: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.projector = projector

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.encoder(x))


def item_seed(seed: int, epoch: int, index: int) -> int:
    """A well-mixed 63-bit seed for one image's views in one epoch."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(2, np.uint64)[0] >> np.uint64(1))


class TwoViewDataset(Dataset):
    """Items ``(view1, view2)`` of ``source[indices[i]]``, augmented reproducibly per (seed, epoch, index)."""

    def __init__(self, source: ImageSource, indices: Sequence[int], views: SimCLRViews, seed: int) -> None:
        self.source, self.indices, self.views, self.seed = source, list(indices), views, seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = self.indices[i]
        return self.views(self.source[index][0], seed=item_seed(self.seed, self.epoch, index))


class TestViewDataset(Dataset):
    """Items ``(image tensor, target)`` through the deterministic test transform (for the kNN monitor)."""

    __test__ = False

    def __init__(self, source: ImageSource, indices: Sequence[int], transform: Callable) -> None:
        self.source, self.indices, self.transform = source, list(indices), transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        item = self.source[self.indices[i]]
        return self.transform(item[0]), int(item[-1])


def infer_preset(source: ImageSource) -> str:
    """small-gray for <= 32 px single-channel images, cifar for other <= 32 px images, else imagenet."""
    image = source[0][0]
    small = max(image.size) <= 32
    if small and image.mode in ("L", "1", "I", "I;16", "F"):
        return "small-gray"
    return "cifar" if small else "imagenet"


def contrastive_step(
    model: nn.Module,
    x1: torch.Tensor,
    x2: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    amp: bool = False,
    channels_last: bool = False,
) -> torch.Tensor:
    """One optimisation step on a batch of view pairs; returns the (detached) loss without syncing.

    Both views go through the model as ONE batch (one forward, BatchNorm statistics over both views).
    """
    x = torch.cat([x1, x2])
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
        z = model(x)
    z1, z2 = z.float().chunk(2)
    loss = loss_fn(z1, z2)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def _resolve_device(config: PretrainConfig, ctx: DistContext) -> torch.device:
    from impulses.runtime import resolve_device

    device = resolve_device(config.device)
    if device.type == "cuda" and ctx.enabled:
        device = torch.device("cuda", ctx.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def _check_resume(saved: dict[str, Any], config: PretrainConfig, path: Path) -> None:
    """Every training setting must match the checkpoint's; list the ones that do not."""
    mine = config.training_dict()
    diffs = [
        f"{key}={mine[key]!r} (checkpoint: {saved.get(key)!r})" for key in mine if saved.get(key) != mine[key]
    ]
    if diffs:
        raise ImpulsesError(f"--resume {path}: settings differ from the checkpoint's: {'; '.join(diffs)}")


def _split(n: int, config: PretrainConfig, source: ImageSource) -> tuple[list[int], list[int], list[int]]:
    """(training indices, kNN query indices, kNN bank indices); the monitor is off without known targets."""
    if config.knn_holdout <= 0 or n < 10:
        return list(range(n)), [], []
    perm = np.random.default_rng(config.seed).permutation(n)
    n_hold = min(max(1, round(config.knn_holdout * n)), MAX_KNN_QUERIES)
    held = sorted(int(i) for i in perm[:n_hold])
    if all(int(source[i][-1]) < 0 for i in held[: min(len(held), 100)]):
        return list(range(n)), [], []  # no targets (an unlabeled image folder): no monitor
    train = sorted(int(i) for i in perm[n_hold:])
    bank = sorted(int(i) for i in perm[n_hold : n_hold + config.knn_bank])
    return train, held, bank


def _knn(
    encoder: nn.Module,
    source: ImageSource,
    queries: list[int],
    bank: list[int],
    transform: Callable,
    config: PretrainConfig,
    device: torch.device,
    amp: bool,
    channels_last: bool,
) -> float | None:
    if not queries:
        return None

    def loader(indices: list[int]) -> DataLoader:
        return DataLoader(
            TestViewDataset(source, indices, transform),
            batch_size=256,
            num_workers=config.workers,
            pin_memory=device.type == "cuda",
        )

    bank_x, bank_y = extract_features(encoder, loader(bank), device, amp=amp, channels_last=channels_last)
    query_x, query_y = extract_features(
        encoder, loader(queries), device, amp=amp, channels_last=channels_last
    )
    keep_b, keep_q = bank_y >= 0, query_y >= 0
    if not keep_b.any() or not keep_q.any():
        return None
    return knn_top1(
        query_x[keep_q],
        query_y[keep_q],
        bank_x[keep_b],
        bank_y[keep_b],
        k=config.knn_k,
        temperature=config.knn_temperature,
    )


def write_history_csv(path: Path, history: list[dict[str, Any]]) -> None:
    """The loss / kNN curve as CSV (rewritten atomically every epoch)."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=HISTORY_FIELDS)
        writer.writeheader()
        for row in history:
            writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in HISTORY_FIELDS})


def pretrain(
    source: ImageSource,
    config: PretrainConfig,
    out_dir: str | os.PathLike[str],
    *,
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> PretrainResult:
    """Pretrain ``config.encoder`` on ``source``; checkpoint to ``out_dir/last.pt`` every epoch.

    Under torchrun the process group is created here when nobody did before, and destroyed at the end.
    """
    import torch.distributed as dist

    created = not dist.is_initialized()
    try:
        return _pretrain(source, config, Path(out_dir), resume=resume, progress=progress, log=log)
    finally:
        if created and dist.is_initialized():
            dist.destroy_process_group()


def _pretrain(
    source: ImageSource,
    config: PretrainConfig,
    out: Path,
    *,
    resume: bool,
    progress: bool,
    log: Callable[[str], None] | None,
) -> PretrainResult:
    config.validate()
    ckpt_path = out / CHECKPOINT_NAME
    n = len(source)
    if n == 0:
        raise ImpulsesError(f"--data {config.data or 'source'}: no images")

    checkpoint: dict[str, Any] | None = None
    if ckpt_path.exists() and not resume:
        raise ImpulsesError(f"{ckpt_path} exists: pass --resume to continue it, or choose another --out")
    if resume and ckpt_path.exists():
        checkpoint = load_checkpoint(ckpt_path)
    if config.preset is None:
        config.preset = checkpoint["config"].get("preset") if checkpoint else infer_preset(source)
    preset = PRESETS[config.preset]
    if config.image_size is None:
        config.image_size = preset.image_size or max(source[0][0].size)
    if checkpoint is not None:
        _check_resume(checkpoint["config"], config, ckpt_path)

    ctx = init_distributed(
        torch.device("cuda" if torch.cuda.is_available() and config.device != "cpu" else "cpu")
    )
    device = _resolve_device(config, ctx)
    amp = config.amp and device.type == "cuda"
    channels_last = config.channels_last
    if config.batch_size % ctx.world_size:
        raise ImpulsesError(
            f"--batch-size {config.batch_size} is not divisible by the {ctx.world_size} processes"
        )
    local_batch = config.batch_size // ctx.world_size
    if config.sync_bn and ctx.enabled and device.type != "cuda":
        raise ImpulsesError("--sync-bn needs CUDA devices (torch's SyncBatchNorm does not run on CPU)")
    say = log if (log is not None and ctx.is_main) else (lambda _msg: None)

    train_idx, query_idx, bank_idx = _split(n, config, source)
    if len(train_idx) // ctx.world_size < local_batch:
        raise ImpulsesError(
            f"--batch-size {config.batch_size} is larger than the {len(train_idx)} training images "
            f"of {config.data or 'the source'}"
        )

    torch.manual_seed(config.seed)
    encoder = create_encoder(  # a resumed run's weights come from the checkpoint: fetch/load nothing else
        config.encoder,
        cifar_stem=config.cifar_stem,
        pretrained=config.pretrained and checkpoint is None,
        weights=config.weights if checkpoint is None else None,
        in_chans=preset.in_chans,
    )
    projector = Projector(encoder.num_features, config.projection_dim)
    model = ContrastiveModel(encoder, projector)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    history: list[dict[str, Any]] = []
    start_epoch = 0
    if checkpoint is not None:
        model.encoder.load_state_dict(checkpoint["encoder_state"])
        model.projector.load_state_dict(checkpoint["projector_state"])
        optimizer.load_state_dict(checkpoint["optimizer_state"])
        start_epoch = int(checkpoint["epoch"])
        history = list(checkpoint.get("history", []))
        set_rng_state(checkpoint["rng"])
        say(f"resuming {ckpt_path} after epoch {start_epoch}")
    elif resume:
        say(f"no checkpoint in {out}: starting from epoch 0")
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    for state in optimizer.state.values():  # restored Adam moments follow the parameters' device
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and key != "step":
                state[key] = value.to(device)
    train_model: nn.Module = model
    if ctx.enabled:
        if config.sync_bn:
            train_model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        train_model = nn.parallel.DistributedDataParallel(
            train_model, device_ids=[device.index] if device.type == "cuda" else None
        )

    transform_config = test_transform_config(
        config.preset, image_size=config.image_size, in_chans=preset.in_chans
    )
    transform = test_transform(transform_config)
    views = SimCLRViews(preset, config.image_size)
    dataset = TwoViewDataset(source, train_idx, views, config.seed)
    sampler = DistributedSampler(
        dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=config.seed, drop_last=True
    )
    loss_impl = LOSSES[config.loss]

    def loss_fn(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        if config.loss == "debiased":
            return loss_impl(z1, z2, config.temperature, config.tau_plus)
        return loss_impl(z1, z2, config.temperature)

    def save(epoch: int) -> None:
        if not ctx.is_main:
            return
        save_checkpoint(
            ckpt_path,
            {
                "encoder": {
                    "name": config.encoder,
                    "cifar_stem": config.cifar_stem,
                    "in_chans": preset.in_chans,
                    "num_features": int(encoder.num_features),
                },
                "preset": config.preset,
                "transform": transform_config,
                "encoder_state": {k: v.detach().cpu() for k, v in model.encoder.state_dict().items()},
                "projector_state": {k: v.detach().cpu() for k, v in model.projector.state_dict().items()},
                "optimizer_state": optimizer.state_dict(),
                "epoch": epoch,
                "config": asdict(config),
                "rng": rng_state(),
                "history": history,
            },
        )
        write_history_csv(out / HISTORY_NAME, history)

    def monitor() -> float | None:
        value = None
        if ctx.is_main:
            value = _knn(
                model.encoder, source, query_idx, bank_idx, transform, config, device, amp, channels_last
            )
        barrier()
        return value

    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
    if checkpoint is None:
        started = time.perf_counter()
        knn0 = monitor()
        history.append(
            {
                "epoch": 0,
                "loss": None,
                "knn_top1": None if knn0 is None else round(knn0, 6),
                "images_per_s": None,
                "seconds": round(time.perf_counter() - started, 3),
            }
        )
        if knn0 is not None:
            say(f"epoch 0 (initial encoder): kNN top-1 {knn0:.4f}")

    steps_per_epoch = len(sampler) // local_batch
    from rich.progress import TextColumn

    from impulses.runtime import make_progress

    bar = make_progress(
        TextColumn("loss {task.fields[loss]}"),
        TextColumn("{task.fields[ips]} img/s"),
        disable=not (progress and ctx.is_main),
    )
    with bar:
        task = bar.add_task(
            "pretrain", total=max(0, config.epochs - start_epoch) * steps_per_epoch, loss="-", ips="-"
        )
        for epoch in range(start_epoch, config.epochs):
            sampler.set_epoch(epoch)
            dataset.epoch = epoch
            loader = DataLoader(
                dataset,
                batch_size=local_batch,
                sampler=sampler,
                drop_last=True,
                num_workers=config.workers,
                pin_memory=device.type == "cuda",
                persistent_workers=False,
            )
            bar.update(task, description=f"epoch {epoch + 1}/{config.epochs}")
            model.train()
            started = time.perf_counter()
            loss_sum = torch.zeros((), device=device)
            for step, (x1, x2) in enumerate(loader, start=1):
                x1 = x1.to(device, non_blocking=True)
                x2 = x2.to(device, non_blocking=True)
                loss_sum += contrastive_step(
                    train_model, x1, x2, optimizer, loss_fn, amp=amp, channels_last=channels_last
                )
                if step % 10 == 0 or step == steps_per_epoch:
                    elapsed = time.perf_counter() - started
                    bar.update(
                        task,
                        completed=(epoch - start_epoch) * steps_per_epoch + step,
                        loss=f"{float(loss_sum) / step:.4f}",
                        ips=f"{step * config.batch_size / max(elapsed, 1e-9):.0f}",
                    )
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds = time.perf_counter() - started
            epoch_loss = float(all_reduce_mean(loss_sum / max(steps_per_epoch, 1)))
            if not math.isfinite(epoch_loss):
                raise ImpulsesError(f"epoch {epoch + 1}: the loss is {epoch_loss} (try a lower --lr)")
            knn = monitor()
            row = {
                "epoch": epoch + 1,
                "loss": round(epoch_loss, 6),
                "knn_top1": None if knn is None else round(knn, 6),
                "images_per_s": round(steps_per_epoch * config.batch_size / seconds, 2),
                "seconds": round(seconds, 3),
            }
            history.append(row)
            save(epoch + 1)
            barrier()
            knn_text = "" if knn is None else f", kNN top-1 {knn:.4f}"
            say(
                f"epoch {epoch + 1}/{config.epochs}: loss {epoch_loss:.4f}{knn_text}, {row['images_per_s']:.0f} img/s"
            )
    if checkpoint is not None and start_epoch >= config.epochs:
        say(f"{ckpt_path} already has {start_epoch} epochs (>= --epochs {config.epochs}): nothing to do")
    elif config.epochs == 0:
        save(0)
    return PretrainResult(ckpt_path, history)


def config_fields() -> list[str]:
    """Names of :class:`PretrainConfig`'s fields (for the CLI's --resume merging)."""
    return [f.name for f in fields(PretrainConfig)]
