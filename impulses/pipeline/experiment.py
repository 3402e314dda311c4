"""The ImPULSeS experiment protocol end to end: split, pretrain, embed, heads, baselines, tables, plots.

One function, :func:`run_experiment`, serves ``impulses demo`` (scikit-learn digits, small settings)
and the Fashion-MNIST experiment (``benchmarks/fashion_mnist_pu.py``). The steps mirror the paper's:

1. an imbalanced PU split of the training images (K labeled subsets of the same samples);
2. debiased contrastive pretraining of the encoder on the PU training images (no labels used);
3. the frozen encoder's embeddings cached in an HDF5 store;
4. linear heads on the embeddings, all in one pass per epoch: ImPULSeS (imbnnPU at the true π),
   nnPU, BCE, wBCE, the PN upper bound (wBCE on the true labels), and imbnnPU at misspecified priors
   b·π for the distortion sweep, with test AUC recorded every epoch;
5. the baselines without pretraining, trained end to end on raw images: imbnnPU and PN;
6. a per-run results table, a mean ± std summary over the K label sets, and the paper's figures.

Every step caches its output in the run folder (checkpoint, stores, label sets), so rerunning the same
experiment resumes where it stopped and never pretrains twice.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from impulses.atomic import atomic_path
from impulses.pu.metrics import METRICS
from impulses.pu.sweep import DISTORTIONS

SWEEP = "imbnnPU @ b·π"  # the method name of the prior-distortion heads


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything that defines an experiment; saved as ``config.json`` in the run folder."""

    name: str
    data: str  # training source spec
    positive_classes: tuple[int, ...]
    test_data: str | None = None  # None: hold out ``test_fraction`` of ``data`` (stratified)
    data_root: str | None = None
    test_fraction: float = 0.3
    n_positive: int | None = None
    label_frequency: float = 0.2
    n_label_sets: int = 3
    seed: int = 0
    # pretraining
    encoder: str = "smallcnn"
    preset: str | None = None  # augmentation preset; None: inferred from the images (see pretrain)
    image_size: int | None = None  # working resolution; set: every image is decoded once to it (run dir)
    pretrain_loss: str = "debiased"
    pretrain_epochs: int = 100
    pretrain_batch_size: int = 128
    pretrain_lr: float = 3e-4
    temperature: float = 0.5
    tau_plus: float = 0.1
    # heads on the embeddings (the paper's defaults)
    head_epochs: int = 100
    head_batch_size: int = 256
    head_lr: float = 3e-4
    distortions: tuple[float, ...] = DISTORTIONS
    # end-to-end baselines without pretraining
    e2e_epochs: int = 20
    e2e_batch_size: int = 256
    e2e_lr: float = 3e-4
    # the floor: a linear imbnnPU head on the raw pixels at the working resolution (heads' settings)
    raw_pixel_head: bool = False
    # figures
    tsne_points: int = 2000
    device: str = "auto"
    workers: int = 0


@dataclass
class ExperimentResult:
    """Per-run rows, the mean ± std summary, the prior-distortion table and the files written."""

    runs: pl.DataFrame
    summary: pl.DataFrame
    distortion: pl.DataFrame
    split: dict[str, Any]
    out_dir: Path
    files: dict[str, Path] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


class _Subset:
    """Rows ``rows`` of an image source, as a source (pretraining sees only the PU training images)."""

    def __init__(self, source: Any, rows: Sequence[int]) -> None:
        self.source, self.rows = source, np.asarray(rows, dtype=np.int64)
        self.class_names = getattr(source, "class_names", None)
        self.spec = f"{getattr(source, 'spec', 'source')} (rows subset)"

    @property
    def digest(self) -> str:
        """The source's digest and the rows: a subset's decoded images are cached like a source's."""
        h = hashlib.sha256(str(self.source.digest).encode())
        h.update(self.rows.tobytes())
        return h.hexdigest()

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> Any:
        return self.source[int(self.rows[index])]

    def sample_id(self, index: int) -> str:
        return self.source.sample_id(int(self.rows[index]))


def _under_root(spec: str, data_root: str | None) -> str:
    """``imagefolder:PATH`` with a relative PATH resolved under ``data_root`` (when given).

    An experiment then names its folders relative to the dataset root, as the built-in datasets do.
    """
    name, _, path = spec.partition(":")
    if (
        name.lower() != "imagefolder"
        or data_root is None
        or not path
        or Path(path).expanduser().is_absolute()
    ):
        return spec
    return f"{name}:{Path(data_root).expanduser() / path}"


def _source_targets(source: Any) -> tuple[np.ndarray, np.ndarray]:
    """Ids and class targets of every item (from memory when the source holds arrays)."""
    if hasattr(source, "targets") and hasattr(source, "sample_id"):
        ids = np.array([source.sample_id(i) for i in range(len(source))], dtype=object)
        return ids, np.asarray(source.targets, dtype=np.int64)
    items = [source[i] for i in range(len(source))]
    return np.array([it.id for it in items], dtype=object), np.array(
        [it.target for it in items], dtype=np.int64
    )


def _holdout(targets: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified train/test rows of one source."""
    from sklearn.model_selection import train_test_split

    rows = np.arange(len(targets))
    train, test = train_test_split(rows, test_size=fraction, random_state=seed, stratify=targets)
    return np.sort(train), np.sort(test)


def _summary(runs: pl.DataFrame, by: Sequence[str]) -> pl.DataFrame:
    """Mean and sample std of each metric over label sets, per ``by`` group, in first-seen order."""
    order = runs.select(by).unique(maintain_order=True).with_row_index("_order")
    aggs = []
    for metric in METRICS:
        aggs += [pl.col(metric).mean().alias(f"{metric}_mean"), pl.col(metric).std().alias(f"{metric}_std")]
    return (
        runs.group_by(by)
        .agg(*aggs, pl.len().alias("runs"))
        .join(order, on=list(by))
        .sort("_order")
        .drop("_order")
    )


def _markdown(frame: pl.DataFrame, columns: Sequence[tuple[str, str]]) -> str:
    """A markdown table of ``frame``; metric columns show ``mean ± std``."""
    header = "| " + " | ".join(title for _, title in columns) + " |"
    lines = [header, "|" + "---|" * len(columns)]
    for row in frame.iter_rows(named=True):
        cells = []
        for key, _ in columns:
            if key in METRICS:
                mean, std = row[f"{key}_mean"], row[f"{key}_std"]
                cells.append(
                    f"{mean:.3f} ± {std:.3f}" if std is not None and not math.isnan(std) else f"{mean:.3f}"
                )
            else:
                value = row[key]
                cells.append(f"{value:g}" if isinstance(value, float) else str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_experiment(
    config: ExperimentConfig,
    out_dir: str | Path,
    *,
    plots: bool = True,
    plot_dir: str | Path | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> ExperimentResult:
    """Run (or resume) the whole protocol of ``config`` in ``out_dir`` (see the module docstring).

    Figures go to ``plot_dir`` (default ``out_dir/plots``).
    """
    from impulses.data.sources import open_source
    from impulses.embed.store import EmbeddingStore
    from impulses.pu.labels import write_label_set
    from impulses.pu.splits import make_split, make_test_labels
    from impulses.runtime import resolve_device

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "config.json") as tmp:
        tmp.write_text(json.dumps(asdict(config), indent=2) + "\n")
    device = resolve_device(config.device)
    seconds: dict[str, float] = {}
    files: dict[str, Path] = {}

    # 1. sources and the PU split -----------------------------------------------------------------
    tick = time.perf_counter()
    source = open_source(_under_root(config.data, config.data_root), data_root=config.data_root)
    ids, targets = _source_targets(source)
    if config.test_data is None:
        train_rows, test_rows = _holdout(targets, config.test_fraction, config.seed)
        test_source, test_ids, test_targets = source, ids[test_rows], targets[test_rows]
    else:
        train_rows = np.arange(len(source))
        test_source = open_source(_under_root(config.test_data, config.data_root), data_root=config.data_root)
        all_test_ids, all_test_targets = _source_targets(test_source)
        test_rows = np.arange(len(test_source))
        test_ids, test_targets = all_test_ids, all_test_targets
    if config.image_size is not None:  # every later step reads the small images, never the files again
        source = _decoded(config, source, out / f"decoded-train-{config.image_size}px", log)
        if config.test_data is not None:
            test_source = _decoded(config, test_source, out / f"decoded-test-{config.image_size}px", log)
    split = make_split(
        ids[train_rows],
        targets[train_rows],
        config.positive_classes,
        n_positive=config.n_positive,
        label_frequency=config.label_frequency,
        seed=config.seed,
        n_label_sets=config.n_label_sets,
    )
    test_labels = make_test_labels(test_ids, test_targets, config.positive_classes)
    files["labels"] = write_label_set(split.labels, out / "labels.parquet")
    files["test_labels"] = write_label_set(test_labels, out / "test-labels.parquet")
    prior = split.stats.prior
    split_info = {**split.stats.as_dict(), "positive_classes": list(config.positive_classes)}
    row_of_id = {key: row for row, key in enumerate(ids)}
    pu_rows = np.array([row_of_id[i] for i in split.labels["id"].to_list()], dtype=np.int64)
    log(
        f"split: {split.stats.n_positive:,} P : {split.stats.n_negative:,} N ({split.stats.pn_ratio}), "
        f"L:U {split.stats.lu_ratio}, π = p(y=1|s=0) = {prior:.4f}; test {len(test_labels):,} rows "
        f"({int(test_labels['y'].sum()):,} positive)"
    )
    seconds["split"] = time.perf_counter() - tick

    # 2. pretraining on the PU training images --------------------------------------------------
    tick = time.perf_counter()
    ckpt = _pretrain(config, _Subset(source, pu_rows), out / "encoder", device, progress, log)
    files["checkpoint"] = ckpt
    seconds["pretrain"] = time.perf_counter() - tick

    # 3. embeddings ------------------------------------------------------------------------------
    tick = time.perf_counter()
    train_store_path = _embed(config, source, ckpt, out / "train.h5", device, progress)
    test_store_path = (
        train_store_path
        if config.test_data is None
        else _embed(config, test_source, ckpt, out / "test.h5", device, progress)
    )
    files["train_store"], files["test_store"] = train_store_path, test_store_path
    with (
        EmbeddingStore.open(train_store_path) as train_store,
        EmbeddingStore.open(test_store_path) as test_store,
    ):
        X = train_store.read(train_store.rows_of(split.labels["id"].to_list()), dtype=train_store.dtype)
        X_test = test_store.read(test_store.rows_of(test_labels["id"].to_list()), dtype=test_store.dtype)
        test_store_targets = test_store.targets[test_store.rows_of(test_labels["id"].to_list())]
    y_test = test_labels["y"].to_numpy().astype(np.int64)
    seconds["embed"] = time.perf_counter() - tick

    # 4. heads on the embeddings ----------------------------------------------------------------
    tick = time.perf_counter()
    label_columns = split.label_columns
    label_matrix = np.column_stack([split.labels[c].to_numpy() for c in [*label_columns, "y"]]).astype(
        np.int64
    )
    head_rows, history = _train_heads(
        config, X, split.labels, label_columns, prior, X_test, y_test, device, progress, log
    )
    seconds["heads"] = time.perf_counter() - tick

    # 5. end-to-end baselines without pretraining -------------------------------------------------
    tick = time.perf_counter()
    images = _ImageTensors(source, pu_rows, test_source, test_rows, ckpt)
    e2e_rows = _end_to_end(
        config, out / "end_to_end.json", images, label_matrix, prior, y_test, device, progress, log
    )
    seconds["end_to_end"] = time.perf_counter() - tick
    if config.raw_pixel_head:
        tick = time.perf_counter()
        e2e_rows += _raw_pixel_heads(
            config, out / "raw_pixels.json", images, label_matrix, prior, y_test, device, progress, log
        )
        seconds["raw_pixels"] = time.perf_counter() - tick

    # 6. tables and figures ---------------------------------------------------------------------
    runs = pl.DataFrame(head_rows + e2e_rows)
    summary = _summary(runs.filter(pl.col("method") != SWEEP), ["method", "pretrained"])
    distortion = _summary(runs.filter(pl.col("distortion").is_not_null()), ["distortion", "prior"]).sort(
        "distortion"
    )
    files["runs"] = out / "runs.csv"
    with atomic_path(files["runs"]) as tmp:
        runs.write_csv(tmp)
    files["summary"] = out / "summary.csv"
    with atomic_path(files["summary"]) as tmp:
        summary.write_csv(tmp)
    with atomic_path(out / "distortion.csv") as tmp:
        distortion.write_csv(tmp)
    if plots:
        tick = time.perf_counter()
        files.update(
            _plots(
                config,
                history,
                X_test,
                test_store_targets,
                y_test,
                Path(plot_dir) if plot_dir else out / "plots",
                test_source,
            )
        )
        seconds["plots"] = time.perf_counter() - tick
    result = ExperimentResult(runs, summary, distortion, split_info, out, files, seconds)
    files["report"] = write_report(result, config)
    return result


def _decoded(config: ExperimentConfig, source: Any, path: Path, log: Callable[[str], None]) -> Any:
    """``source`` served from its images decoded once at ``config.image_size`` into ``path``.

    Reused when current (a rerun decodes nothing) and resumed when interrupted.
    """
    from impulses.data.decoded import DecodedSource, decode_source
    from impulses.encoders.augment import get_augmentation_preset

    channels = get_augmentation_preset(config.preset).in_chans if config.preset else 3
    if not path.exists():
        log(f"decoding {len(source):,} images of {source.spec} once to {config.image_size} px: {path}")
    decoded = decode_source(
        source, image_size=int(config.image_size or 0), channels=channels, path=path, workers=config.workers
    )
    return DecodedSource(source, decoded)


def _pretrain(
    config: ExperimentConfig, source: Any, out: Path, device: Any, progress: bool, log: Callable[[str], None]
) -> Path:
    """Pretrain, resume an interrupted pretraining, or reuse a finished one; returns the checkpoint."""
    from impulses.encoders.checkpoint import CHECKPOINT_NAME, load_checkpoint
    from impulses.encoders.pretrain import PretrainConfig, pretrain

    ckpt = out / CHECKPOINT_NAME
    done = int(load_checkpoint(ckpt)["epoch"]) if ckpt.exists() else 0
    if done >= config.pretrain_epochs:
        log(f"pretraining: {ckpt} already holds {done} epochs, reusing it")
        return ckpt
    pre = PretrainConfig(
        data=f"{config.data} (PU training rows)",
        encoder=config.encoder,
        preset=config.preset,
        image_size=config.image_size,
        loss=config.pretrain_loss,
        epochs=config.pretrain_epochs,
        batch_size=config.pretrain_batch_size,
        lr=config.pretrain_lr,
        temperature=config.temperature,
        tau_plus=config.tau_plus,
        seed=config.seed,
        device=str(device),
        workers=config.workers,
    )
    result = pretrain(source, pre, out, resume=ckpt.exists(), progress=progress, log=log)
    if result.history:
        first, last = result.history[0], result.history[-1]
        log(
            f"pretraining: {config.pretrain_loss} loss {last.get('loss', float('nan')):.3f}, kNN top-1 "
            f"{first.get('knn_top1', float('nan')):.3f} (random init) -> {last.get('knn_top1', float('nan')):.3f}"
        )
    return result.checkpoint


def _embed(
    config: ExperimentConfig, source: Any, ckpt: Path, path: Path, device: Any, progress: bool
) -> Path:
    """Embed ``source`` with the pretrained encoder (up to date when already done)."""
    from impulses.embed.extract import ConfigTransform, embed
    from impulses.embed.store import StoreSpec
    from impulses.encoders import load_encoder

    loaded = load_encoder(str(ckpt))
    spec = StoreSpec(loaded.name, source.spec, loaded.sha256, dict(loaded.transform), source.digest)
    embed(
        source,
        loaded.model,
        ConfigTransform(dict(loaded.transform)),
        path,
        spec=spec,
        device=device,
        workers=config.workers,
        progress=progress,
        overwrite=bool(path.exists() and _stale(path, spec)),
        description=f"embed {path.name}",
    )
    return path


def _stale(path: Path, spec: Any) -> bool:
    """True when the store at ``path`` was made by another encoder/source (a rerun after retraining)."""
    from impulses.embed.store import EmbeddingStore

    with EmbeddingStore.open(path) as store:
        return store.fingerprint != spec.fingerprint


METHODS = {"imbnnpu": "ImPULSeS", "nnpu": "nnPU", "bce": "BCE", "wbce": "wBCE", "pn": "PN (upper bound)"}


def _train_heads(
    config: ExperimentConfig,
    X: np.ndarray,
    labels: pl.DataFrame,
    label_columns: list[str],
    prior: float,
    X_test: np.ndarray,
    y_test: np.ndarray,
    device: Any,
    progress: bool,
    log: Callable[[str], None],
) -> tuple[list[dict[str, Any]], pl.DataFrame]:
    """The heads of one sweep (run_sweep): rows of metrics and the AUC history of the imbnnPU heads.

    Per label set: ImPULSeS, nnPU, BCE, wBCE at the true π, the PN upper bound, and imbnnPU at b·π.
    """
    from impulses.plots import auc_history_table
    from impulses.pu.sweep import run_sweep
    from impulses.runtime import make_progress

    # b·π must be a prior in (0, 1): the experiment asks only for the distortions where it is (the
    # sweep, like the CLI, refuses the others); b = 1 is the ImPULSeS head itself
    distortions = sorted({1.0, *(b for b in config.distortions if 0 < b * prior < 1)})
    S = np.column_stack([labels[c].to_numpy() for c in label_columns])
    with make_progress(disable=not progress) as bar:
        task = bar.add_task("heads", total=config.head_epochs)
        sweep = run_sweep(
            X, S, label_columns, losses=tuple(METHODS), priors=[prior], distortions=distortions,
            distorted_losses=("imbnnpu",), y=labels["y"].to_numpy(), X_test=X_test, y_test=y_test,
            epochs=config.head_epochs, batch_size=config.head_batch_size, lr=config.head_lr,
            shuffle_seed=config.seed, device=device, eval_every=1,
            on_epoch=lambda done, total: bar.update(task, completed=done),
        )  # fmt: skip
    n_heads = sweep.rows.height
    log(f"heads: {n_heads} heads x {config.head_epochs} epochs in one pass each, {sweep.heads.seconds:.1f} s")
    set_index = {name: k for k, name in enumerate(label_columns)}
    rows = []
    for row in sweep.rows.iter_rows(named=True):
        swept = row["loss"] == "imbnnpu" and row["distortion"] != 1.0
        rows.append(
            {
                "method": SWEEP if swept else METHODS[row["loss"]],
                "label_set": set_index.get(row["label_set"]),  # None for PN: it trains on y
                "distortion": row["distortion"] if row["loss"] == "imbnnpu" else None,
                "pretrained": True,
                "loss": row["loss"],
                "prior": row["prior"],
                **{m: row[m] for m in METRICS},
                "seconds": sweep.heads.seconds / n_heads,
            }
        )
    imbnnpu = sweep.history.filter(pl.col("loss") == "imbnnpu")
    return rows, auc_history_table(imbnnpu, head="label_set")


def _e2e_key(config: ExperimentConfig, label_matrix: np.ndarray, y_test: np.ndarray) -> dict[str, Any]:
    """Everything an end-to-end baseline depends on (settings, split, labels), for its cache."""
    names = ("data", "test_data", "data_root", "test_fraction", "encoder", "e2e_epochs", "e2e_batch_size",
             "e2e_lr", "seed")  # fmt: skip
    # the working resolution shapes the images; named only when set, so older runs' keys stay valid
    decoded = {name: getattr(config, name) for name in ("preset", "image_size") if getattr(config, name)}
    digest = hashlib.sha256(np.ascontiguousarray(label_matrix, dtype=np.int64).tobytes())
    digest.update(np.ascontiguousarray(y_test, dtype=np.int64).tobytes())
    return {**{name: getattr(config, name) for name in names}, **decoded, "labels_sha256": digest.hexdigest()}


def _save_cache(path: Path, key: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """Finished baseline rows with the key they were made with (read back by :func:`_load_e2e_cache`)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps({"key": key, "rows": rows}, indent=1) + "\n")


def _load_e2e_cache(path: Path, key: dict[str, Any]) -> dict[tuple[str, int], dict[str, Any]]:
    """Finished baseline rows by (method, label set), when ``path`` holds runs made with ``key``."""
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(saved, dict) or saved.get("key") != json.loads(json.dumps(key)):
        return {}
    return {(row["method"], row["label_set"]): row for row in saved.get("rows", [])}


class _ImageTensors:
    """The PU training and the test images through the encoder's test transform, as (N, C, H, W) tensors.

    Made at first use, without augmentation: the end-to-end baselines train on them, the raw-pixel
    head on them flattened.
    """

    def __init__(self, source: Any, rows: np.ndarray, test_source: Any, test_rows: np.ndarray, ckpt: Path):
        self._args = (source, rows, test_source, test_rows, ckpt)
        self._tensors: tuple[Any, Any] | None = None

    def _make(self) -> tuple[Any, Any]:
        if self._tensors is None:
            from impulses.encoders import load_encoder
            from impulses.encoders.augment import test_transform
            from impulses.pipeline.end_to_end import images_to_tensor

            source, rows, test_source, test_rows, ckpt = self._args
            transform = test_transform(dict(load_encoder(str(ckpt)).transform))
            self._tensors = (
                images_to_tensor(source, rows, transform),
                images_to_tensor(test_source, test_rows, transform),
            )
        return self._tensors

    @property
    def train(self) -> Any:
        return self._make()[0]

    @property
    def test(self) -> Any:
        return self._make()[1]


def _end_to_end(
    config: ExperimentConfig,
    cache_path: Path,
    images: _ImageTensors,
    label_matrix: np.ndarray,
    prior: float,
    y_test: np.ndarray,
    device: Any,
    progress: bool,
    log: Callable[[str], None],
) -> list[dict[str, Any]]:
    """ImbnnPU and PN trained end to end on raw images from random initialisation, per label set.

    These runs take most of an experiment's time, so each finished run is saved to ``cache_path``
    (with a key of everything it depends on) and a rerun with the same key reuses it: changing the
    heads' settings, or resuming an interrupted experiment, never retrains a finished baseline.
    """
    from impulses.pipeline.end_to_end import EndToEndConfig, run_end_to_end
    from impulses.pu.metrics import evaluate_heads
    from impulses.runtime import make_progress

    n_sets = label_matrix.shape[1] - 1
    runs = [("imbnnPU", "imbnnpu", k, k) for k in range(n_sets)] + [
        ("PN (upper bound)", "pn", k, n_sets) for k in range(n_sets)
    ]
    key = _e2e_key(config, label_matrix, y_test)
    cached = _load_e2e_cache(cache_path, key)
    rows = []
    with make_progress(disable=not progress) as bar:
        task = bar.add_task("end-to-end baselines", total=len(runs) * config.e2e_epochs)
        for method, loss, k, column in runs:
            if (method, k) in cached:
                rows.append(cached[(method, k)])
                bar.advance(task, config.e2e_epochs)
                continue
            e2e = EndToEndConfig(
                encoder=config.encoder,
                loss=loss,
                prior=prior if loss == "imbnnpu" else None,
                epochs=config.e2e_epochs,
                batch_size=config.e2e_batch_size,
                lr=config.e2e_lr,
                seed=config.seed + k,
            )
            logits, record = run_end_to_end(
                images.train,
                label_matrix[:, column],
                images.test,
                e2e,
                device=device,
                on_epoch=lambda epoch, _loss: bar.advance(task),
            )
            metrics = evaluate_heads(logits, y_test)[0]
            rows.append(
                {
                    "method": method,
                    "label_set": k,
                    "distortion": None,
                    "pretrained": False,
                    "loss": loss,
                    "prior": e2e.prior,
                    **{m: metrics[m] for m in METRICS},
                    "seconds": record["seconds"],
                }
            )
            _save_cache(cache_path, key, rows)  # a run's row survives an interruption of the next
    if cached:
        log(f"end-to-end baselines: reused {len(cached)} finished runs from {cache_path}")
    log(
        f"end-to-end baselines: {len(runs)} runs x {config.e2e_epochs} epochs, {sum(r['seconds'] for r in rows):.1f} s"
    )
    return rows


RAW_PIXELS = "imbnnPU head on raw pixels"


def _raw_pixel_heads(
    config: ExperimentConfig,
    cache_path: Path,
    images: _ImageTensors,
    label_matrix: np.ndarray,
    prior: float,
    y_test: np.ndarray,
    device: Any,
    progress: bool,
    log: Callable[[str], None],
) -> list[dict[str, Any]]:
    """The floor: a linear imbnnPU head at the true π on the raw pixels, per label set.

    The pixels are normalised and flattened at the working resolution; the heads train like those on
    the embeddings and are cached in ``cache_path``.
    """
    from impulses.pu.sweep import run_sweep
    from impulses.runtime import make_progress

    n_sets = label_matrix.shape[1] - 1
    key = {
        **_e2e_key(config, label_matrix, y_test),
        **{
            name: getattr(config, name)
            for name in ("image_size", "head_epochs", "head_batch_size", "head_lr")
        },
    }
    cached = _load_e2e_cache(cache_path, key)
    if all((RAW_PIXELS, k) in cached for k in range(n_sets)):
        log(f"raw-pixel heads: reused {n_sets} finished heads from {cache_path}")
        return [cached[(RAW_PIXELS, k)] for k in range(n_sets)]
    X = images.train.flatten(1).numpy().astype(np.float32, copy=False)
    X_test = images.test.flatten(1).numpy().astype(np.float32, copy=False)
    columns = [f"s_{k}" for k in range(n_sets)]
    with make_progress(disable=not progress) as bar:
        task = bar.add_task("raw-pixel heads", total=config.head_epochs)
        sweep = run_sweep(
            X, label_matrix[:, :n_sets], columns, losses=("imbnnpu",), priors=[prior],
            X_test=X_test, y_test=y_test, epochs=config.head_epochs, batch_size=config.head_batch_size,
            lr=config.head_lr, shuffle_seed=config.seed, device=device,
            on_epoch=lambda done, total: bar.update(task, completed=done),
        )  # fmt: skip
    log(
        f"raw-pixel heads: {n_sets} heads on {X.shape[1]:,} pixel features x {config.head_epochs} epochs, "
        f"{sweep.heads.seconds:.1f} s"
    )
    rows = [
        {
            "method": RAW_PIXELS,
            "label_set": columns.index(row["label_set"]),
            "distortion": None,
            "pretrained": False,
            "loss": "imbnnpu",
            "prior": row["prior"],
            **{m: row[m] for m in METRICS},
            "seconds": sweep.heads.seconds / n_sets,
        }
        for row in sweep.rows.iter_rows(named=True)
    ]
    rows.sort(key=lambda row: row["label_set"])
    _save_cache(cache_path, key, rows)
    return rows


def _plots(
    config: ExperimentConfig,
    history: pl.DataFrame,
    X_test: np.ndarray,
    test_targets: np.ndarray,
    y_test: np.ndarray,
    out: Path,
    test_source: Any,
) -> dict[str, Path]:
    """Fig. 3 (test AUC over epochs per prior distortion) and Fig. 2 (t-SNE of test embeddings)."""
    from impulses.plots import plot_auc_over_epochs, plot_tsne

    return {
        "plot_auc": plot_auc_over_epochs(history, out / "auc_over_epochs.png"),
        "plot_tsne": plot_tsne(
            X_test,
            test_targets,
            y_test,
            out / "tsne.png",
            class_names=getattr(test_source, "class_names", None),
            seed=config.seed,
            max_points=config.tsne_points,
        ),
    }


def write_report(result: ExperimentResult, config: ExperimentConfig) -> Path:
    """``report.md``: the split, the method table (mean ± std over label sets) and the distortion sweep."""
    s = result.split
    lines = [
        f"# {config.name}",
        "",
        f"Split: {s['n_positive']:,} positives : {s['n_negative']:,} negatives ({s['pn_ratio']}), "
        f"labeled : unlabeled = {s['lu_ratio']}, π = p(y=1|s=0) = {s['prior']:.4f}, "
        f"c = {s['label_frequency']:.3f}, positive classes {s['positive_classes']}; "
        f"{config.n_label_sets} label sets (mean ± std over them).",
        "",
        "## Methods",
        "",
        _markdown(
            result.summary,
            [
                ("method", "method"),
                ("pretrained", "pretrained"),
                ("accuracy", "accuracy"),
                ("f1", "F1"),
                ("auc", "AUC"),
                ("ap", "AP"),
            ],
        ),
        "",
        "## Prior misspecification (imbnnPU on the embeddings at b·π)",
        "",
        _markdown(
            result.distortion,
            [("distortion", "b"), ("prior", "b·π"), ("accuracy", "accuracy"), ("f1", "F1"), ("auc", "AUC")],
        ),
        "",
        "## Time (s)",
        "",
        "This invocation: " + ", ".join(f"{k} {v:.1f}" for k, v in result.seconds.items()),
        *_stage_totals(result),
        "",
    ]
    path = result.out_dir / "report.md"
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines))
    return path


def _stage_totals(result: ExperimentResult) -> list[str]:
    """Whole-stage compute times that a resumed invocation does not see.

    Pretraining (every epoch, from the checkpoint's history) and the end-to-end baselines (their
    runs' own training times).
    """
    lines = []
    history = result.out_dir / "encoder" / "history.csv"
    if history.exists():
        epochs = pl.read_csv(history).filter(pl.col("epoch") > 0)
        lines.append(f"pretraining, all {len(epochs)} epochs: {epochs['seconds'].sum():.1f}")
    baselines = result.runs.filter(~pl.col("pretrained"))
    for what, rows in (
        ("end-to-end baselines", baselines.filter(pl.col("method") != RAW_PIXELS)),
        ("raw-pixel heads", baselines.filter(pl.col("method") == RAW_PIXELS)),
    ):
        if len(rows):
            lines.append(f"{what}, all {len(rows)} runs: {rows['seconds'].sum():.1f}")
    return ["", "Across invocations: " + "; ".join(lines)] if lines else []


DEMO = ExperimentConfig(
    name="impulses demo: scikit-learn digits",
    data="digits",
    positive_classes=(0, 1, 8, 9),
    test_fraction=0.3,
    n_positive=150,
    label_frequency=0.2,
    n_label_sets=3,
    encoder="smallcnn",
    pretrain_epochs=12,
    pretrain_batch_size=64,
    pretrain_lr=1e-3,
    head_epochs=300,
    head_batch_size=64,
    head_lr=1e-3,
    e2e_epochs=15,
    tsne_points=600,
)
"""The embedded default (no download): 8x8 digits, vehicles-like positives {0, 1, 8, 9} downsampled to
~1:5 against the other six classes, c = 0.2, 30% of the images held out for testing.

The paper's head defaults (batch 256, lr 3e-4, 100 epochs) give ~13,000 Adam steps on its 33,000
rows; on digits' ~900 training rows they give 400 and leave the linear heads underfit (ImPULSeS test
AUC 0.85 against 0.98 when trained to convergence), so the demo trains its heads for 300 epochs of
batch 64 at lr 1e-3 (4,500 steps, about a second). The end-to-end baselines keep batch 256, lr 3e-4
and 15 epochs: more optimisation made them worse on this task (they overfit the labeled positives)."""

FASHION_MNIST = ExperimentConfig(
    name="ImPULSeS on Fashion-MNIST (fashion-mnist-imbalanced split)",
    data="fashion-mnist:train",
    test_data="fashion-mnist:test",
    positive_classes=(0, 2, 4, 6),
    n_positive=3600,
    label_frequency=0.2,
    n_label_sets=3,
    encoder="smallcnn-pooled",
    pretrain_epochs=12,
    pretrain_batch_size=256,
    pretrain_lr=1e-3,
    head_epochs=1000,
    head_lr=1e-3,
    e2e_epochs=8,
    workers=1,
)
"""The paper's protocol on Fashion-MNIST: tops (0, 2, 4, 6) positive, 3,600 P vs 36,000 N, c = 0.2
(720 labeled + 38,880 unlabeled, π = 0.0741), the full test set; an encoder sized for 2 CPU cores.

The heads are trained until their training objective nearly levels off (1,000 epochs of batch 256
at lr 1e-3, ~155,000 Adam steps, a few minutes for all 33 heads; the objective still falls by 0.0005
over the last 100 epochs): with the paper's defaults (100 epochs at lr 3e-4) the imbnnPU objective on
these 256-d embeddings is 0.057 and falling fast, against 0.042 at lr 1e-3 × 100, 0.032 × 300 and
0.023 × 1,000 epochs; test AUC follows it (0.980, 0.986, 0.988, 0.990). The choice was made on the
training objective, not on the test set."""

IMAGENETTE = ExperimentConfig(
    name="ImPULSeS on Imagenette (machines vs the rest, 32 px)",
    data="imagefolder:train",
    test_data="imagefolder:val",
    positive_classes=(2, 3, 6, 7),
    n_positive=573,
    label_frequency=0.2,
    n_label_sets=3,
    encoder="smallcnn-pooled",
    preset="cifar",
    image_size=32,
    pretrain_epochs=150,
    pretrain_batch_size=256,
    pretrain_lr=1e-3,
    head_epochs=1000,
    head_lr=1e-3,
    e2e_epochs=3,
    e2e_batch_size=128,
    e2e_lr=1e-3,
    raw_pixel_head=True,
    workers=1,
)
"""Imagenette 2 (``data_root`` holds ``train/`` and ``val/`` class folders): the machines {2 cassette
player, 3 chain saw, 6 garbage truck, 7 gas pump} positive, downsampled to 573 of 3,743 against the
5,726 other training photos so that with c = 0.2 (115 labeled) π = p(y=1|s=0) = 458 / 6,184 ≈ 0.0741,
the paper's imbalance; val (3,925 photos) is the test set.

Every photo is decoded once to 32 px (the ``cifar`` preset's views, made per batch as tensors). On
the 2-core CPU a ``smallcnn-pooled`` epoch of the 5,669 pretraining photos then takes 8-9 s of steps
(650-700 images/s; the per-image PIL pipeline managed about 250), so 150 epochs fit in about 24
minutes with the kNN monitor: the 30-minute CPU budget buys 150 epochs, not the 12 of the per-image
pipeline on a loaded machine (kNN top-1 on 10 classes 0.546 after 12 epochs, 0.611 after 50, 0.641
after 100 and 150). ``benchmarks/encoder_study.py`` compares encoders and augmentation strengths at
this resolution for the same CPU time. The heads use lr 1e-3 like the Fashion-MNIST run's, 1,000 epochs
of ~25 batches (25,000 Adam steps, 10x the paper's defaults); the end-to-end baselines get a modest
budget (3 epochs of batch 128 at lr 1e-3, ~150 steps); the floor is a linear imbnnPU head on the
3,072 raw pixels, trained like the heads."""
