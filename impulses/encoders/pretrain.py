"""Contrastive pretraining of an encoder (+ projector) with the debiased or NT-Xent loss.

:func:`pretrain` takes any map-style image source (``len(source)``; ``source[i]`` is a tuple whose first
element is a PIL image and whose last is the integer class, -1 when unknown) and writes, every epoch,
``OUT/last.pt`` (see :mod:`impulses.encoders.checkpoint`) and ``OUT/history.csv`` (loss, kNN top-1,
images/s per epoch). :func:`run_pretraining` is the same from a dataset spec, with the option merging
of ``impulses pretrain`` (defaults, or the checkpoint's settings when resuming).

Data path: every image is decoded once to the working resolution (:mod:`impulses.data.decoded`: the
test transform's resize + centre crop, as uint8). By default (``decode`` None) that happens up front
for working resolutions up to 96 px, into ``OUT/decoded-<S>px-<C>ch`` (memory-mapped, reused by a
resumed run; in memory for a source without a digest); larger images are decoded batch by batch in
DataLoader workers. Either way the training step receives uint8 batches, moves them to the device
(pinned memory and non-blocking copies on CUDA), and augments the whole batch there
(:class:`impulses.encoders.augment.BatchViews`).

Reproducibility: the model is initialised from ``seed``; epoch e's global batches are a permutation
of the training rows seeded by (seed, e); batch b's augmentation parameters come from a generator
seeded by (seed, e, b), drawn for the whole global batch (each rank takes its rows). So a run resumed
after epoch e continues exactly as an uninterrupted one, whatever the number of DataLoader workers,
and the global batches and their views do not depend on the number of processes.

Under torchrun (WORLD_SIZE > 1) the model is wrapped in DistributedDataParallel (optional SyncBN),
``batch_size`` is the GLOBAL batch (split evenly over ranks) and the loss sees the global batch's
negatives. On CUDA the step runs under bf16 autocast (``amp``); activations are channels_last
(NHWC) on every device (``channels_last``), which speeds up oneDNN's CPU convolutions as well;
``compile`` wraps the model in ``torch.compile``.

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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from impulses.atomic import atomic_path
from impulses.data.decoded import DEFAULT_MAX_SIDE, DecodedImages, DecodeRows, decode_source, open_decoded
from impulses.data.sources import ImageSource
from impulses.encoders.augment import (
    PRESETS,
    BatchViews,
    get_augmentation_preset,
    normalize_images,
    test_transform_config,
)
from impulses.encoders.checkpoint import (
    CHECKPOINT_NAME,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from impulses.encoders.distributed import all_reduce_mean, barrier, init_distributed
from impulses.encoders.knn import extract_features, knn_top1
from impulses.encoders.losses import LOSSES
from impulses.encoders.projector import Projector
from impulses.encoders.registry import create_encoder
from impulses.errors import ImpulsesError, ParameterError
from impulses.runtime import DistInfo

HISTORY_NAME = "history.csv"
HISTORY_FIELDS = ("epoch", "loss", "knn_top1", "images_per_s", "seconds")
MAX_KNN_QUERIES = 5000
MONITOR_BATCH = 256


@dataclass
class PretrainConfig:
    """Every hyperparameter of a run (stored in the checkpoint). Defaults: the paper's protocol (docs/design.md)."""

    data: str = ""  # the source's spec, recorded for the record and for resuming
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
    # run-time choices: they may change between a run and its resumption
    workers: int = 0
    device: str = "auto"
    amp: bool = True  # bf16 autocast, CUDA only
    channels_last: bool = True  # NHWC activations: faster convolutions on CUDA and on CPU (oneDNN)
    decode: bool | None = None  # decode once up front; None: when the working resolution is <= 96 px
    decode_dir: str | None = None  # the decoded array's folder; None: OUT/decoded-<S>px-<C>ch
    compile: bool = False  # torch.compile the model (CUDA: faster steps after a compile of ~1 min)

    RUNTIME = ("epochs", "workers", "device", "amp", "channels_last", "decode", "decode_dir", "compile")

    def validate(self) -> None:
        """Reject impossible values with a :class:`ParameterError` naming the parameter."""
        checks = [
            ("loss", self.loss in LOSSES, f"{self.loss!r} is not one of {', '.join(LOSSES)}"),
            ("epochs", self.epochs >= 0, f"must be >= 0, got {self.epochs}"),
            ("batch_size", self.batch_size >= 2, f"must be >= 2, got {self.batch_size}"),
            ("lr", self.lr > 0, f"must be > 0, got {self.lr}"),
            ("temperature", self.temperature > 0, f"must be > 0, got {self.temperature}"),
            ("tau_plus", 0 <= self.tau_plus < 1, f"must be in [0, 1), got {self.tau_plus}"),
            ("knn_holdout", 0 <= self.knn_holdout < 1, f"must be in [0, 1), got {self.knn_holdout}"),
            ("workers", self.workers >= 0, f"must be >= 0, got {self.workers}"),
            (
                "image_size",
                self.image_size is None or self.image_size >= 4,
                f"must be >= 4, got {self.image_size}",
            ),
        ]
        for param, ok, message in checks:
            if not ok:
                raise ParameterError(param, message)
        if self.preset is not None:
            get_augmentation_preset(self.preset)

    def training_dict(self) -> dict[str, Any]:
        """The settings that define the training trajectory (compared when resuming)."""
        return {k: v for k, v in asdict(self).items() if k not in self.RUNTIME}


@dataclass
class PretrainResult:
    """Where the checkpoint is, what each epoch measured, and whether this process is rank 0."""

    checkpoint: Path
    history: list[dict[str, Any]] = field(default_factory=list)
    is_main: bool = True


class ContrastiveModel(nn.Module):
    """Encoder followed by the projector: images -> projections (the projector is dropped after training)."""

    def __init__(self, encoder: nn.Module, projector: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.projector = projector

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Projections of the encoder's features of ``x``."""
        return self.projector(self.encoder(x))


def derived_seed(*keys: int) -> int:
    """A well-mixed 63-bit seed from integers (the run seed, an epoch, a batch index...)."""
    return int(np.random.SeedSequence(list(keys)).generate_state(2, np.uint64)[0] >> np.uint64(1))


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int) -> np.ndarray:
    """``(n // batch_size, batch_size)`` positions in ``range(n)``: epoch ``epoch``'s global batches.

    A permutation seeded by (seed, epoch), the last incomplete batch dropped.
    """
    steps = n // batch_size
    order = np.random.default_rng([seed, epoch]).permutation(n)
    return order[: steps * batch_size].reshape(steps, batch_size)


def batch_generator(seed: int, epoch: int, batch: int) -> torch.Generator:
    """The CPU generator of global batch ``batch``'s augmentation parameters in epoch ``epoch``."""
    return torch.Generator().manual_seed(derived_seed(seed, epoch, batch))


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


def _resolve_device(config: PretrainConfig, ctx: DistInfo) -> torch.device:
    from impulses.runtime import resolve_device

    device = resolve_device(config.device)
    if device.type == "cuda" and ctx.distributed:
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
        raise ParameterError("resume", f"{path}: settings differ from the checkpoint's: {'; '.join(diffs)}")


def _split(n: int, config: PretrainConfig, targets: np.ndarray) -> tuple[list[int], list[int], list[int]]:
    """(training indices, kNN query indices, kNN bank indices); the monitor is off without known targets."""
    if config.knn_holdout <= 0 or n < 10:
        return list(range(n)), [], []
    perm = np.random.default_rng(config.seed).permutation(n)
    n_hold = min(max(1, round(config.knn_holdout * n)), MAX_KNN_QUERIES)
    held = sorted(int(i) for i in perm[:n_hold])
    if all(int(targets[i]) < 0 for i in held[: min(len(held), 100)]):
        return list(range(n)), [], []  # no targets (an unlabeled image folder): no monitor
    train = sorted(int(i) for i in perm[n_hold:])
    bank = sorted(int(i) for i in perm[n_hold : n_hold + config.knn_bank])
    return train, held, bank


class WorkingImages:
    """The source at the working resolution: uint8 ``(B, S, S, C)`` batches and their targets.

    From a decoded array (``decoded``) or decoded batch by batch from ``source`` in DataLoader workers.
    """

    def __init__(
        self,
        source: ImageSource,
        image_size: int,
        channels: int,
        decoded: DecodedImages | None,
        *,
        workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        self.source, self.image_size, self.channels = source, image_size, channels
        self.decoded, self.workers, self.pin_memory = decoded, workers, pin_memory
        self._targets: np.ndarray | None = None if decoded is None else decoded.targets

    @property
    def targets(self) -> np.ndarray:
        """Every row's class (read from the source, without decoding when it holds them)."""
        if self._targets is None:
            held = getattr(self.source, "targets", None)
            if held is not None and len(held) == len(self.source):
                self._targets = np.asarray(held, dtype=np.int64)
            else:
                self._targets = np.array([int(self.source[i][-1]) for i in range(len(self.source))])
        return self._targets

    def batches(self, index_batches: Sequence[Sequence[int]]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``(images, targets)`` for each list of rows, in order (pinned when ``pin_memory``)."""
        if self.decoded is not None:
            for rows in index_batches:
                images, targets = self.decoded.batch(rows)
                yield (images.pin_memory() if self.pin_memory else images), targets
            return
        from torch.utils.data import DataLoader

        loader = DataLoader(
            DecodeRows(self.source, self.image_size, self.channels),
            batch_sampler=[list(map(int, rows)) for rows in index_batches],
            num_workers=self.workers,
            pin_memory=self.pin_memory,
        )
        yield from loader


def _working_images(
    source: ImageSource,
    config: PretrainConfig,
    channels: int,
    out: Path,
    ctx: DistInfo,
    device: torch.device,
    say: Callable[[str], None],
) -> WorkingImages:
    """Decode once (to disk when the source has a digest, else into memory) or lazily, per ``config.decode``."""
    size = int(config.image_size or 0)
    decode = config.decode if config.decode is not None else size <= DEFAULT_MAX_SIDE
    decoded = None
    if decode and hasattr(source, "digest"):
        folder = Path(config.decode_dir) if config.decode_dir else out / f"decoded-{size}px-{channels}ch"
        if ctx.is_main:
            if not folder.exists():
                say(f"decoding {len(source)} images once to {size} px: {folder}")
            decode_source(source, image_size=size, channels=channels, path=folder, workers=config.workers)
        barrier()
        decoded = open_decoded(folder)
    elif decode:
        decoded = decode_source(source, image_size=size, channels=channels, workers=config.workers)
    return WorkingImages(
        source, size, channels, decoded, workers=config.workers, pin_memory=device.type == "cuda"
    )


def _knn(
    encoder: nn.Module,
    images: WorkingImages,
    queries: list[int],
    bank: list[int],
    transform_config: dict,
    config: PretrainConfig,
    device: torch.device,
    amp: bool,
    channels_last: bool,
) -> float | None:
    if not queries:
        return None
    mean, std = transform_config["mean"], transform_config["std"]

    def batches(indices: list[int]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        chunks = [indices[i : i + MONITOR_BATCH] for i in range(0, len(indices), MONITOR_BATCH)]
        for x, y in images.batches(chunks):
            yield normalize_images(x.to(device, non_blocking=True), mean, std), y

    bank_x, bank_y = extract_features(encoder, batches(bank), device, amp=amp, channels_last=channels_last)
    query_x, query_y = extract_features(
        encoder, batches(queries), device, amp=amp, channels_last=channels_last
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

    Args:
        source: Map-style images, items ``(PIL image, ..., target)``.
        config: The run's settings (validated here; ``preset`` and ``image_size`` are resolved in place).
        out_dir: The run folder (``last.pt``, ``history.csv``, the decoded images by default).
        resume: Continue ``out_dir/last.pt`` (its training settings must equal ``config``'s).
        progress: Show a progress bar (rank 0).
        log: Receives one line per epoch and notices (rank 0).

    Returns:
        The checkpoint path and the per-epoch history.

    Raises:
        ParameterError: impossible settings, a batch larger than the data, a checkpoint in the way.
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
        raise ParameterError("data", f"{config.data or 'the source'!r} has no images")

    checkpoint: dict[str, Any] | None = None
    if ckpt_path.exists() and not resume:
        raise ParameterError(
            "resume",
            f"is needed to continue {ckpt_path}, which already exists (or choose another out folder)",
        )
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
        raise ParameterError(
            "batch_size", f"{config.batch_size} is not divisible by the {ctx.world_size} processes"
        )
    local_batch = config.batch_size // ctx.world_size
    if config.sync_bn and ctx.distributed and device.type != "cuda":
        raise ParameterError("sync_bn", "needs CUDA devices (torch's SyncBatchNorm does not run on CPU)")
    say = log if (log is not None and ctx.is_main) else (lambda _msg: None)

    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
    images = _working_images(source, config, preset.in_chans, out, ctx, device, say)
    train_idx, query_idx, bank_idx = _split(n, config, images.targets)
    if len(train_idx) < config.batch_size:
        raise ParameterError(
            "batch_size",
            f"{config.batch_size} is larger than the {len(train_idx)} training images "
            f"of {config.data or 'the source'}",
        )
    train_rows = np.asarray(train_idx, dtype=np.int64)

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
    if ctx.distributed:
        if config.sync_bn:
            train_model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        train_model = nn.parallel.DistributedDataParallel(
            train_model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if config.compile:
        train_model = torch.compile(train_model)  # type: ignore[assignment]

    transform_config = test_transform_config(
        config.preset, image_size=config.image_size, in_chans=preset.in_chans
    )
    views = BatchViews(preset, config.image_size)
    loss_impl = LOSSES[config.loss]
    # this rank's rows of the two views of a global batch (the views' parameters are drawn for all)
    mine = torch.arange(ctx.rank * local_batch, (ctx.rank + 1) * local_batch)
    view_rows = torch.cat([mine, mine + config.batch_size])

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
                model.encoder,
                images,
                query_idx,
                bank_idx,
                transform_config,
                config,
                device,
                amp,
                channels_last,
            )
        barrier()
        return value

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

    steps_per_epoch = len(train_rows) // config.batch_size
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
            global_batches = train_rows[epoch_batches(len(train_rows), config.batch_size, config.seed, epoch)]
            local = global_batches[:, ctx.rank * local_batch : (ctx.rank + 1) * local_batch]
            bar.update(task, description=f"epoch {epoch + 1}/{config.epochs}")
            model.train()
            started = time.perf_counter()
            loss_sum = torch.zeros((), device=device)
            for step, (x, _) in enumerate(images.batches(local), start=1):
                x = x.to(device, non_blocking=True)
                params = views.draw(
                    2 * config.batch_size,
                    x.shape[1],
                    x.shape[2],
                    batch_generator(config.seed, epoch, step - 1),
                )
                x1, x2 = views.apply(torch.cat([x, x]), params.take(view_rows)).chunk(2)
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
                raise ParameterError(
                    "lr", f"{config.lr} gives a loss of {epoch_loss} in epoch {epoch + 1}: lower it"
                )
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
        say(f"{ckpt_path} already has {start_epoch} epochs (>= epochs {config.epochs}): nothing to do")
    elif config.epochs == 0:
        save(0)
    return PretrainResult(ckpt_path, history, is_main=ctx.is_main)


def config_fields() -> list[str]:
    """Names of :class:`PretrainConfig`'s fields (for merging options when resuming)."""
    return [f.name for f in fields(PretrainConfig)]


def run_pretraining(
    out: str | os.PathLike[str],
    *,
    data: str | None = None,
    data_root: str | os.PathLike[str] | None = None,
    download: bool = False,
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    **options: Any,
) -> PretrainResult:
    """Pretrain on the dataset ``data`` into ``out`` (or resume ``out/last.pt``): ``impulses pretrain``.

    Args:
        out: The run folder.
        data: Dataset spec (:func:`impulses.data.sources.open_source`); when resuming, the checkpoint's.
        data_root: Folder holding the dataset files.
        download: Let torchvision fetch a missing dataset.
        resume: Continue ``out/last.pt``; options not given (or None) come from its settings.
        progress: Show a progress bar.
        log: Receives the per-epoch lines.
        **options: :class:`PretrainConfig` fields; None or absent means the default (or, resuming,
            the checkpoint's value).

    Returns:
        The result of :func:`pretrain` (``is_main`` is False on ranks other than 0 under torchrun).

    Raises:
        ParameterError: an unknown option, no ``data``, or a bad value.
        ImpulsesError: ``resume`` without ``out/last.pt`` (the message names it), unreadable data.
    """
    from impulses.data.sources import open_source

    out = Path(out)
    known = config_fields()
    for name in options:
        if name not in known:
            raise ParameterError(name, f"is not a pretraining option (known: {', '.join(known)})")
    checkpoint = out / CHECKPOINT_NAME
    if resume and not checkpoint.is_file():
        raise ImpulsesError(f"{checkpoint}: no checkpoint to resume (run once without resume first)")
    if options.get("weights") is not None:
        options["weights"] = str(options["weights"])
    given = {k: v for k, v in {"data": data, **options}.items() if v is not None}
    base = load_checkpoint(checkpoint)["config"] if resume else asdict(PretrainConfig())
    merged = {**base, **given}
    config = PretrainConfig(**{k: merged[k] for k in known if k in merged})
    if not config.data:
        raise ParameterError("data", "is required, e.g. 'digits'")
    config.validate()  # before the data are opened
    source = open_source(config.data, data_root=data_root, download=download)
    config.data = getattr(source, "spec", config.data)
    return pretrain(source, config, out, resume=resume, progress=progress, log=log)
