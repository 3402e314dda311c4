"""WebDataset source ``webdataset:shards/{000000..000099}.tar``: tar shards of samples, read by offset.

A WebDataset shard is a plain tar file whose members are grouped into samples by key: ``a/b.jpg`` and
``a/b.cls`` are the ``jpg`` and ``cls`` of sample ``a/b`` (the key is the member path up to the first
dot of its file name, as in the ``webdataset`` library). The spec is brace-expanded
(``{000000..000099}``, ``{train,val}``) with the ``braceexpand`` package, the one the ``webdataset``
library uses, so a spec reads the same shards here as there.

Design: the embedder needs a map-style source (``len``, item ``i``, ids without decoding, contiguous
row blocks per torchrun rank, resume from ``items_done``), which WebDataset's own streaming
``IterableDataset`` does not offer. So the shards are indexed once, when the source is opened: only
the tar headers are read (``tarfile`` seeks over member data) plus the tiny ``cls``/``label`` members,
and the index (shard, offset and size of each sample's image member, its key and target) is kept in
memory, nowhere on disk. ``src[i]`` then seeks to the image's bytes and reads that one member, so a
sample is streamed on its own and no tar is ever held in memory; a rank reads only its block's bytes.

Ids are ``<shard>/<key>``, the shard named by its path relative to the shards' common folder without
``.tar`` (``000003/sample_17``): stable across runs and machines. The image is the first of the
sample's ``jpg``, ``jpeg``, ``png``, ``webp`` members (then any other image type); the target comes
from a ``cls`` or ``label`` member (integer text, or class names numbered in sorted order), ``-1``
when absent.
"""

from __future__ import annotations

import io
import os
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from impulses.data.manifest import encode_labels, files_digest
from impulses.data.sources import IMAGE_EXTENSIONS, BadImageError, ImageSource, Sample, decode_image_file
from impulses.errors import ImpulsesError

# The image member of a sample: the first of these present (WebDataset's usual names first).
IMAGE_KEYS = (
    "jpg",
    "jpeg",
    "png",
    "webp",
    *(e[1:] for e in IMAGE_EXTENSIONS if e[1:] not in ("jpg", "jpeg", "png", "webp")),
)
LABEL_KEYS = ("cls", "cls.txt", "label", "label.txt")
MAX_LABEL_BYTES = 1024
MAX_OPEN_SHARDS = 16  # file handles kept open per process (reads go shard after shard)
_KEY_EXT = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")  # webdataset's base_plus_ext: key, then extension
_META = re.compile(r"__[^/]*__($|/)")  # webdataset's skip_meta: members such as __index__


@dataclass
class _Shard:
    """One shard's part of the index, filled in by :func:`_index_shard`."""

    keys: list[str] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    kinds: list[int] = field(default_factory=list)  # index into IMAGE_KEYS
    labels: list[str | None] = field(default_factory=list)


def _index_shard(path: Path, label: str) -> _Shard:
    """The samples of one shard, in order, from its tar headers (and label members)."""
    shard = _Shard()
    members: dict[str, tarfile.TarInfo] = {}
    key: str | None = None
    seen: set[str] = set()

    def close_sample(tar: tarfile.TarFile) -> None:
        if key is None:
            return
        if key in seen:
            raise ImpulsesError(
                f"{path}: sample key {key!r} appears twice (its members are not adjacent); ids {label}/{key} would repeat"
            )
        seen.add(key)
        kind = next((k for k, ext in enumerate(IMAGE_KEYS) if ext in members), None)
        if kind is None:
            raise ImpulsesError(
                f"{path}: sample {key!r} has no image member (has {', '.join(sorted(members))}; "
                f"looked for {', '.join(IMAGE_KEYS[:4])}, ...)"
            )
        image = members[IMAGE_KEYS[kind]]
        text = None
        label_member = next((members[k] for k in LABEL_KEYS if k in members), None)
        if label_member is not None:
            if label_member.size > MAX_LABEL_BYTES:
                raise ImpulsesError(
                    f"{path}: {label_member.name} is {label_member.size} bytes, not a class label"
                )
            raw = tar.extractfile(label_member).read()  # type: ignore[union-attr]
            try:
                text = raw.decode("utf-8").strip()
            except UnicodeDecodeError:
                raise ImpulsesError(f"{path}: {label_member.name} is not UTF-8 text") from None
        shard.keys.append(key)
        shard.offsets.append(image.offset_data)
        shard.sizes.append(image.size)
        shard.kinds.append(kind)
        shard.labels.append(text)

    try:
        with tarfile.open(path, "r:") as tar:
            for member in tar:
                if not member.isfile() or _META.match(member.name):
                    continue
                match = _KEY_EXT.match(member.name)
                if match is None:
                    continue  # no extension: not part of any sample (webdataset skips these too)
                member_key, ext = match[1], match[2].lower()
                if member_key != key:
                    close_sample(tar)
                    key, members = member_key, {}
                members.setdefault(ext, member)
            close_sample(tar)
    except (tarfile.TarError, EOFError) as err:
        raise ImpulsesError(
            f"{path}: not a readable uncompressed tar file ({type(err).__name__}: {err}); "
            "compressed shards cannot be read by offset, decompress them"
        ) from None
    except OSError as err:
        raise ImpulsesError(f"{path}: cannot read the shard ({err.strerror or err})") from None
    if not shard.keys:
        raise ImpulsesError(f"{path}: holds no samples")
    return shard


def expand_shards(pattern: str) -> list[Path]:
    """The shard paths a brace pattern names, in its order (``a/{00..02}.tar`` -> three paths).

    Raises:
        ImpulsesError: A pattern naming no file, a repeated shard, or a shard that does not exist.
    """
    from braceexpand import braceexpand

    try:
        paths = [Path(p).expanduser() for p in braceexpand(pattern)]
    except Exception as err:  # braceexpand raises on unbalanced or mixed ranges
        raise ImpulsesError(f"webdataset:{pattern}: cannot expand the braces ({err})") from None
    if not paths or not all(p.name for p in paths):
        raise ImpulsesError(f"webdataset:{pattern}: names no shard files")
    resolved = [p.resolve() for p in paths]
    if len(set(resolved)) != len(resolved):
        repeated = next(p for p in resolved if resolved.count(p) > 1)
        raise ImpulsesError(f"webdataset:{pattern}: names {repeated} more than once")
    missing = [p for p in resolved if not p.is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more of {len(paths)})" if len(missing) > 1 else ""
        raise ImpulsesError(f"webdataset:{pattern}: shard {missing[0]} does not exist{more}")
    return resolved


def shard_labels(paths: list[Path]) -> list[str]:
    """Each shard's name in the ids: its path relative to the shards' common folder, without ``.tar``."""
    common = Path(os.path.commonpath([str(p.parent) for p in paths]))
    labels = []
    for p in paths:
        rel = p.relative_to(common).as_posix()
        labels.append(rel[: -len(".tar")] if rel.lower().endswith(".tar") else rel)
    return labels


class WebDatasetSource(ImageSource):
    """The samples of WebDataset tar shards, in shard order then member order, read by offset.

    Args:
        pattern: Shard path(s), brace-expanded: ``shards/{000000..000099}.tar``; relative to the
            working folder unless absolute.

    Raises:
        ImpulsesError: Missing or unreadable shards (compressed ones included), a sample without an
            image member, a key repeated within a shard; the message names the shard and key.
    """

    def __init__(self, pattern: str) -> None:
        pattern = os.path.abspath(os.path.expanduser(pattern.strip()))
        self.spec = f"webdataset:{pattern}"
        self.shards = expand_shards(pattern)
        self.shard_names = shard_labels(self.shards)
        parts = [_index_shard(p, name) for p, name in zip(self.shards, self.shard_names, strict=True)]
        counts = [len(part.keys) for part in parts]
        self.shard_of = np.repeat(np.arange(len(parts), dtype=np.int32), counts)
        self.offsets = np.array([o for part in parts for o in part.offsets], dtype=np.int64)
        self.sizes = np.array([s for part in parts for s in part.sizes], dtype=np.int64)
        self.kinds = np.array([k for part in parts for k in part.kinds], dtype=np.int8)
        self.keys = [k for part in parts for k in part.keys]
        labels = [label for part in parts for label in part.labels]
        self.targets, self.class_names = encode_labels(labels, self._where, what=self.spec)
        self._files: dict[int, object] = {}
        self._pid: int | None = None
        self._digest: str | None = None

    def _where(self, index: int) -> str:
        return f"sample {self.sample_id(index)!r} (its cls/label member)"

    def __len__(self) -> int:
        return len(self.keys)

    def sample_id(self, index: int) -> str:
        """``<shard name>/<key>``: unique across the shards."""
        return f"{self.shard_names[self.shard_of[index]]}/{self.keys[index]}"

    def _read(self, index: int) -> bytes:
        """The bytes of sample ``index``'s image member (shard files opened once per process)."""
        if self._pid != os.getpid():  # forked into a DataLoader worker: the parent's handles are not ours
            self._files, self._pid = {}, os.getpid()
        shard = int(self.shard_of[index])
        f = self._files.get(shard)
        if f is None:
            if len(self._files) >= MAX_OPEN_SHARDS:
                self.close()
            f = self._files[shard] = open(self.shards[shard], "rb")  # noqa: SIM115 (kept open, closed by close())
        f.seek(int(self.offsets[index]))  # type: ignore[attr-defined]
        return f.read(int(self.sizes[index]))  # type: ignore[attr-defined]

    def _get(self, index: int) -> Sample:
        name = f"{self.shards[self.shard_of[index]]}:{self.keys[index]}.{IMAGE_KEYS[self.kinds[index]]}"
        try:
            data = self._read(index)
        except OSError as err:  # the shard is gone or unreadable since it was indexed
            raise BadImageError(name, f"{type(err).__name__}: {err}") from None
        if len(data) != self.sizes[index]:  # the shard was truncated since it was indexed
            missing = self.sizes[index] - len(data)
            raise BadImageError(name, f"EOFError: the shard ends {missing} bytes early")
        return Sample(
            decode_image_file(io.BytesIO(data), name), self.sample_id(index), int(self.targets[index])
        )

    def close(self) -> None:
        """Close this process's open shard files (reopened on the next read)."""
        if self._pid == os.getpid():
            for f in self._files.values():
                f.close()  # type: ignore[attr-defined]
        self._files = {}

    def __getstate__(self) -> dict[str, object]:
        state = self.__dict__.copy()
        state["_files"], state["_pid"] = {}, None
        return state

    @property
    def digest(self) -> str:
        """sha256 of the pattern's shard names, sizes and mtimes (as a folder's file list is hashed)."""
        if self._digest is None:
            self._digest = files_digest(b"webdataset", self.shard_names, self.shards, what=self.spec)
        return self._digest
