"""Shared test helpers: run the CLI in-process exactly as the console script does."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from impulses.cli import main

# Fashion-MNIST IDX files for the tests that read the real data; skipped (with the reason) where absent.
FASHION_ROOT = Path(
    os.environ.get(
        "IMPULSES_FASHION_MNIST", Path(__file__).resolve().parents[2] / "shared/data/fashion-mnist"
    )
)


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]):
    """``cli("train-head", "--train", ...)`` -> CliResult(code, stdout, stderr), via ``impulses.cli.main``."""

    def run(*args: object) -> CliResult:
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        out = capsys.readouterr()
        return CliResult(code, out.out, out.err)

    return run


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
