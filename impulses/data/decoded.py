"""Decode once: a source's images at the working resolution as one uint8 array, on disk or in memory.

Pretraining reads every image once per epoch; re-decoding JPEGs and resizing them each time costs
more than the model at 32 px. :func:`decode_source` runs the deterministic geometric step of the
test transform (mode -> L or RGB, resize the short side, centre crop: :func:`decode_image`) once per
image and keeps the result as a ``(N, S, S, C)`` uint8 array with the targets.

On disk (``path`` given) it is a folder::

    PATH/images.npy    (N, S, S, C) uint8, read memory-mapped
    PATH/targets.npy   (N,) int64
    PATH/meta.json     format, version, fingerprint, spec, n, image_size, channels

The fingerprint hashes the source's ``digest``, the resolution and the channels. The folder is
written as ``PATH.partial`` in chunks (``meta.json`` records the rows done after each chunk), so an
interrupted run resumes where it stopped; it is renamed to ``PATH`` when complete. A folder (or
partial folder) with another fingerprint is refused, never reused: the same discipline as the
embedding store. Sources without a ``digest`` are decoded into memory only.

For a test transform of the same size with ``crop_pct`` 1, ``decode_image`` followed by scaling to
[0, 1] and normalising gives exactly the transform's tensor, so training, the kNN monitor and
embedding can all read the decoded array.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from impulses.atomic import atomic_path
from impulses.data.sources import ImageSource, Sample
from impulses.errors import ImpulsesError, ParameterError

FORMAT = "impulses.decoded"
FORMAT_VERSION = 1
DEFAULT_MAX_SIDE = 96  # decode once by default up to this working resolution (N x 27 KB at 96 px RGB)
META_NAME = "meta.json"


def convert_mode(image: Image.Image, channels: int) -> Image.Image:
    """Grayscale to RGB when 3 channels are wanted, colour to L when 1 is."""
    if channels not in (1, 3):
        raise ParameterError("in_chans", f"must be 1 (grayscale) or 3 (RGB), got {channels}")
    mode = "RGB" if channels == 3 else "L"
    return image if image.mode == mode else image.convert(mode)


def decode_image(
    image: Image.Image,
    *,
    image_size: int | None,
    channels: int,
    crop_pct: float = 1.0,
    interpolation: str = "bilinear",
) -> Image.Image:
    """The geometric part of the test transform: mode, short side to ``image_size / crop_pct``, centre crop.

    ``image_size`` None keeps the native size (only the mode changes).
    """
    from torchvision.transforms import InterpolationMode, v2

    image = convert_mode(image, channels)
    if not image_size:
        return image
    resized = v2.Resize(
        round(image_size / crop_pct), interpolation=InterpolationMode(interpolation), antialias=True
    )(image)
    return v2.CenterCrop(image_size)(resized)


def decode_array(image: Image.Image, *, image_size: int, channels: int) -> np.ndarray:
    """:func:`decode_image` as a ``(S, S, C)`` uint8 array."""
    array = np.array(decode_image(image, image_size=image_size, channels=channels), dtype=np.uint8)
    return array.reshape(image_size, image_size, channels)


def decoded_fingerprint(source: ImageSource, image_size: int, channels: int) -> str:
    """sha256 of what the decoded array is made of: the source's content digest, its length, size, channels."""
    record = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "digest": source.digest,
        "n": len(source),
        "image_size": image_size,
        "channels": channels,
    }
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


@dataclass
class DecodedImages:
    """``(N, S, S, C)`` uint8 images and their ``(N,)`` targets, memory-mapped when read from ``path``.

    Pickles without its array when it lives on disk (DataLoader workers reopen the memory map).
    """

    image_size: int
    channels: int
    targets: np.ndarray
    path: Path | None = None
    fingerprint: str | None = None
    _images: np.ndarray | None = field(default=None, repr=False)

    @property
    def images(self) -> np.ndarray:
        """The decoded images, memory-mapped from ``path`` on first use."""
        if self._images is None:
            if self.path is None:
                raise ImpulsesError("decoded images: neither an array nor a path")
            self._images = np.load(self.path / "images.npy", mmap_mode="r")
        return self._images

    def __len__(self) -> int:
        return len(self.targets)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if self.path is not None:
            state["_images"] = None
        return state

    def batch(self, indices: Any) -> tuple[Any, Any]:
        """uint8 images ``(B, S, S, C)`` and int64 targets ``(B,)`` of rows ``indices``, as torch tensors."""
        import torch

        rows = np.asarray(indices, dtype=np.int64)
        return torch.from_numpy(np.ascontiguousarray(self.images[rows])), torch.from_numpy(self.targets[rows])


def _meta(source: ImageSource, image_size: int, channels: int, fingerprint: str, rows_done: int) -> dict:
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "fingerprint": fingerprint,
        "spec": getattr(source, "spec", None),
        "n": len(source),
        "image_size": image_size,
        "channels": channels,
        "rows_done": rows_done,
    }


def _write_meta(folder: Path, meta: dict) -> None:
    with atomic_path(folder / META_NAME) as tmp:
        tmp.write_text(json.dumps(meta, indent=2) + "\n")


def _save_targets(folder: Path, targets: np.ndarray) -> None:
    with atomic_path(folder / "targets.npy") as tmp, open(tmp, "wb") as f:
        np.save(f, targets)


def _read_meta(folder: Path) -> dict | None:
    try:
        meta = json.loads((folder / META_NAME).read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("format") == FORMAT else None


def open_decoded(path: str | os.PathLike[str], *, fingerprint: str | None = None) -> DecodedImages:
    """A complete decoded folder; with ``fingerprint``, refused unless it was made from those data.

    Raises:
        ImpulsesError: the folder is missing, incomplete, not a decoded folder or stale.
    """
    folder = Path(path)
    meta = _read_meta(folder)
    if meta is None or not (folder / "images.npy").is_file():
        raise ImpulsesError(f"{folder}: not a decoded image folder (no {META_NAME} / images.npy)")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ImpulsesError(
            f"{folder}: decoded format_version {meta.get('format_version')!r} is not supported"
        )
    if fingerprint is not None and meta.get("fingerprint") != fingerprint:
        raise ImpulsesError(
            f"{folder}: decoded from other data or settings (fingerprint {str(meta.get('fingerprint'))[:12]}, "
            f"expected {fingerprint[:12]}); delete it or decode elsewhere"
        )
    if meta.get("rows_done") != meta.get("n"):
        raise ImpulsesError(f"{folder}: incomplete ({meta.get('rows_done')} of {meta.get('n')} rows)")
    return DecodedImages(
        int(meta["image_size"]),
        int(meta["channels"]),
        np.load(folder / "targets.npy"),
        path=folder,
        fingerprint=meta["fingerprint"],
    )


class DecodeRows:
    """Items ``(S, S, C)`` uint8 array and target of a source (decoded in DataLoader workers)."""

    def __init__(self, source: ImageSource, image_size: int, channels: int) -> None:
        self.source, self.image_size, self.channels = source, image_size, channels

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        item = self.source[index]
        return decode_array(item[0], image_size=self.image_size, channels=self.channels), int(item[-1])


def _collate_rows(items: list[tuple[np.ndarray, int]]) -> tuple[np.ndarray, np.ndarray]:
    return np.stack([a for a, _ in items]), np.array([t for _, t in items], dtype=np.int64)


def _decode_chunks(
    source: ImageSource, image_size: int, channels: int, start: int, chunk_rows: int, workers: int
) -> Any:
    """Yield ``(row, images, targets)`` chunks of the source from row ``start`` on, in order."""
    from torch.utils.data import DataLoader, Subset

    rows = range(start, len(source))
    loader = DataLoader(
        Subset(DecodeRows(source, image_size, channels), rows),  # type: ignore[arg-type]
        batch_size=chunk_rows,
        num_workers=workers,
        collate_fn=_collate_rows,
    )
    row = start
    for images, targets in loader:
        yield row, images, targets
        row += len(targets)


def decode_source(
    source: ImageSource,
    *,
    image_size: int,
    channels: int,
    path: str | os.PathLike[str] | None = None,
    chunk_rows: int = 1024,
    workers: int = 0,
    on_chunk: Callable[[int, int], None] | None = None,
) -> DecodedImages:
    """Every image of ``source`` through :func:`decode_image`, once, as a :class:`DecodedImages`.

    Args:
        source: Any map-style source of ``(image, ..., target)``; one with a ``digest`` can go to disk.
        image_size: The working resolution S (square).
        channels: 1 (L) or 3 (RGB).
        path: Folder to materialise into (reused when complete and current, resumed when partial);
            None decodes into memory.
        chunk_rows: Rows decoded and committed at a time.
        workers: DataLoader worker processes that decode.
        on_chunk: Called with (rows done, total rows) after each chunk.

    Returns:
        The decoded images, memory-mapped from ``path`` when one is given.

    Raises:
        ParameterError: bad sizes, or ``path`` for a source without a digest.
        ImpulsesError: ``path`` (or ``path.partial``) holds another source's or resolution's images.
    """
    if image_size < 1:
        raise ParameterError("image_size", f"must be at least 1, got {image_size}")
    if chunk_rows < 1:
        raise ParameterError("chunk_rows", f"must be at least 1, got {chunk_rows}")
    convert_mode(Image.new("L", (1, 1)), channels)  # validates channels
    n = len(source)
    report = on_chunk or (lambda _done, _total: None)
    if path is None:
        images = np.empty((n, image_size, image_size, channels), dtype=np.uint8)
        targets = np.empty(n, dtype=np.int64)
        for row, chunk, chunk_targets in _decode_chunks(source, image_size, channels, 0, chunk_rows, workers):
            images[row : row + len(chunk)] = chunk
            targets[row : row + len(chunk)] = chunk_targets
            report(row + len(chunk), n)
        return DecodedImages(image_size, channels, targets, _images=images)

    if not hasattr(source, "digest"):
        raise ParameterError(
            "path", "needs a source with a digest (to recognise stale data); decode in memory"
        )
    folder = Path(path)
    fingerprint = decoded_fingerprint(source, image_size, channels)
    if folder.exists():
        return open_decoded(folder, fingerprint=fingerprint)
    partial = folder.with_name(folder.name + ".partial")
    meta = _read_meta(partial) if partial.exists() else None
    if partial.exists() and (meta is None or meta.get("fingerprint") != fingerprint):
        raise ImpulsesError(
            f"{partial}: an interrupted decode of other data or settings; delete it or decode elsewhere"
        )
    if meta is None:
        if partial.exists():
            shutil.rmtree(partial)
        partial.mkdir(parents=True)
        np.lib.format.open_memmap(
            partial / "images.npy", mode="w+", dtype=np.uint8, shape=(n, image_size, image_size, channels)
        ).flush()
        _save_targets(partial, np.full(n, -1, dtype=np.int64))
        meta = _meta(source, image_size, channels, fingerprint, 0)
        _write_meta(partial, meta)
    start = int(meta["rows_done"])
    images = np.lib.format.open_memmap(partial / "images.npy", mode="r+")
    targets = np.load(partial / "targets.npy")
    report(start, n)
    for row, chunk, chunk_targets in _decode_chunks(source, image_size, channels, start, chunk_rows, workers):
        end = row + len(chunk)
        images[row:end] = chunk
        images.flush()
        targets[row:end] = chunk_targets
        _save_targets(partial, targets)
        _write_meta(partial, {**meta, "rows_done": end})  # committed: a restart continues after `end`
        report(end, n)
    del images
    os.replace(partial, folder)  # complete: the folder appears under its final name at once
    return open_decoded(folder, fingerprint=fingerprint)


class DecodedSource(ImageSource):
    """A source served from its decoded array: the same ids, targets, spec and digest as ``base``.

    Its images are ``base``'s after :func:`decode_image`, so a test transform of the same size (crop_pct
    1) gives the same tensors as on ``base`` without decoding the files again.
    """

    def __init__(self, base: ImageSource, decoded: DecodedImages) -> None:
        if len(decoded) != len(base):
            raise ParameterError("decoded", f"has {len(decoded)} rows, the source {len(base)}")
        self.base, self.decoded = base, decoded
        self.spec = base.spec
        self.class_names = base.class_names

    def __len__(self) -> int:
        return len(self.decoded)

    def _get(self, index: int) -> Sample:
        array = self.decoded.images[index]
        image = Image.fromarray(array[..., 0] if self.decoded.channels == 1 else np.asarray(array))
        return Sample(image, self.base.sample_id(index), int(self.decoded.targets[index]))

    def sample_id(self, index: int) -> str:
        """The base source's id of item ``index``."""
        return self.base.sample_id(index)

    @property
    def digest(self) -> str:
        """The base source's digest (the decoded copy holds the same samples)."""
        return self.base.digest
