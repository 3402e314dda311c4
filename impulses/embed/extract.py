"""Frozen-encoder extraction: run a model over a source once and write one embedding per sample.

:func:`embed_dataset` is ``impulses embed`` as one call: it checks the parameters, opens the
source, loads the encoder, and runs :func:`embed` (one process) or the torchrun shards
(:mod:`impulses.embed.shards`). :func:`embed` is the engine. The model runs in eval mode under
``torch.inference_mode`` (channels_last everywhere, bf16 autocast on CUDA, BatchNorm folded into the
preceding convolution on the CPU); a DataLoader decodes and transforms images in worker processes
(pinned memory on CUDA), and rows go to a :class:`~impulses.embed.store.StoreWriter` batch by batch,
each batch committed before the next is written, so memory stays flat in N and a killed run resumes
from its last finished batch. A complete store of the same run is left alone ("up to date").
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
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

from impulses.data.sources import ArraySource, BadImageError, ImageSource, RangeSource, open_source
from impulses.embed.store import DTYPES, EmbeddingStore, StoreError, StoreSpec, StoreWriter
from impulses.errors import ImpulsesError, ParameterError
from impulses.runtime import DistInfo, make_progress, resolve_device

FLOAT16_MAX = float(np.finfo(np.float16).max)
# On the CPU a batch is run in slices of this many images: their activations stay in cache. Measured on a
# 2-core EPYC with ResNet-18 (CIFAR stem, 32 px): 64-image slices ran ~1.2x faster than 256-image batches.
CPU_MICRO_BATCH = 64


@dataclass
class EmbedResult:
    """What one embedding run did.

    Attributes:
        path: The store written (a shard store on ranks other than 0 under torchrun).
        status: ``written``, ``resumed``, ``up-to-date`` (nothing to do) or ``empty`` (a rank
            with no rows of its own).
        rows: Rows in the store.
        dim: Features per row.
        images: Images embedded by this call (0 when up to date; all ranks' on rank 0).
        seconds: Wall time of the extraction loop (the slowest rank's on rank 0).
        skipped: Unreadable images left out (``skip_bad``), each ``{"id", "error"}``.
        dtype: The stored dtype.
        processes: Processes that embedded (torchrun's world size).
        is_main: False on torchrun ranks other than 0, which should print nothing.
    """

    path: Path
    status: str
    rows: int
    dim: int
    images: int = 0
    seconds: float = 0.0
    skipped: list[dict[str, str]] = field(default_factory=list)
    dtype: str = ""
    processes: int = 1
    is_main: bool = True

    @property
    def images_per_s(self) -> float:
        """Throughput of this call's extraction loop."""
        return self.images / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        """The run as plain values: what ``impulses embed --json`` prints."""
        return {
            "store": str(self.path),
            "status": self.status,
            "rows": self.rows,
            "dim": self.dim,
            "dtype": self.dtype,
            "images_embedded": self.images,
            "seconds": round(self.seconds, 3),
            "images_per_s": round(self.images_per_s, 1),
            "skipped": len(self.skipped),
            "processes": self.processes,
        }


class ConfigTransform:
    """The encoder's test transform built from its JSON config, lazily, so it pickles into workers."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = dict(config)
        self._fn: Callable[[Image.Image], torch.Tensor] | None = None

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """The image as the encoder's test-time tensor (the transform is built on first use)."""
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
    shapes: list[tuple[str, tuple[int, ...]]] = field(default_factory=list)  # (id, shape): sizes differ

    def pin_memory(self) -> _Batch:  # called by the DataLoader's pinning thread on CUDA
        if self.images is not None:
            self.images = self.images.pin_memory()
        return self


def _collate(batch: Sequence[tuple[torch.Tensor | None, str, int, str]]) -> _Batch:
    """One batch; images of different sizes come back unstacked, with their shapes, for a clear error.

    (Raising here would reach the main process as a DataLoader worker traceback.)
    """
    good = [b for b in batch if b[0] is not None]
    shapes = [(b[1], tuple(b[0].shape)) for b in good]  # type: ignore[union-attr]
    same = len({shape for _, shape in shapes}) <= 1
    return _Batch(
        images=torch.stack([b[0] for b in good]) if good and same else None,  # type: ignore[misc]
        ids=[b[1] for b in good],
        targets=[b[2] for b in good],
        bad=[(b[1], b[3]) for b in batch if b[0] is None],
        items=len(batch),
        shapes=[] if same else shapes,
    )


def _size_error(first: tuple[str, tuple[int, ...]], other: tuple[str, tuple[int, ...]]) -> ParameterError:
    """The images differ in size: the transform keeps each one's own size unless ``image_size`` is set."""

    def side(shape: tuple[int, ...]) -> str:
        return "x".join(map(str, shape[-2:]))

    return ParameterError(
        "image_size",
        f"is not set and the images differ in size ({first[0]} is {side(first[1])}, {other[0]} is "
        f"{side(other[1])} pixels); set it to resize every image to one size",
    )


class ImagesPerSecond(ProgressColumn):
    """Progress column: throughput in images/s."""

    def render(self, task: Task) -> Text:
        """The task's speed in images per second, or a dash before the first update."""
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
        raise ParameterError(
            "dtype",
            f"float16 cannot hold embedding values up to {float(np.abs(rows).max()):.3g} "
            f"(its range ends at {FLOAT16_MAX:.0f}); use float32",
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
        raise StoreError(f"is needed to recompute {path}: {err}", param="overwrite") from None
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
            f"is needed to replace {path}: it was made by a different run "
            f"(different {', '.join(differs) or 'fingerprint'}); or write to another path",
            param="overwrite",
        )
    if store.dtype != dtype:
        store.close()
        raise StoreError(
            f"is needed to rewrite {path}: it holds dtype {store.dtype}, this run asks for {dtype}",
            param="overwrite",
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
    _check_counts(batch_size, workers)
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
    with writer, _remove_if_empty(writer):
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


@contextmanager
def _remove_if_empty(writer: StoreWriter) -> Iterator[None]:
    """A run that fails before its first committed batch leaves no ``.partial`` behind (nothing to resume)."""
    try:
        yield
    except BaseException:
        if writer.items_done == 0:
            writer.close()
            writer.partial.unlink(missing_ok=True)
        raise


def embed_dataset(
    data: str | ImageSource,
    encoder: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    data_root: str | os.PathLike[str] | None = None,
    download: bool = False,
    weights: str | os.PathLike[str] | None = None,
    pretrained: bool = False,
    random_init: bool = False,
    cifar_stem: bool = False,
    image_size: int | None = None,
    batch_size: int = 256,
    workers: int | None = None,
    device: str = "auto",
    dtype: str = "float16",
    overwrite: bool = False,
    skip_bad: bool = False,
    progress: bool = True,
) -> EmbedResult:
    """Embed a dataset with a frozen encoder into the store ``out``: ``impulses embed`` in one call.

    Rerunning the same call resumes an interrupted run from its last finished batch, or finds the
    store up to date. Under torchrun each process embeds a block of whole batches into its own
    shard store and rank 0 joins them into ``out`` (see :mod:`impulses.embed.shards`); each rank
    runs on CUDA device ``LOCAL_RANK`` when ``device`` is ``auto`` or ``cuda``.

    Args:
        data: A dataset spec (``digits``, ``fashion-mnist:test``, ``imagefolder:PATH[0:100]``...,
            see :func:`impulses.data.sources.open_source`) or an opened source.
        encoder: A registered or timm encoder name, or an ``impulses pretrain`` checkpoint.
        out: The store to write (``.h5``).
        data_root: Folder holding (or receiving) the dataset files.
        download: Let torchvision download a missing dataset.
        weights: A local state dict for the named encoder.
        pretrained: timm's published weights for the named encoder (from the local cache when
            offline).
        random_init: Embed with a timm model's random initial weights; without it a timm name
            needs ``pretrained`` or ``weights`` (the store records ``weights: random``).
        cifar_stem: 3x3 stride-1 first convolution and no max-pool (8-32 px images).
        image_size: Input side in pixels (default: the encoder's test transform; images of
            different sizes need one).
        batch_size: Images per forward pass and per committed chunk.
        workers: DataLoader worker processes (default: 0 for in-memory data, 4 for image files).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        dtype: Stored dtype, ``float16`` or ``float32``.
        overwrite: Replace an existing store, or an unfinished one of another run.
        skip_bad: Skip unreadable images (listed in the store's ``skipped``) instead of stopping.
        progress: Show a progress bar (on stderr; rank 0 only).

    Returns:
        What the run did; ``summary()`` gives it as a dict, ``is_main`` is False on ranks != 0.

    Raises:
        ParameterError: A parameter the run cannot use (named), checked before any work.
        ImpulsesError: Data, encoder or store problems (the message names the file or id).
    """
    if dtype not in DTYPES:
        raise ParameterError("dtype", f"must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if image_size is not None and image_size < 1:
        raise ParameterError("image_size", f"must be a positive number of pixels, got {image_size}")
    _check_counts(batch_size, 0 if workers is None else workers)
    from impulses.embed.shards import embed_sharded
    from impulses.encoders import load_encoder

    ranks = DistInfo.from_env()
    torch_device = resolve_device(device)
    if torch_device.type == "cuda" and ranks.distributed and torch_device.index is None:
        torch_device = torch.device("cuda", ranks.local_rank)
    source = (
        data if isinstance(data, ImageSource) else open_source(data, data_root=data_root, download=download)
    )
    loaded = load_encoder(
        encoder, cifar_stem=cifar_stem, pretrained=pretrained, weights=weights, random_init=random_init
    )
    transform = dict(loaded.transform)
    if image_size is not None:
        transform["image_size"] = image_size
    spec = StoreSpec(loaded.name, source.spec, loaded.sha256, transform, source.digest)
    if workers is None:
        in_memory = isinstance(source.base if isinstance(source, RangeSource) else source, ArraySource)
        workers = 0 if in_memory else min(4, os.cpu_count() or 1)  # more would only wait on the cores
    out = Path(out)
    if overwrite or not out.exists():  # an existing store needs no forward pass: it is up to date or refused
        check_input_size(source, loaded.model, ConfigTransform(transform), encoder=str(encoder))
    options: dict[str, Any] = {
        "spec": spec,
        "batch_size": batch_size,
        "workers": workers,
        "device": torch_device,
        "dtype": dtype,
        "overwrite": overwrite,
        "skip_bad": skip_bad,
        "progress": progress,
        "extra_attrs": {
            "encoder_spec": str(encoder),
            "encoder_preset": loaded.preset,
            "weights": loaded.weights,
        },
    }
    if ranks.distributed:
        result = embed_sharded(source, loaded.model, ConfigTransform(transform), out, ranks=ranks, **options)
    else:
        result = embed(source, loaded.model, ConfigTransform(transform), out, **options)
    return dataclasses.replace(result, dtype=dtype, processes=ranks.world_size, is_main=ranks.is_main)


def check_input_size(
    source: ImageSource, model: nn.Module, transform: Callable[[Image.Image], torch.Tensor], *, encoder: str
) -> None:
    """Run ``model`` on the first readable image: an input size it rejects is an error naming image_size.

    A timm ViT, for one, accepts only the image size its patch grid was built for; found here, it
    is one line before any work instead of an assertion deep in the model.
    """
    for index in range(min(len(source), 16)):
        try:
            image = source[index].image
        except BadImageError:
            continue
        x = transform(image).unsqueeze(0)
        try:
            with torch.inference_mode():
                model(x)
        except (AssertionError, RuntimeError, ValueError) as err:
            reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
            side = "x".join(map(str, x.shape[-2:]))
            raise ParameterError(
                "image_size",
                f"gives {side} pixel inputs, which {encoder} does not accept ({reason}); "
                "use the size the encoder was made for",
            ) from None
        return


def _check_counts(batch_size: int, workers: int) -> None:
    if batch_size < 1:
        raise ParameterError("batch_size", f"must be at least 1, got {batch_size}")
    if workers < 0:
        raise ParameterError("workers", f"must be 0 or more, got {workers}")


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
    first: tuple[str, tuple[int, ...]] | None = None  # the first image's id and shape
    with (
        make_progress(ImagesPerSecond(), disable=not progress) as bar,
        torch.inference_mode(),
    ):
        task = bar.add_task(description, total=total, completed=done)
        for batch, rows in _batches(loader, model, device):
            if batch.bad and not skip_bad:
                raise ImpulsesError(
                    f"is off, so an unreadable image stops the run: {batch.bad[0][1]}", param="skip_bad"
                )
            if batch.shapes:
                raise _size_error(
                    batch.shapes[0], next(s for s in batch.shapes if s[1] != batch.shapes[0][1])
                )
            if batch.images is not None:
                shape = (batch.ids[0], tuple(batch.images.shape[1:]))
                first = first or shape
                if shape[1] != first[1]:
                    raise _size_error(first, shape)
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
