"""Plots: valid PNG files for the AUC-over-epochs and t-SNE figures, and clear errors on bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from matplotlib.image import imread

from impulses.errors import ImpulsesError
from impulses.plots import auc_history_table, plot_auc_over_epochs, plot_tsne
from impulses.pu.sweep import DISTORTIONS

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_shape(path: Path) -> tuple[int, int]:
    """(height, width) of a PNG, decoded by matplotlib (fails on a broken file)."""
    assert path.read_bytes()[:8] == PNG_MAGIC
    image = imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    return image.shape[0], image.shape[1]


def synthetic_history(seeds: int = 2, epochs: int = 5) -> list[dict]:
    rng = np.random.default_rng(0)
    return [
        {"head": f"b{b}-seed{seed}", "distortion": b, "epoch": epoch, "auc": 0.8 + 0.02 * epoch - 0.01 * abs(np.log(b))
         + 0.005 * rng.normal()}
        for b in DISTORTIONS for seed in range(seeds) for epoch in range(1, epochs + 1)
    ]  # fmt: skip


# --------------------------------------------------------------------------------------------------
# AUC over epochs
# --------------------------------------------------------------------------------------------------
def test_auc_plot_accepts_rows_columns_and_frames(tmp_path):
    rows = synthetic_history()
    columns = {key: [row[key] for row in rows] for key in rows[0]}
    shapes = {
        plot_auc_over_epochs(history, tmp_path / f"auc_{kind}.png").name: png_shape(
            tmp_path / f"auc_{kind}.png"
        )
        for kind, history in (("rows", rows), ("columns", columns), ("frame", pl.DataFrame(rows)))
    }
    assert len(set(shapes.values())) == 1  # the same figure whatever the input container
    assert sorted(p.name for p in tmp_path.iterdir()) == ["auc_columns.png", "auc_frame.png", "auc_rows.png"]


def test_auc_plot_draws_one_panel_per_panel_value(tmp_path):
    rows = synthetic_history(seeds=1)
    both = [{**row, "panel": panel} for panel in ("imbnnPU", "nnPU") for row in rows]
    _, one_width = png_shape(plot_auc_over_epochs(rows, tmp_path / "one.png"))
    _, two_width = png_shape(plot_auc_over_epochs(both, tmp_path / "two.png"))
    assert two_width > 1.5 * one_width


def test_auc_plot_tolerates_nan_auc(tmp_path):
    rows = synthetic_history(seeds=1)
    rows[3]["auc"] = float("nan")
    png_shape(plot_auc_over_epochs(rows, tmp_path / "nan.png"))


@pytest.mark.parametrize(
    ("history", "message"),
    [
        ([], "AUC history is empty"),
        ({"distortion": [], "epoch": [], "auc": []}, "AUC history is empty"),
        ([{"distortion": 1.0, "epoch": 1}], "lacks column.*auc"),
        ([{"distortion": "x", "epoch": 1, "auc": 0.5}], "must be numbers"),
    ],
)
def test_auc_plot_errors(tmp_path, history, message):
    with pytest.raises(ImpulsesError, match=message):
        plot_auc_over_epochs(history, tmp_path / "auc.png")
    assert not list(tmp_path.iterdir())


def test_plots_must_be_png(tmp_path):
    with pytest.raises(ImpulsesError, match=r"auc.jpg: plots are written as PNG"):
        plot_auc_over_epochs(synthetic_history(seeds=1, epochs=2), tmp_path / "auc.jpg")


def test_auc_history_table_from_a_sweep_history():
    history = pl.DataFrame(
        {
            "head": ["a", "b", "c", "a", "b", "c"],
            "loss": ["imbnnpu", "imbnnpu", "bce"] * 2,
            "distortion": [1.0, 0.5, None] * 2,
            "label_set": ["s", "s", "s"] * 2,
            "seed": [0, 1, 0] * 2,
            "epoch": [1, 1, 1, 2, 2, 2],
            "auc": [0.7, 0.6, 0.9, 0.8, None, 0.95],
        }
    )
    table = auc_history_table(history, head=("label_set", "seed"), panel="loss")
    assert table.to_dicts() == [  # the prior-free head and the epoch without an AUC are left out
        {"distortion": 1.0, "epoch": 1, "auc": 0.7, "head": "s/0", "panel": "imbnnpu"},
        {"distortion": 0.5, "epoch": 1, "auc": 0.6, "head": "s/1", "panel": "imbnnpu"},
        {"distortion": 1.0, "epoch": 2, "auc": 0.8, "head": "s/0", "panel": "imbnnpu"},
    ]
    with pytest.raises(ImpulsesError, match="lacks column"):
        auc_history_table(history.drop("auc"))


# --------------------------------------------------------------------------------------------------
# t-SNE
# --------------------------------------------------------------------------------------------------
def blobs(n_per_class: int = 40, n_classes: int = 3, dim: int = 60, seed: int = 0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 6, (n_classes, dim))
    targets = np.repeat(np.arange(n_classes), n_per_class)
    return centers[targets] + rng.normal(size=(targets.size, dim)), targets


def test_tsne_plot_writes_a_png(tmp_path):
    X, targets = blobs()
    path = plot_tsne(
        X, targets, targets == 0, tmp_path / "tsne.png", class_names=["a", "b", "c"], max_iter=250
    )
    height, width = png_shape(path)
    assert width > height  # two panels side by side


def test_tsne_subsamples_large_inputs(tmp_path, monkeypatch):
    import sklearn.manifold

    seen: list[tuple[int, int]] = []
    real = sklearn.manifold.TSNE

    class Recording(real):
        def fit_transform(self, X, y=None):
            seen.append(X.shape)
            return super().fit_transform(X, y)

    monkeypatch.setattr(sklearn.manifold, "TSNE", Recording)
    X, targets = blobs(n_per_class=100)
    targets[:5] = -1  # unknown classes are drawn in grey, not an error
    plot_tsne(X, targets, targets == 1, tmp_path / "tsne.png", max_points=90, max_iter=250)
    assert seen == [(90, 50)]  # 90 of 300 rows, reduced from 60 to 50 dimensions by PCA


@pytest.mark.parametrize(
    ("n", "targets_n", "bad", "message"),
    [
        (4, 4, False, "at least 5 points"),
        (20, 19, False, "20 embeddings but 19 targets"),
        (20, 20, True, "NaN or Inf"),
    ],
)
def test_tsne_errors(tmp_path, n, targets_n, bad, message):
    X = np.random.default_rng(0).normal(size=(n, 4))
    if bad:
        X[3, 1] = np.nan
    with pytest.raises(ImpulsesError, match=message):
        plot_tsne(X, np.zeros(targets_n, dtype=int), np.zeros(n, dtype=bool), tmp_path / "tsne.png")
    assert not list(tmp_path.iterdir())
