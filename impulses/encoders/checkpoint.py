"""The ``impulses pretrain`` checkpoint: one ``torch.save``-d dict in ``DIR/last.pt``, written atomically.

Format (``format_version`` 1)::

    {"format": "impulses.pretrain", "format_version": 1,
     "encoder": {"name", "cifar_stem", "in_chans", "num_features"},
     "preset": str, "transform": dict (the test-transform config),
     "encoder_state", "projector_state", "optimizer_state",
     "epoch": epochs completed, "config": every CLI/hyperparameter,
     "rng": {"python", "numpy", "torch", "cuda"},
     "history": [{"epoch", "loss", "knn_top1", "images_per_s", "seconds"}, ...]}

Only tensors, plain containers and scalars are stored, so it loads with ``weights_only=True``.
"""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from impulses.atomic import atomic_path
from impulses.errors import ImpulsesError

FORMAT = "impulses.pretrain"
FORMAT_VERSION = 1
CHECKPOINT_NAME = "last.pt"
REQUIRED_KEYS = ("encoder", "preset", "transform", "encoder_state", "epoch", "config")


def checkpoint_path(spec: str | os.PathLike[str]) -> Path:
    """``DIR`` -> ``DIR/last.pt``; a file path is returned as is."""
    path = Path(spec)
    return path / CHECKPOINT_NAME if path.is_dir() else path


def save_checkpoint(path: str | os.PathLike[str], checkpoint: dict[str, Any]) -> None:
    """Write ``checkpoint`` to ``path`` via a temporary file and ``os.replace``: never half-written."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, **checkpoint}, f)
        f.flush()
        os.fsync(f.fileno())


def load_checkpoint(
    spec: str | os.PathLike[str], *, map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Read and validate a checkpoint (``DIR`` or ``DIR/last.pt``); problems name the path."""
    path = checkpoint_path(spec)
    if not path.is_file():
        raise ImpulsesError(f"{path}: no such checkpoint file")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # pickle, zip and torch errors alike mean "not one of ours"
        raise ImpulsesError(f"{path}: not a readable checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise ImpulsesError(f"{path}: not an `impulses pretrain` checkpoint (no format={FORMAT!r})")
    if checkpoint.get("format_version") != FORMAT_VERSION:
        raise ImpulsesError(
            f"{path}: checkpoint format_version {checkpoint.get('format_version')!r} is not supported "
            f"(this impulses reads {FORMAT_VERSION})"
        )
    missing = [key for key in REQUIRED_KEYS if key not in checkpoint]
    if missing:
        raise ImpulsesError(f"{path}: checkpoint lacks {', '.join(missing)}")
    return checkpoint


def state_dict_sha256(state: dict[str, torch.Tensor]) -> str:
    """Hex sha256 over a state dict's sorted names, dtypes, shapes and raw bytes (deterministic)."""
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().to("cpu").contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU and CUDA generator states, in weights_only-loadable form."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {
            "name": name,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` saved (CUDA states only where the devices exist)."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(
        (n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
