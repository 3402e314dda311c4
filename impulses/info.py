"""Summaries of stores and label sets for ``impulses info``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from impulses.errors import ImpulsesError
from impulses.pu.labels import LABEL_SET_SUFFIXES


def describe(path: Path, *, check: bool = False) -> dict[str, Any]:
    """Summary of a store or a label set, chosen by the file's suffix."""
    if path.suffix.lower() in LABEL_SET_SUFFIXES:
        from impulses.pu.labels import describe_label_set

        return describe_label_set(path)
    return describe_store(path, check=check)


def describe_store(path: Path, *, check: bool = False) -> dict[str, Any]:
    """Metadata, row count and class balance of an embedding store (or the progress of an unfinished one)."""
    from impulses.embed.store import EmbeddingStore, partial_path

    if not path.exists():
        if partial_path(path).exists():
            return describe_partial(partial_path(path))
        raise ImpulsesError(f"{path}: no such file")
    with EmbeddingStore.open(path, check_finite=check) as store:
        meta = store.meta
        summary: dict[str, Any] = {
            "kind": "embedding store",
            "rows": len(store),
            "dim": store.dim,
            "dtype": store.dtype,
        }
        for key in STORE_KEYS:
            if meta.get(key) not in (None, ""):
                summary[key] = meta[key]
        summary["class_balance"] = class_balance(store.targets, store.class_names)
        if store.skipped:
            summary["skipped"] = store.skipped
        if meta.get("shards"):
            summary["shards"] = [f"{shard['path']} ({shard['rows']} rows)" for shard in meta["shards"]]
        if check:
            summary["finite"] = "yes (every row scanned)"
    return summary


STORE_KEYS = (
    "encoder",
    "encoder_spec",
    "encoder_sha256",
    "source",
    "transform",
    "fingerprint",
    "schema_version",
    "impulses_version",
    "created",
)


def describe_partial(path: Path) -> dict[str, Any]:
    """Progress of an unfinished store, so a user can see how far an interrupted run got."""
    import h5py

    from impulses.embed.store import _attr

    try:
        with h5py.File(path, "r", locking=False) as f:
            attrs = {key: _attr(f.attrs, key) for key in f.attrs}
    except OSError as err:
        raise ImpulsesError(f"{path}: not a readable HDF5 file ({err})") from None
    return {
        "kind": "unfinished embedding store (rerun the same command to resume)",
        "rows_done": int(attrs.get("rows_done") or 0),
        "items_done": int(attrs.get("items_done") or 0),
        "capacity": int(attrs.get("capacity") or 0),
        "dtype": attrs.get("dtype"),
        "encoder": attrs.get("encoder"),
        "source": attrs.get("source"),
        "fingerprint": attrs.get("fingerprint"),
        "created": attrs.get("created"),
    }


def class_balance(targets: np.ndarray, class_names: list[str] | None) -> dict[str, int]:
    """Rows per class (by name when known); ``unknown`` counts targets of -1."""
    values, counts = np.unique(targets, return_counts=True)
    balance = {}
    for value, count in zip(values.tolist(), counts.tolist(), strict=True):
        if value < 0:
            key = "unknown"
        elif class_names and value < len(class_names):
            name = class_names[value]
            key = name if name == str(value) else f"{value} {name}"
        else:
            key = str(value)
        balance[key] = count
    return balance
