"""Dataset sources for ``impulses embed``: a spec string -> a map-style source of (image, id, target).

Specs (see :func:`open_source`):

- ``digits``: scikit-learn's 1,797 8x8 digits (bundled with scikit-learn, no download);
- ``fashion-mnist[:train|:test]``: the four IDX files (gzipped or not) under ``data_root``;
- ``cifar10[:train|:test]``, ``cifar100[:train|:test]``: the python pickle batches under ``data_root``;
- ``imagefolder:PATH``: image files under PATH, recursively; one subfolder per class gives targets and
  class names, a flat folder gives targets -1; ids are the paths relative to PATH.
- ``manifest:FILE.csv|.parquet``: the images a table lists (:mod:`impulses.data.manifest`);
- ``webdataset:SHARDS.tar``: WebDataset tar shards, brace-expanded (:mod:`impulses.data.webdataset`).

Any spec may end in a row range, ``fashion-mnist:train[0:5000]``: the same ids, a subset of rows.

Every source has a deterministic order, ``len(src)``, ``src[i] -> Sample``, a canonical ``src.spec``
(what the store records and the fingerprint hashes), ``src.class_names`` and ``src.digest`` (a hash
of the content or, for a folder, of its file list, so changed data never passes for the old data).
Images are decoded in ``__getitem__``, i.e. in DataLoader workers; an image that cannot be read
raises :class:`BadImageError` naming the file.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import re
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

from impulses.catalog import FASHION_MNIST_CLASSES
from impulses.errors import ImpulsesError, ParameterError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm")
DATA_ROOT_ENV = "IMPULSES_DATA_ROOT"
_RANGE = re.compile(r"^(?P<base>.+?)\[(?P<start>\d*):(?P<stop>\d*)\]$")


class Sample(NamedTuple):
    """One source item: a PIL image, its stable id and its class index (-1 when unknown)."""

    image: Image.Image
    id: str
    target: int


class BadImageError(ImpulsesError):
    """An image file that cannot be decoded; ``path`` names it, ``reason`` says why."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: cannot read image ({reason})")
        self.path = path
        self.reason = reason


class ImageSource:
    """A map-style dataset of :class:`Sample` in a fixed order (subclasses implement ``_get``)."""

    spec: str
    class_names: list[str] | None

    def __len__(self) -> int:
        raise NotImplementedError

    def _get(self, index: int) -> Sample:
        raise NotImplementedError

    def sample_id(self, index: int) -> str:
        """The id of item ``index`` without decoding its image (to name an unreadable one)."""
        raise NotImplementedError

    def __getitem__(self, index: int) -> Sample:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"{self.spec}: index {index} out of range for {n} samples")
        return self._get(index % n)

    @property
    def digest(self) -> str:
        """sha256 of what the samples are made of (content, or a folder's file list and sizes)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.spec!r}: {len(self)} samples>"


class ArraySource(ImageSource):
    """Images held in memory as one uint8 array (N, H, W) or (N, H, W, 3); ids ``<dataset>/<split>/<index>``."""

    def __init__(
        self,
        spec: str,
        images: np.ndarray,
        targets: np.ndarray,
        *,
        id_prefix: str,
        class_names: Sequence[str] | None,
    ) -> None:
        if images.dtype != np.uint8 or images.ndim not in (3, 4) or images.shape[0] != len(targets):
            raise ValueError(f"{spec}: images must be uint8 (N,H,W[,3]) with one target each")
        self.spec = spec
        self.images = images
        self.targets = np.asarray(targets, dtype=np.int64)
        self.id_prefix = id_prefix
        self.class_names = list(class_names) if class_names is not None else None
        self._digest: str | None = None

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def _get(self, index: int) -> Sample:
        array = self.images[index]
        image = Image.fromarray(array)  # (H, W) -> L, (H, W, 3) -> RGB
        return Sample(image, self.sample_id(index), int(self.targets[index]))

    def sample_id(self, index: int) -> str:
        """``<id_prefix>/<index>``: the row's position in the array."""
        return f"{self.id_prefix}/{index}"

    @property
    def digest(self) -> str:
        """sha256 of the images' shape, pixels and targets (computed once)."""
        if self._digest is None:
            h = hashlib.sha256()
            h.update(f"{self.images.shape}|".encode())
            h.update(np.ascontiguousarray(self.images).data)
            h.update(np.ascontiguousarray(self.targets).data)
            self._digest = h.hexdigest()
        return self._digest


class ImageFolderSource(ImageSource):
    """Image files under a folder, found recursively and sorted by their path relative to the root.

    With at least one subfolder holding images, each top-level subfolder is a class (sorted names ->
    targets 0..K-1, recorded as class names); a flat folder gives targets -1 and no class names.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        root = Path(root).expanduser()
        if not root.is_dir():
            raise ImpulsesError(f"imagefolder:{root}: no such folder")
        self.root = root.resolve()
        self.spec = f"imagefolder:{self.root}"
        files = _find_images(self.root)
        if not files:
            raise ImpulsesError(
                f"{self.spec}: no image files found (looked for {', '.join(IMAGE_EXTENSIONS)}, recursively)"
            )
        top_level = [f for f in files if "/" not in f]
        nested = [f for f in files if "/" in f]
        if nested and top_level:
            raise ImpulsesError(
                f"{self.spec}: mixes class subfolders with {len(top_level)} image(s) at the top level "
                f"(e.g. {top_level[0]!r}); move them into a class folder or use a flat folder"
            )
        self.files = files
        if nested:
            self.class_names = sorted({f.split("/", 1)[0] for f in files})
            index = {name: i for i, name in enumerate(self.class_names)}
            self.targets = np.array([index[f.split("/", 1)[0]] for f in files], dtype=np.int64)
        else:
            self.class_names = None
            self.targets = np.full(len(files), -1, dtype=np.int64)
        self._digest: str | None = None

    def __len__(self) -> int:
        return len(self.files)

    def _get(self, index: int) -> Sample:
        rel = self.files[index]
        path = self.root / rel
        return Sample(decode_image_file(path, str(path)), rel, int(self.targets[index]))

    def sample_id(self, index: int) -> str:
        """The image's path relative to the folder."""
        return self.files[index]

    @property
    def digest(self) -> str:
        """sha256 of the file list and sizes (cheap: no image is read; computed once)."""
        if self._digest is None:
            h = hashlib.sha256()
            for rel in self.files:
                try:
                    size = (self.root / rel).stat().st_size
                except OSError:
                    size = -1
                h.update(f"{rel}\0{size}\0".encode())
            self._digest = h.hexdigest()
        return self._digest


class RangeSource(ImageSource):
    """Rows ``start:stop`` of another source, same ids (spec ``BASE[start:stop]``)."""

    def __init__(self, base: ImageSource, start: int, stop: int) -> None:
        stop = min(stop, len(base))
        if not 0 <= start < stop:
            raise ImpulsesError(f"{base.spec}[{start}:{stop}]: empty row range ({len(base)} samples)")
        self.base, self.start, self.stop = base, start, stop
        self.spec = f"{base.spec}[{start}:{stop}]"
        self.class_names = base.class_names

    def __len__(self) -> int:
        return self.stop - self.start

    def _get(self, index: int) -> Sample:
        return self.base[self.start + index]

    def sample_id(self, index: int) -> str:
        """The base source's id of item ``start + index``."""
        return self.base.sample_id(self.start + index)

    @property
    def digest(self) -> str:
        """sha256 of the base source's digest and the row range."""
        return hashlib.sha256(f"{self.base.digest}[{self.start}:{self.stop}]".encode()).hexdigest()


def decode_image_file(
    file: str | os.PathLike[str] | io.BufferedIOBase | io.BytesIO, name: str
) -> Image.Image:
    """Decode an image file (a path or a binary file object) now, as mode ``L`` or ``RGB``.

    Raises:
        BadImageError: the file is truncated, corrupt or not an image; the message names ``name``.
    """
    try:
        with Image.open(file) as image:
            image.load()  # decode now: a truncated or corrupt file fails here, with its name
            return _plain_mode(image)
    except Exception as err:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
        raise BadImageError(name, f"{type(err).__name__}: {err}") from None


def _plain_mode(image: Image.Image) -> Image.Image:
    """A decoded image as mode ``L`` (any grayscale) or ``RGB`` (anything else, alpha dropped)."""
    if image.mode in ("L", "RGB"):
        return image.copy()
    if image.mode in ("1", "LA", "La", "I", "I;16", "I;16B", "I;16L", "F"):
        return image.convert("L")
    if image.mode == "P":
        image = image.convert("RGBA")
    return image.convert("RGB")


def _find_images(root: Path) -> list[str]:
    """Relative posix paths of image files under ``root`` (symlinked folders followed once, hidden skipped)."""
    found: list[str] = []
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel_dir = Path(dirpath).relative_to(root)
        for name in filenames:
            if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS):
                found.append((rel_dir / name).as_posix())
    return sorted(found)


# -- built-in datasets ----------------------------------------------------------------------------
def default_data_root() -> Path:
    """``$IMPULSES_DATA_ROOT`` or ``~/.cache/impulses/data``: where ``download`` puts files by default."""
    return Path(os.environ.get(DATA_ROOT_ENV) or Path.home() / ".cache" / "impulses" / "data")


def _digits() -> ArraySource:
    from sklearn.datasets import load_digits

    data = load_digits()
    images = np.rint(data.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    return ArraySource(
        "digits", images, data.target, id_prefix="digits/all", class_names=[str(c) for c in data.target_names]
    )


def read_idx(path: Path) -> np.ndarray:
    """A uint8 IDX file (MNIST format, gzipped when the name ends in .gz) as an array of its shape."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise ImpulsesError(f"{path}: cannot read IDX file ({err})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ImpulsesError(f"{path}: not a uint8 IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if len(raw) != header + int(np.prod(shape)):
        raise ImpulsesError(
            f"{path}: IDX header says shape {shape} but the file holds {len(raw) - header} bytes"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _find_file(dirs: Sequence[Path], stem: str) -> Path | None:
    for d in dirs:
        for name in (stem, stem + ".gz"):
            if (d / name).is_file():
                return d / name
    return None


def _fashion_mnist(split: str, data_root: Path | None, download: bool) -> ArraySource:
    root = data_root or default_data_root()
    dirs = [root, root / "fashion-mnist", root / "FashionMNIST" / "raw"]
    prefix = "train" if split == "train" else "t10k"
    stems = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
    paths = [_find_file(dirs, stem) for stem in stems]
    if None in paths and download:
        import torchvision

        torchvision.datasets.FashionMNIST(str(root), train=split == "train", download=True)
        paths = [_find_file(dirs, stem) for stem in stems]
    if None in paths:
        missing = stems[paths.index(None)]
        given = f"{root}" if data_root else f"not given, so {root}"
        raise ParameterError(
            "data_root",
            f"{given}: fashion-mnist:{split}'s {missing}[.gz] not found in {', '.join(map(str, dirs))}; "
            "point it at the folder holding the four IDX files, or turn on download",
        )
    images, labels = (read_idx(p) for p in paths)  # type: ignore[arg-type]
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise ImpulsesError(
            f"{paths[0]}: {images.shape} images do not match {labels.shape} labels in {paths[1]}"
        )
    return ArraySource(
        f"fashion-mnist:{split}",
        images,
        labels,
        id_prefix=f"fashion-mnist/{split}",
        class_names=FASHION_MNIST_CLASSES,
    )


_CIFAR = {
    # name: (folder, train files, test files, label key, meta file, names key, torchvision class)
    "cifar10": (
        "cifar-10-batches-py",
        [f"data_batch_{i}" for i in range(1, 6)],
        ["test_batch"],
        "labels",
        "batches.meta",
        "label_names",
        "CIFAR10",
    ),
    "cifar100": (
        "cifar-100-python",
        ["train"],
        ["test"],
        "fine_labels",
        "meta",
        "fine_label_names",
        "CIFAR100",
    ),
}


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="latin1")
    except (OSError, pickle.UnpicklingError, EOFError, ValueError) as err:
        raise ImpulsesError(f"{path}: cannot read CIFAR batch ({err})") from None


def _cifar(name: str, split: str, data_root: Path | None, download: bool) -> ArraySource:
    folder, train_files, test_files, label_key, meta_file, names_key, tv_class = _CIFAR[name]
    root = data_root or default_data_root()
    files = train_files if split == "train" else test_files
    candidates = [root / folder, root]
    base = next((d for d in candidates if all((d / f).is_file() for f in files)), None)
    if base is None and download:
        import torchvision

        getattr(torchvision.datasets, tv_class)(str(root), train=split == "train", download=True)
        base = root / folder
    if base is None:
        given = f"{root}" if data_root else f"not given, so {root}"
        raise ParameterError(
            "data_root",
            f"{given}: {name}:{split}'s batch files {files[0]}... not found in {root / folder} or {root}; "
            "point it at the folder holding them, or turn on download",
        )
    chunks, labels = [], []
    for f in files:
        batch = _unpickle(base / f)
        try:
            data = np.asarray(batch["data"], dtype=np.uint8)
            chunks.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            labels.append(np.asarray(batch[label_key], dtype=np.int64))
        except (KeyError, ValueError) as err:
            raise ImpulsesError(f"{base / f}: not a {name} batch ({type(err).__name__}: {err})") from None
    meta_path = base / meta_file
    class_names = list(_unpickle(meta_path)[names_key]) if meta_path.is_file() else None
    return ArraySource(
        f"{name}:{split}",
        np.ascontiguousarray(np.concatenate(chunks)),
        np.concatenate(labels),
        id_prefix=f"{name}/{split}",
        class_names=class_names,
    )


DATASETS = ("digits", "fashion-mnist", "cifar10", "cifar100", "imagefolder", "manifest", "webdataset")


def open_source(
    spec: str, *, data_root: str | os.PathLike[str] | None = None, download: bool = False
) -> ImageSource:
    """The source named by ``spec`` (``digits``, ``fashion-mnist:test``, ``imagefolder:PATH[0:100]``...).

    ``data_root`` is the folder holding the dataset files (default ``$IMPULSES_DATA_ROOT`` or
    ``~/.cache/impulses/data``); ``download`` lets torchvision fetch a missing fashion-mnist/cifar set.
    An unknown spec or missing files raise :class:`ImpulsesError` saying what to pass.
    """
    spec = spec.strip()
    match = _RANGE.match(spec)
    if match:
        base = open_source(match["base"], data_root=data_root, download=download)
        start = int(match["start"] or 0)
        stop = int(match["stop"]) if match["stop"] else len(base)
        return RangeSource(base, start, stop)
    root = Path(data_root).expanduser() if data_root is not None else None
    name, _, arg = spec.partition(":")
    name = name.lower()
    if name == "imagefolder":
        if not arg:
            raise ParameterError("data", "imagefolder:PATH needs a folder path after the colon")
        return ImageFolderSource(arg)
    if name in ("manifest", "webdataset"):  # impulses.data.manifest / .webdataset (they import this module)
        if not arg:
            raise ParameterError(
                "data", f"{spec!r}: {name}: needs a {'file' if name == 'manifest' else 'shard'} path"
            )
        if name == "manifest":
            from impulses.data.manifest import ManifestSource

            return ManifestSource(arg)
        from impulses.data.webdataset import WebDatasetSource

        return WebDatasetSource(arg)
    if name == "digits":
        if arg not in ("", "all"):
            raise ParameterError("data", f"{spec!r}: digits has a single split (use 'digits')")
        return _digits()
    if name in ("fashion-mnist", "cifar10", "cifar100"):
        split = arg.lower() or "train"
        if split not in ("train", "test"):
            raise ParameterError("data", f"{spec!r}: split must be 'train' or 'test', not {arg!r}")
        if name == "fashion-mnist":
            return _fashion_mnist(split, root, download)
        return _cifar(name, split, root, download)
    raise ParameterError(
        "data",
        f"{spec!r} is not a known dataset spec (use digits, fashion-mnist[:train|:test], "
        "cifar10[:train|:test], cifar100[:train|:test], imagefolder:PATH, manifest:FILE.csv|.parquet or "
        "webdataset:SHARDS.tar, optionally ending in [start:stop])",
    )
