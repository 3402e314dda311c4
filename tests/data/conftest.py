"""Fixtures of the data-source tests: the first digits images written as PNG files, one folder per class."""

from __future__ import annotations

from pathlib import Path

import pytest

from impulses.data.sources import open_source

N_DIGITS = 48


@pytest.fixture
def digit_pngs(tmp_path: Path) -> tuple[Path, list[tuple[str, int]]]:
    """``(root, [(relative path, digit), ...])``: digits 0..N-1 as ``root/<digit>/<index>.png``, sorted by path."""
    source = open_source(f"digits[0:{N_DIGITS}]")
    root = tmp_path / "digits"
    files = []
    for i in range(N_DIGITS):
        image, _, target = source[i]
        rel = f"{target}/{i:04d}.png"
        (root / str(target)).mkdir(parents=True, exist_ok=True)
        image.save(root / rel)
        files.append((rel, int(target)))
    return root, sorted(files)
