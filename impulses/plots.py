"""The paper's figures as PNG files: test AUC over epochs per prior distortion (Fig. 3) and a t-SNE (Fig. 2).

Figures are drawn with matplotlib's object API on the Agg canvas, never through ``pyplot``, so
plotting neither needs a display nor changes the backend of the calling process. Files are written
atomically (a temp file in the same folder, then a rename).

**AUC history** (the input of :func:`plot_auc_over_epochs`): a table in long format, one row per
head and evaluated epoch, as a polars DataFrame, a dict of columns or a list of row dicts:

- ``distortion`` (float): the prior distortion b, the head was trained with prior b·π;
- ``epoch`` (int, 1-based) and ``auc`` (float, test ROC-AUC; NaN draws a gap);
- optional ``head`` (str): the head's label, e.g. a seed or label set (informational);
- optional ``panel`` (str): one subplot per value, e.g. the method or the dataset.

Rows sharing (panel, distortion, epoch), e.g. several seeds, are averaged; the band shows ±1 std.
:func:`auc_history_table` selects this table from a sweep's history
(:attr:`impulses.pu.sweep.SweepResult.history`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from impulses.atomic import atomic_path
from impulses.errors import ImpulsesError

HISTORY_COLUMNS = ("distortion", "epoch", "auc")
TSNE_MAX_POINTS = 2000


# --------------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------------
def _new_figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def _save_png(figure: Any, path: str | os.PathLike[str]) -> Path:
    """Render ``figure`` as PNG to ``path`` atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ImpulsesError(f"{path}: plots are written as PNG, use a .png file name")
    FigureCanvasAgg(figure)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    return path


def _distortion_label(b: float) -> str:
    text = f"{b:g}"
    return f"b = {text} (true π)" if math.isclose(b, 1.0) else f"b = {text}"


# --------------------------------------------------------------------------------------------------
# AUC over epochs (Fig. 3)
# --------------------------------------------------------------------------------------------------
def auc_history_table(
    history: pl.DataFrame, *, head: str | Sequence[str] = "head", panel: str | None = None
) -> pl.DataFrame:
    """The AUC table of :func:`plot_auc_over_epochs` from a sweep's long history frame.

    Args:
        history: :attr:`impulses.pu.sweep.SweepResult.history` (columns distortion, epoch, auc and
            the heads' coordinates); heads without a distortion (prior-free losses) and epochs
            without a test AUC are left out.
        head: The column(s) that label a line's heads, joined by "/" (e.g. ``("label_set", "seed")``).
        panel: The column that picks the subplot (e.g. ``"loss"``), or None for one panel.

    Returns:
        Columns distortion, epoch, auc, head (and panel).
    """
    columns = [head] if isinstance(head, str) else list(head)
    missing = [
        c for c in [*HISTORY_COLUMNS, *columns, *([panel] if panel else [])] if c not in history.columns
    ]
    if missing:
        raise ImpulsesError(
            f"AUC history lacks column(s) {', '.join(missing)} (has: {', '.join(history.columns)})"
        )
    label = pl.concat_str([pl.col(c).cast(pl.String) for c in columns], separator="/").alias("head")
    selected = [
        pl.col("distortion").cast(pl.Float64),
        pl.col("epoch").cast(pl.Int64),
        pl.col("auc").cast(pl.Float64),
        label,
    ]
    if panel:
        selected.append(pl.col(panel).cast(pl.String).alias("panel"))
    rows = history.filter(pl.col("distortion").is_not_null() & pl.col("auc").is_not_null())
    return rows.select(selected)


def _history_frame(
    history: pl.DataFrame | Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]],
) -> pl.DataFrame:
    try:
        frame = history if isinstance(history, pl.DataFrame) else pl.DataFrame(history)
    except Exception as err:  # polars raises several types for ragged or mixed input
        raise ImpulsesError(f"AUC history: not a table ({err})") from None
    missing = [c for c in HISTORY_COLUMNS if c not in frame.columns]
    if frame.height == 0:
        raise ImpulsesError("AUC history is empty: no epoch was evaluated (train with a test set)")
    if missing:
        raise ImpulsesError(
            f"AUC history lacks column(s) {', '.join(missing)} (has: {', '.join(frame.columns)})"
        )
    try:
        return frame.with_columns(
            pl.col("distortion").cast(pl.Float64),
            pl.col("epoch").cast(pl.Int64),
            pl.col("auc").cast(pl.Float64).fill_nan(None),
        )
    except pl.exceptions.PolarsError as err:
        raise ImpulsesError(f"AUC history: distortion, epoch and auc must be numbers ({err})") from None


def plot_auc_over_epochs(
    history: pl.DataFrame | Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]],
    path: str | os.PathLike[str],
    *,
    title: str | None = "Test AUC under a misspecified prior b·π",
) -> Path:
    """Test AUC over epochs, one line per prior distortion b (the paper's Fig. 3); returns the PNG path."""
    from matplotlib import colormaps
    from matplotlib.colors import LogNorm

    frame = _history_frame(history)
    if "panel" not in frame.columns:
        frame = frame.with_columns(pl.lit("").alias("panel"))
    summary = (
        frame.group_by("panel", "distortion", "epoch")
        .agg(pl.col("auc").mean().alias("mean"), pl.col("auc").std().alias("std"), pl.len().alias("n"))
        .sort("panel", "distortion", "epoch")
    )
    panels = summary["panel"].unique(maintain_order=True).to_list()
    distortions = sorted(summary["distortion"].unique().to_list())
    positive = [b for b in distortions if b > 0]
    norm = (
        LogNorm(min(positive), max(positive)) if len(positive) > 1 and min(positive) < max(positive) else None
    )
    cmap = colormaps["coolwarm"]

    figure = _new_figure(5.2 * len(panels) + 1.6, 4.0)
    axes = figure.subplots(1, len(panels), squeeze=False, sharey=True)[0]
    for ax, panel in zip(axes, panels, strict=True):
        rows = summary.filter(pl.col("panel") == panel)
        for b in distortions:
            line = rows.filter(pl.col("distortion") == b)
            epochs = line["epoch"].to_numpy()
            mean = line["mean"].to_numpy().astype(np.float64)
            std = np.nan_to_num(line["std"].to_numpy().astype(np.float64))
            true_prior = math.isclose(b, 1.0)
            color = "black" if true_prior or norm is None or b <= 0 else cmap(norm(b))
            ax.plot(
                epochs,
                mean,
                color=color,
                linewidth=2.2 if true_prior else 1.4,
                marker="o" if epochs.size < 12 else None,
                markersize=3,
                label=_distortion_label(b),
            )
            if (line["n"].to_numpy() > 1).any():
                ax.fill_between(epochs, mean - std, mean + std, color=color, alpha=0.15, linewidth=0)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if panel:
            ax.set_title(panel)
    axes[0].set_ylabel("test ROC-AUC")
    axes[-1].legend(title="prior distortion", loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize="small")
    if title:
        figure.suptitle(title)
    return _save_png(figure, path)


# --------------------------------------------------------------------------------------------------
# t-SNE of embeddings (Fig. 2)
# --------------------------------------------------------------------------------------------------
def plot_tsne(
    embeddings: np.ndarray,
    targets: np.ndarray,
    positive_mask: np.ndarray,
    path: str | os.PathLike[str],
    *,
    class_names: Sequence[str] | None = None,
    seed: int = 0,
    max_points: int = TSNE_MAX_POINTS,
    max_iter: int = 500,
    threads: int = 1,
    title: str | None = "t-SNE of test embeddings",
) -> Path:
    """2-D t-SNE of ``embeddings`` in two panels, coloured by class and by positive/negative (Fig. 2).

    At most ``max_points`` rows (a seeded random subset) are embedded, so it stays fast on a CPU;
    features above 50 dimensions are first reduced to 50 by PCA, as is usual for t-SNE. ``max_iter``
    (at least 250) is t-SNE's number of optimisation steps. ``threads`` caps the OpenMP/BLAS threads:
    one by default, because scikit-learn's Barnes-Hut t-SNE ran 3x slower with 2 threads than with 1
    on a busy 2-core machine (41 s vs 13 s for 2,000 points).
    """
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    X = np.asarray(embeddings, dtype=np.float32)
    targets = np.asarray(targets).astype(np.int64).ravel()
    positive = np.asarray(positive_mask).astype(bool).ravel()
    if X.ndim != 2:
        raise ImpulsesError(f"t-SNE: embeddings must be 2-D (N, D), got shape {X.shape}")
    n = X.shape[0]
    if targets.shape[0] != n or positive.shape[0] != n:
        raise ImpulsesError(
            f"t-SNE: {n} embeddings but {targets.shape[0]} targets and {positive.shape[0]} P/N flags"
        )
    if n < 5:
        raise ImpulsesError(f"t-SNE needs at least 5 points, got {n}")
    if not np.isfinite(X).all():
        raise ImpulsesError("t-SNE: the embeddings hold NaN or Inf")
    if max_points < 5:
        raise ImpulsesError(f"t-SNE: max_points must be at least 5, got {max_points}")
    if max_iter < 250:
        raise ImpulsesError(f"t-SNE: max_iter must be at least 250, got {max_iter}")
    rng = np.random.default_rng(seed)
    if n > max_points:
        rows = np.sort(rng.choice(n, size=max_points, replace=False))
        X, targets, positive = X[rows], targets[rows], positive[rows]
        n = max_points
    perplexity = float(min(30.0, (n - 1) / 3))
    with threadpool_limits(max(1, threads)):
        if X.shape[1] > 50:
            X = PCA(50, random_state=seed).fit_transform(X)
        tsne = TSNE(
            2, perplexity=perplexity, init="pca", random_state=seed, max_iter=max_iter, n_jobs=max(1, threads)
        )
        points = tsne.fit_transform(X)

    figure = _new_figure(11.5, 5.0)
    by_class, by_label = figure.subplots(1, 2)
    classes = np.unique(targets)
    cmap_name = "tab10" if classes.size <= 10 else "tab20"
    from matplotlib import colormaps

    cmap = colormaps[cmap_name]
    for i, cls in enumerate(classes):
        mask = targets == cls
        if cls < 0:
            name, color = "unknown", "lightgray"
        else:
            name = class_names[cls] if class_names is not None and cls < len(class_names) else str(cls)
            color = cmap(i % cmap.N)
        by_class.scatter(
            points[mask, 0], points[mask, 1], s=6, color=color, label=name, alpha=0.8, linewidths=0
        )
    if classes.size <= 20:
        by_class.legend(fontsize="x-small", markerscale=2.5, loc="best", frameon=False)
    by_class.set_title("by class")
    for mask, name, color in ((~positive, "negative", "tab:blue"), (positive, "positive", "tab:red")):
        by_label.scatter(
            points[mask, 0],
            points[mask, 1],
            s=6,
            color=color,
            label=f"{name} ({mask.sum()})",
            alpha=0.7,
            linewidths=0,
        )
    by_label.legend(fontsize="small", markerscale=2.5, loc="best", frameon=False)
    by_label.set_title("positive / negative")
    for ax in (by_class, by_label):
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        figure.suptitle(f"{title} ({n:,} points)")
    return _save_png(figure, path)
