"""Shared fixtures of the encoder tests: scikit-learn's digits as a map-style image source."""

from __future__ import annotations

from typing import ClassVar, NamedTuple

import numpy as np
import pytest
from PIL import Image


class Item(NamedTuple):
    image: Image.Image
    id: str
    target: int


class DigitsSource:
    """The 1,797 8x8 digits as PIL "L" images (0..16 scaled to 0..255), items ``(image, id, target)``."""

    class_names: ClassVar[list[str]] = [str(d) for d in range(10)]

    def __init__(self, limit: int | None = None) -> None:
        from sklearn.datasets import load_digits

        digits = load_digits()
        self.pixels = (digits.images * 255 / 16).round().astype(np.uint8)[:limit]
        self.targets = digits.target.astype(np.int64)[:limit]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> Item:
        return Item(Image.fromarray(self.pixels[index], "L"), f"digits/all/{index}", int(self.targets[index]))


@pytest.fixture(scope="session")
def digits() -> DigitsSource:
    return DigitsSource()


@pytest.fixture(scope="session")
def digits_small() -> DigitsSource:
    """The first 256 digits: enough for a few fast optimisation steps."""
    return DigitsSource(limit=256)
