"""Frozen-encoder extraction: run a model over a source once and write one embedding per sample.

:func:`embed` is the engine of ``impulses embed``. The model runs in eval mode under
``torch.inference_mode`` (channels_last everywhere, bf16 autocast on CUDA, BatchNorm folded into the
preceding convolution on the CPU); a DataLoader decodes and transforms images in worker processes
(pinned memory on CUDA), and rows go to a :class:`~impulses.embed.store.StoreWriter` batch by batch,
each batch committed before the next is written, so memory stays flat in N and a killed run resumes
from its last finished batch. A complete store of the same run is left alone ("up to date").
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from rich.progress import ProgressColumn, Task
from rich.text import Text
from torch import nn
from torch.utils.data import DataLoader, Dataset

from impulses.data.sources import BadImageError, ImageSource
from impulses.embed.store import EmbeddingStore, StoreError, StoreSpec, StoreWriter
from impulses.errors import ImpulsesError
from impulses.runtime import make_progress

FLOAT16_MAX = float(np.finfo(np.float16).max)
# On the CPU a batch is run in slices of this many images: their activations stay in cache. Measured on a
# 2-core EPYC with ResNet-18 (CIFAR stem, 32 px): 64-image slices ran ~1.2x faster than 256-image batches.
CPU_MICRO_BATCH = 64


@dataclass
class EmbedResult:
    """What one call of :func:`embed` did: ``status`` is ``written``, ``resumed`` or ``up-to-date``."""

    path: Path
    status: str
    rows: int
    dim: int
    images: int = 0  # images embedded by this call (0 when up to date)
    seconds: float = 0.0  # wall time of the extraction loop
    skipped: list[dict[str, str]] = field(default_factory=list)

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


class ConfigTransform:
    """The encoder's test transform built from its JSON config, lazily, so it pickles into workers."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = dict(config)
        self._fn: Callable[[Image.Image], torch.Tensor] | None = None

    def __call__(self, image: Image.Image) -> torch.Tensor:
        if self._fn is None:
            from impulses.encoders.augment import test_transform

            self._fn = test_transform(self.config)
        return self._fn(image)

    def __getstate__(self) -> dict[str, Any]:
        return {"config": self.config, "_fn": None}


class _Items(Dataset):
    """Items ``start + i`` of a source, transformed; an unreadable image comes back as its error."""

    def __init__(self, source: ImageSource, transform: Callable[[Image.Image], torch.Tensor], items: range):
        self.source, self.transform, self.items = source, transform, items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor | None, str, int, str]:
        index = self.items[i]
        try:
            image, sample_id, target = self.source[index]
        except BadImageError as err:
            return None, self.source.sample_id(index), -1, str(err)
        return self.transform(image), sample_id, target, ""


@dataclass
class _Batch:
    images: torch.Tensor | None
    ids: list[str]
    targets: list[int]
    bad: list[tuple[str, str]]  # (id, error) of unreadable images
    items: int  # source items consumed, bad ones included

    def pin_memory(self) -> _Batch:  # called by the DataLoader's pinning thread on CUDA
        if self.images is not None:
            self.images = self.images.pin_memory()
        return self


def _collate(batch: Sequence[tuple[torch.Tensor | None, str, int, str]]) -> _Batch:
    good = [b for b in batch if b[0] is not None]
    return _Batch(
        images=torch.stack([b[0] for b in good]) if good else None,  # type: ignore[misc]
        ids=[b[1] for b in good],
        targets=[b[2] for b in good],
        bad=[(b[1], b[3]) for b in batch if b[0] is None],
        items=len(batch),
    )


class ImagesPerSecond(ProgressColumn):
    """Progress column: throughput in images/s."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} img/s" if speed else "- img/s", style="progress.data.speed")


# -- the model --------------------------------------------------------------------------------------
def fold_batchnorm(model: nn.Module) -> nn.Module:
    """The model with each eval-mode BatchNorm folded into the convolution before it (fewer passes on CPU).

    Uses torch.fx; a model that cannot be traced is returned unchanged (same outputs, just slower).
    """
    try:
        from torch.fx.experimental.optimization import fuse

        with torch.no_grad():
            return fuse(model, inplace=False)
    except Exception:  # untraceable control flow: keep the model as it is
        return model


def prepare_model(model: nn.Module, device: torch.device) -> nn.Module:
    """Frozen, eval-mode model on ``device``, in channels_last; BatchNorm folded on the CPU.

    The caller's model is frozen and put in eval mode; on the CPU the folded copy is what runs, on
    CUDA the model itself is moved (bf16 autocast and cuDNN make folding moot there).
    """
    model = model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    if device.type == "cpu":
        model = fold_batchnorm(model).eval()
    return model.to(device=device, memory_format=torch.channels_last)


def _autocast(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _forward(model: nn.Module, images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The model's rows for one batch, as float32 on ``device``; the CPU runs it in cache-sized slices."""
    x = images.to(device, non_blocking=True)
    if x.ndim == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    with _autocast(device):
        if device.type == "cpu" and x.shape[0] > CPU_MICRO_BATCH:
            out = torch.cat([model(part) for part in x.split(CPU_MICRO_BATCH)])
        else:
            out = model(x)
    if out.ndim != 2 or out.shape[0] != images.shape[0]:
        raise ImpulsesError(
            f"the encoder returned shape {tuple(out.shape)} for a batch of {images.shape[0]}; "
            "it must return one feature vector per image, (batch, features)"
        )
    return out.float()


def _check_rows(rows: np.ndarray, ids: Sequence[str], dtype: str, dim: int) -> None:
    """Refuse rows that would be stored wrong: a wrong width, NaN/Inf, or values float16 cannot hold."""
    if rows.shape[1] != dim:
        raise ImpulsesError(
            f"the encoder returned {rows.shape[1]} features, expected {dim} (its num_features)"
        )
    finite = np.isfinite(rows).all(axis=1)
    if not finite.all():
        bad = ", ".join(repr(ids[i]) for i in np.flatnonzero(~finite)[:5])
        raise ImpulsesError(
            f"the encoder produced NaN or Inf for {int((~finite).sum())} image(s), e.g. {bad}"
        )
    if dtype == "float16" and rows.size and float(np.abs(rows).max()) > FLOAT16_MAX:
        raise ImpulsesError(
            f"embedding values up to {float(np.abs(rows).max()):.3g} exceed float16's range "
            f"({FLOAT16_MAX:.0f}); rerun with --dtype float32"
        )


def feature_dim(model: nn.Module, prepared: nn.Module, dataset: Dataset, device: torch.device) -> int:
    """``model.num_features`` when it says, else the width of ``prepared``'s output on the first readable item."""
    dim = getattr(model, "num_features", None)
    if isinstance(dim, int) and dim > 0:
        return dim
    for i in range(len(dataset)):  # type: ignore[arg-type]
        image = dataset[i][0]
        if image is not None:
            with torch.inference_mode():
                return int(_forward(prepared, image.unsqueeze(0), device).shape[1])
    raise ImpulsesError("no readable image to find the encoder's output width from")


# -- the store --------------------------------------------------------------------------------------
def check_existing(path: Path, spec: StoreSpec, dtype: str) -> EmbeddingStore:
    """The complete store at ``path`` if it is this run's (same fingerprint and dtype), else a clear error."""
    try:
        store = EmbeddingStore.open(path)
    except StoreError as err:
        raise StoreError(f"{err}; use --overwrite to recompute it") from None
    if store.fingerprint != spec.fingerprint:
        meta = store.meta
        differs = [
            key
            for key, mine in (
                ("encoder", spec.encoder),
                ("encoder_sha256", spec.encoder_sha256),
                ("source", spec.source),
                ("transform", spec.transform),
                ("source_digest", spec.source_digest),
            )
            if meta.get(key) != mine
        ]
        store.close()
        raise StoreError(
            f"{path} already exists and was made by a different run (different {', '.join(differs) or 'fingerprint'}); "
            "use --overwrite to replace it or choose another --out"
        )
    if store.dtype != dtype:
        store.close()
        raise StoreError(
            f"{path} already exists with dtype {store.dtype}, not {dtype}; use --overwrite to rewrite it"
        )
    return store


def embed(
    source: ImageSource,
    model: nn.Module,
    transform: Callable[[Image.Image], torch.Tensor],
    out: str | Path,
    *,
    spec: StoreSpec,
    items: range | None = None,
    batch_size: int = 256,
    workers: int = 0,
    device: str | torch.device = "cpu",
    dtype: str = "float16",
    overwrite: bool = False,
    skip_bad: bool = False,
    progress: bool = True,
    description: str = "embed",
    extra_attrs: dict[str, Any] | None = None,
) -> EmbedResult:
    """Embed ``source`` items ``items`` (default: all) with the frozen ``model`` into the store ``out``.

    ``transform`` maps a PIL image to the model's input tensor (use :class:`ConfigTransform` so it
    pickles into DataLoader workers). A complete store of the same ``spec`` and ``dtype`` is left as it
    is (``up-to-date``); a ``.partial`` one of the same run is resumed from its ``items_done``; any
    other existing store is an error unless ``overwrite``. An unreadable image stops the run with an
    error naming the file unless ``skip_bad``; skipped images are listed in the store's ``skipped``.
    """
    out = Path(out)
    device = torch.device(device)
    items = range(len(source)) if items is None else items
    if batch_size < 1:
        raise ImpulsesError(f"--batch-size must be at least 1, got {batch_size}")
    if workers < 0:
        raise ImpulsesError(f"--workers must be 0 or more, got {workers}")
    if out.exists() and not overwrite:
        store = check_existing(out, spec, dtype)
        with store:
            return EmbedResult(out, "up-to-date", len(store), store.dim, skipped=store.skipped)
    prepared = prepare_model(model, device)
    dim = feature_dim(model, prepared, _Items(source, transform, items), device)
    writer = StoreWriter.create(
        out,
        spec=spec,
        dim=dim,
        capacity=len(items),
        dtype=dtype,
        class_names=source.class_names,
        overwrite=overwrite,
        resume=True,
        extra_attrs=extra_attrs,
    )
    with writer:
        done = writer.items_done
        status = "resumed" if done else "written"
        todo = _Items(source, transform, items[done:])
        start = time.perf_counter()
        embedded = _run(
            prepared,
            todo,
            writer,
            device=device,
            dim=dim,
            dtype=dtype,
            batch_size=batch_size,
            workers=workers,
            skip_bad=skip_bad,
            progress=progress,
            description=description,
            done=done,
            total=len(items),
        )
        seconds = time.perf_counter() - start
        skipped = writer.skipped
        store = writer.finalize()
    with store:
        return EmbedResult(out, status, len(store), dim, embedded, seconds, skipped)


def _batches(
    loader: DataLoader, model: nn.Module, device: torch.device
) -> Iterator[tuple[_Batch, torch.Tensor | None]]:
    """Yield (batch, rows on the host) in order.

    On CUDA, batch k+1 is launched before batch k's rows are awaited (copied into pinned memory
    asynchronously), so the GPU keeps working while the host writes; if loading fails, the batch
    already computed is still yielded first, so an interruption loses no finished batch.
    """
    if device.type != "cuda":
        for batch in loader:
            yield batch, _forward(model, batch.images, device) if batch.images is not None else None
        return
    pending: tuple[_Batch, torch.Tensor | None, Any] | None = None
    try:
        for batch in loader:
            rows, event = None, None
            if batch.images is not None:
                out = _forward(model, batch.images, device)
                rows = torch.empty(out.shape, dtype=out.dtype, pin_memory=True)
                rows.copy_(out, non_blocking=True)
                event = torch.cuda.Event()
                event.record()
            if pending is not None:
                if pending[2] is not None:
                    pending[2].synchronize()
                yield pending[0], pending[1]
            pending = (batch, rows, event)
    except (Exception, KeyboardInterrupt):
        if pending is not None:
            if pending[2] is not None:
                pending[2].synchronize()
            yield pending[0], pending[1]
            pending = None
        raise
    if pending is not None:
        if pending[2] is not None:
            pending[2].synchronize()
        yield pending[0], pending[1]


def _run(
    model: nn.Module,
    dataset: _Items,
    writer: StoreWriter,
    *,
    device: torch.device,
    dim: int,
    dtype: str,
    batch_size: int,
    workers: int,
    skip_bad: bool,
    progress: bool,
    description: str,
    done: int,
    total: int,
) -> int:
    """The extraction loop; returns the number of images embedded."""
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=_collate,
        pin_memory=device.type == "cuda",
        prefetch_factor=4 if workers else None,
    )
    embedded = 0
    with (
        make_progress(ImagesPerSecond(), disable=not progress) as bar,
        torch.inference_mode(),
    ):
        task = bar.add_task(description, total=total, completed=done)
        for batch, rows in _batches(loader, model, device):
            if batch.bad and not skip_bad:
                raise ImpulsesError(f"{batch.bad[0][1]}; pass --skip-bad to skip unreadable images")
            array = rows.numpy() if rows is not None else np.empty((0, dim), dtype=np.float32)
            _check_rows(array, batch.ids, dtype, dim)
            writer.append(
                array,
                batch.ids,
                batch.targets,
                items=batch.items,
                skipped=[{"id": i, "error": e} for i, e in batch.bad],
            )
            embedded += len(batch.ids)
            bar.update(task, advance=batch.items)
    return embedded
