"""Shared fixtures of the embedding-cache tests: a tiny deterministic encoder, its transform, image folders."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

FASHION_ROOT = Path(os.environ.get("IMPULSES_FASHION_MNIST", "/work/shared/data/fashion-mnist"))
TRANSFORM = {"image_size": 8, "in_chans": 3, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}


class TinyEncoder(nn.Module):
    """conv-BN-ReLU, global average pool: (B, 3, H, W) -> (B, 6), fixed weights from a seed."""

    num_features = 6

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv2d(3, 6, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(6)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=gen))
            self.bn.running_mean.copy_(torch.randn(6, generator=gen) * 0.1)
            self.bn.running_var.copy_(torch.rand(6, generator=gen) + 0.5)
            self.bn.weight.copy_(torch.rand(6, generator=gen) + 0.5)
            self.bn.bias.copy_(torch.randn(6, generator=gen) * 0.1)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x))).mean(dim=(2, 3))


@pytest.fixture
def tiny_encoder() -> TinyEncoder:
    return TinyEncoder()


@pytest.fixture
def transform():
    from impulses.embed.extract import ConfigTransform

    return ConfigTransform(TRANSFORM)


@pytest.fixture
def fashion_root() -> Path:
    if not (FASHION_ROOT / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip(f"Fashion-MNIST IDX files not found in {FASHION_ROOT}")
    return FASHION_ROOT


def write_image(path: Path, seed: int, *, mode: str = "RGB", size: tuple[int, int] = (10, 12)) -> None:
    """A small random image of ``mode`` at ``path`` (format from the suffix)."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode if mode != "P" else "RGB"]
    pixels = rng.integers(0, 256, size=(size[1], size[0], channels), dtype=np.uint8)
    image = Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels)
    if mode == "P":
        image = image.convert("P")
    image.save(path)


@pytest.fixture
def make_folder(tmp_path: Path) -> Callable[..., Path]:
    """``make_folder({"cat/a.png": "RGB", ...})`` -> a folder holding those files.

    Modes: ``RGB``, ``RGBA``, ``L``, ``P`` (random pixels), ``corrupt`` (a PNG signature, then junk),
    ``text`` (a few bytes of text).
    """

    def make(files: dict[str, str], name: str = "images") -> Path:
        root = tmp_path / name
        for i, (rel, mode) in enumerate(sorted(files.items())):
            if mode in ("corrupt", "text"):
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                (root / rel).write_bytes(
                    b"\x89PNG\r\n\x1a\n this is not a png" if mode == "corrupt" else b"notes"
                )
            else:
                write_image(root / rel, i, mode=mode)
        return root

    return make
