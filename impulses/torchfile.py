"""torch.save's file format, written and read without torch, for plain values and numpy arrays.

``heads.pt`` is read with ``torch.load(path, weights_only=True)``, but writing it with torch.save
would import torch: about a second, as long as a one-head run trains with the numba kernels. The
payload is a dict of plain values and two arrays, so it is written here in the format torch.save
writes (serialization format 3, torch/serialization.py), which every torch since 1.6 reads:

- a zip archive with stored (uncompressed) entries under one folder, ``data.pkl`` first;
- ``data.pkl``: a protocol-2 pickle of the payload where each array is
  ``torch._utils._rebuild_tensor_v2(storage, 0, shape, stride, False, collections.OrderedDict())``
  and each storage the persistent id ``("storage", torch.<Type>Storage, key, "cpu", numel)``;
- ``data/<key>``: each storage's bytes, little-endian, aligned to 64 bytes in the file (as torch
  aligns them, so ``torch.load(..., mmap=True)`` works too);
- ``byteorder`` ("little"), ``version`` ("3"), ``.format_version``, ``.storage_alignment`` and
  ``.data/serialization_id``.

Only dicts, lists, tuples, strings, numbers, booleans, None, numpy scalars (stored as Python
numbers) and numpy arrays of the dtypes in :data:`STORAGES` are written; anything else raises
``TypeError`` and the caller falls back to torch.save. Tests read every file back with
``torch.load(weights_only=True)`` and compare it with torch.save's.

:func:`load` reads such files (ours or torch.save's) back, tensors as numpy arrays, with an
unpickler that knows only the names above (as ``weights_only`` does, nothing else is imported or
called); a file in any other form raises :class:`NotReadable`, and the caller asks torch.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

STORAGES = {
    np.dtype(np.float32): "FloatStorage",
    np.dtype(np.float64): "DoubleStorage",
    np.dtype(np.float16): "HalfStorage",
    np.dtype(np.int64): "LongStorage",
    np.dtype(np.int32): "IntStorage",
    np.dtype(np.int16): "ShortStorage",
    np.dtype(np.int8): "CharStorage",
    np.dtype(np.uint8): "ByteStorage",
    np.dtype(np.bool_): "BoolStorage",
}
ALIGNMENT = 64  # torch's storage alignment
_PLAIN = (dict, list, tuple, str, int, float, bool, type(None))


class _Global:
    """A module-level name written as a pickle GLOBAL without importing its module."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name

    def __call__(self) -> None:  # pickle's save_reduce requires a callable
        raise TypeError(f"{self.module}.{self.name} is only a name here")


class _Storage:
    """One array's bytes, pickled as a persistent id naming ``data/<key>``."""

    def __init__(self, key: str, array: np.ndarray) -> None:
        self.key, self.array = key, array


_REBUILD_TENSOR = _Global("torch._utils", "_rebuild_tensor_v2")
_ORDERED_DICT = _Global("collections", "OrderedDict")


class _Pickler(pickle._Pickler):  # the Python pickler: its dispatch table can write the names above
    dispatch = pickle._Pickler.dispatch.copy()

    def __init__(self, file: io.BytesIO) -> None:
        super().__init__(file, protocol=2)
        self.storages: list[_Storage] = []

    def save(self, obj: Any, save_persistent_id: bool = True) -> None:
        if isinstance(obj, np.generic) and not isinstance(obj, np.ndarray):
            obj = obj.item()
        if not isinstance(obj, (*_PLAIN, np.ndarray, _Global, _Storage)):
            raise TypeError(f"{type(obj).__name__} is not written by impulses.torchfile")
        super().save(obj, save_persistent_id)

    def persistent_id(self, obj: Any) -> tuple | None:
        if isinstance(obj, _Storage):
            storage = _Global("torch", STORAGES[obj.array.dtype])
            return ("storage", storage, obj.key, "cpu", int(obj.array.size))
        return None

    def _save_global(self, obj: _Global) -> None:
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
        self.memoize(obj)

    def _save_array(self, obj: np.ndarray) -> None:
        if obj.dtype.newbyteorder("=") not in STORAGES:
            raise TypeError(f"arrays of {obj.dtype} are not written by impulses.torchfile")
        array = np.ascontiguousarray(obj).astype(obj.dtype.newbyteorder("<"), copy=False)
        storage = _Storage(str(len(self.storages)), array)
        self.storages.append(storage)
        stride = tuple(int(s) // array.itemsize for s in array.strides)
        empty = pickle.EMPTY_TUPLE
        self.save(_REBUILD_TENSOR)
        self.write(pickle.MARK)
        self.save(storage)
        self.save(0)
        self.save(tuple(int(n) for n in array.shape))
        self.save(stride)
        self.save(False)
        self.save(_ORDERED_DICT)
        self.write(empty + pickle.REDUCE)
        self.write(pickle.TUPLE + pickle.REDUCE)
        self.memoize(obj)

    dispatch[_Global] = _save_global
    dispatch[np.ndarray] = _save_array


def _padding(offset: int, name: str) -> bytes:
    """A zip extra field that puts the entry's data, after a local header at ``offset``, on ALIGNMENT."""
    start = offset + 30 + len(name.encode()) + 4  # local header, name, the extra field's own header
    pad = -start % ALIGNMENT
    return struct.pack("<HH", 0x4246, pad) + b"Z" * pad


def dump(payload: Any, file: Path | io.BufferedIOBase, archive: str = "archive") -> None:
    """Write ``payload`` as torch.save(payload, file) would, without torch.

    Raises:
        TypeError: the payload holds a value this writer does not handle (see the module docstring).
    """
    pickled = io.BytesIO()
    pickler = _Pickler(pickled)
    pickler.dump(payload)
    data = pickled.getvalue()
    digest = hashlib.sha256(data)
    for storage in pickler.storages:
        digest.update(storage.array.tobytes())
    records = [
        ("data.pkl", data),
        (".format_version", b"1"),
        (".storage_alignment", str(ALIGNMENT).encode()),
        ("byteorder", b"little"),
        *((f"data/{s.key}", s.array.tobytes()) for s in pickler.storages),
        ("version", b"3\n"),
        (".data/serialization_id", str(int(digest.hexdigest(), 16))[:40].encode()),
    ]
    with zipfile.ZipFile(file, "w", compression=zipfile.ZIP_STORED) as archive_file:
        for name, content in records:
            info = zipfile.ZipInfo(f"{archive}/{name}", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED
            info.extra = _padding(archive_file.fp.tell(), info.filename)
            archive_file.writestr(info, content)


class NotReadable(Exception):
    """A file :func:`load` does not read (another format, or a name beyond tensors and plain values)."""


_NAMES = {name: dtype for dtype, name in STORAGES.items()}


class _StorageType:
    """What the unpickler gives for ``torch.<Type>Storage``: the dtype of its storages."""

    def __init__(self, dtype: np.dtype) -> None:
        self.dtype = dtype


def _rebuild_tensor(
    storage: np.ndarray, offset: int, size: tuple, stride: tuple, *_: Any
) -> np.ndarray:  # requires_grad, hooks (and metadata) do not apply to arrays
    """``torch._utils._rebuild_tensor_v2`` for numpy: the view it describes, copied, bounds checked."""
    size, stride = tuple(int(n) for n in size), tuple(int(n) for n in stride)
    if any(n < 0 for n in size) or any(n < 0 for n in stride) or offset < 0:
        raise NotReadable("a tensor with negative sizes or strides")
    if all(size):
        last = offset + sum((n - 1) * st for n, st in zip(size, stride, strict=True))
        if last >= len(storage):
            raise NotReadable("a tensor outside its storage")
    view = np.lib.stride_tricks.as_strided(
        storage[offset:], shape=size, strides=[st * storage.itemsize for st in stride]
    )
    return np.array(view)


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, archive: zipfile.ZipFile, prefix: str) -> None:
        super().__init__(file)
        self.archive, self.prefix = archive, prefix
        self.storages: dict[str, np.ndarray] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if (module, name) == ("collections", "OrderedDict"):
            return dict
        if module == "torch" and name in _NAMES:
            return _StorageType(_NAMES[name])
        raise NotReadable(f"{module}.{name}")

    def persistent_load(self, pid: Any) -> np.ndarray:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise NotReadable(f"persistent id {pid!r}")
        _, kind, key, _, numel = pid
        if not isinstance(kind, _StorageType):
            raise NotReadable("a storage of an unknown type")
        if key not in self.storages:
            data = self.archive.read(f"{self.prefix}/data/{key}")
            if len(data) != int(numel) * kind.dtype.itemsize:
                raise NotReadable(f"storage {key} holds {len(data)} bytes, not {numel} values")
            self.storages[key] = np.frombuffer(data, dtype=kind.dtype.newbyteorder("<"))
        return self.storages[key]


def load(file: Path | str) -> Any:
    """What :func:`dump` (or torch.save, for tensors and plain values) wrote; tensors as numpy arrays.

    Raises:
        NotReadable: not a zip archive of that format, a big-endian one, or a name it does not know.
        OSError: the file cannot be read.
    """
    try:
        with zipfile.ZipFile(file) as archive:
            names = archive.namelist()
            prefix = names[0].split("/", 1)[0] if names and "/" in names[0] else None
            if prefix is None or f"{prefix}/data.pkl" not in names:
                raise NotReadable("no data.pkl")
            if f"{prefix}/byteorder" in names and archive.read(f"{prefix}/byteorder") != b"little":
                raise NotReadable("big-endian storages")
            data = archive.read(f"{prefix}/data.pkl")
            return _Unpickler(io.BytesIO(data), archive, prefix).load()
    except (zipfile.BadZipFile, pickle.UnpicklingError, EOFError, KeyError, ValueError) as err:
        raise NotReadable(str(err)) from None
