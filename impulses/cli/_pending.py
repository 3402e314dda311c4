"""Library calls the CLI is written against (see docs of each), implemented here until their real homes exist.

Every function and class keeps the name and signature it will have in the library module named in
its docstring; the CLI imports them from this one module only, so switching to the real modules is
a change of import lines. The code is what the commands used to run inline.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from impulses.embed.extract import EmbedResult
from impulses.encoders.pretrain import PretrainResult
from impulses.errors import ImpulsesError, LabelSetError, ParameterError
from impulses.pu.heads import HeadsResult
from impulses.pu.prior import PriorEstimate
from impulses.pu.splits import PUSplit

RESULT_COLUMNS = (
    "head", "loss", "prior", "base_prior", "distortion", "seed", "label_set", "epochs",
    "accuracy", "f1", "auc", "ap", "seconds", "eval_on", "skipped_batches",
)  # fmt: skip
HISTORY_KEYS = ("train_loss", "auc", "f1", "accuracy", "test_loss")


# ---------------------------------------------------------------------------------------------
# impulses.pu.labels
# ---------------------------------------------------------------------------------------------
@dataclass
class TrainingSet:
    """The rows of a label set and their features (``impulses.pu.labels.TrainingSet``)."""

    X: np.ndarray
    S: np.ndarray
    y: np.ndarray | None
    names: list[str]
    rows: np.ndarray
    store: Any
    labels: Path


@dataclass
class TestSet:
    """A test label set's rows and features (``impulses.pu.labels.TestSet``)."""

    X: np.ndarray
    y: np.ndarray
    rows: np.ndarray
    targets: np.ndarray
    class_names: list[str] | None


def _open_store(store: Any) -> Any:
    from impulses.embed.store import EmbeddingStore

    return store if hasattr(store, "rows_of") else EmbeddingStore.open(store)


def read_training_set(
    store: Any, labels: str | os.PathLike[str], names: Sequence[str] | None = None, *, require_y: bool = False
) -> TrainingSet:
    """``impulses.pu.labels.read_training_set``: a label set's rows of ``store``, in the label file's order."""
    from impulses.pu.labels import read_label_set

    label_file = read_label_set(labels, names=names)
    if require_y and label_file.y is None:
        raise LabelSetError(f"{labels} has no 'y' column (the pn loss trains on the true labels)")
    opened = _open_store(store)
    rows = label_file.rows_in(opened)
    X = opened.read(rows, dtype=opened.dtype)  # float16 stays float16: the trainer widens per batch
    return TrainingSet(X, label_file.s, label_file.y, list(label_file.names), rows, opened, Path(labels))


def read_test_set(store: Any, labels: str | os.PathLike[str]) -> TestSet:
    """``impulses.pu.labels.read_test_set``: a test label set's rows of ``store`` with their classes."""
    from impulses.pu.labels import read_test_labels

    test_file = read_test_labels(labels)
    opened = _open_store(store)
    rows = test_file.rows_in(opened)
    X = opened.read(rows, dtype=opened.dtype)
    return TestSet(X, test_file.y, rows, opened.targets[rows], opened.class_names)


def write_label_set(frame: pl.DataFrame, path: str | os.PathLike[str]) -> Path:
    """``impulses.pu.labels.write_label_set``: a label-set table as Parquet or CSV, atomically."""
    from impulses.pu.splits import write_label_frame

    return write_label_frame(frame, path)


# ---------------------------------------------------------------------------------------------
# impulses.pu.prior
# ---------------------------------------------------------------------------------------------
def auto_prior(X: np.ndarray, s: np.ndarray, *, label_set: str | None = None) -> PriorEstimate:
    """``impulses.pu.prior.auto_prior``: the BBE estimate of π = p(y=1 | s=0) (Garg et al. 2021)."""
    from impulses.pu.prior import estimate_prior

    estimate = estimate_prior(X, s, methods=("bbe",))["bbe"]
    if not 0 < estimate.prior < 1:
        where = f" (label set {label_set})" if label_set else ""
        raise ParameterError(
            "priors",
            f"auto{where}: the BBE estimate {estimate.prior:g} is not in (0, 1); give the prior as a number",
        )
    return estimate


def prior_report(
    X: np.ndarray, s: np.ndarray, y: np.ndarray | None = None, *, n_folds: int = 2, seed: int = 0
) -> dict[str, Any]:
    """``impulses.pu.prior.prior_report``: BBE and Elkan–Noto estimates of π, their p(y=1), the true π from y."""
    from impulses.pu.prior import estimate_prior

    if n_folds < 2:
        raise ParameterError("n_folds", f"must be at least 2, got {n_folds}")
    s = np.asarray(s).astype(np.int64)
    estimates = estimate_prior(X, s, n_folds=n_folds, seed=seed)
    n_l, n_u = int(s.sum()), int((s == 0).sum())

    def class_prior(prior: float) -> float:
        return (n_l + prior * n_u) / (n_l + n_u)

    true_prior = float(y[s == 0].mean()) if y is not None and n_u else None
    return {
        "n_labeled": n_l,
        "n_unlabeled": n_u,
        "convention": "prior = p(y=1 | s=0), the share of positives among the unlabeled",
        "estimates": {
            name: {**est.as_dict(), "class_prior": class_prior(est.prior)} for name, est in estimates.items()
        },
        "true_prior": true_prior,
        "true_class_prior": None if true_prior is None else class_prior(true_prior),
    }


# ---------------------------------------------------------------------------------------------
# impulses.pu.sweep
# ---------------------------------------------------------------------------------------------
def check_output_dir(out: str | os.PathLike[str]) -> Path:
    """``impulses.pu.sweep.check_output_dir``: ``out`` can become a folder of results (nothing is created)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ParameterError("out", f"{out} is a file, not a folder")
    parent = out
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ParameterError("out", f"{out}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ParameterError("out", f"{out}: the folder {parent} is not writable")
    return out


@dataclass
class SweepResult:
    """``impulses.pu.sweep.SweepResult``: one row per head, the per-epoch history and the trained heads."""

    rows: pl.DataFrame
    history: pl.DataFrame | None
    heads: HeadsResult
    prior_estimates: dict[str, PriorEstimate]
    eval_on: str
    feature_dtype: str = "float32"
    label_sets: list[str] = field(default_factory=list)

    def save(self, out_dir: str | os.PathLike[str], **provenance: Any) -> list[Path]:
        """results.csv, heads.pt and (with a history) history.csv in ``out_dir``; a stale history.csv goes."""
        from impulses import __version__
        from impulses.atomic import atomic_path
        from impulses.pu.heads import save_heads

        out = check_output_dir(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        with atomic_path(out / "results.csv") as tmp:
            self.rows.write_csv(tmp)
        grid = self.rows.select("head", "loss", "prior", "base_prior", "distortion", "seed", "label_set")
        save_heads(
            out / "heads.pt", self.heads, store_dim=int(self.heads.W.shape[0]),
            feature_dtype=self.feature_dtype, label_sets=list(self.label_sets), grid=grid.to_dicts(),
            impulses_version=__version__, **provenance,
        )  # fmt: skip
        written = [out / "results.csv", out / "heads.pt"]
        if self.history is not None:
            with atomic_path(out / "history.csv") as tmp:
                self.history.write_csv(tmp)
            written.append(out / "history.csv")
        else:
            (out / "history.csv").unlink(missing_ok=True)
        return written

    def best(self, by: str = "auc", per: str | None = "label_set") -> pl.DataFrame:
        """The best row by ``by`` (highest), per value of ``per`` (or overall)."""
        ranked = self.rows.sort(by, descending=True, nulls_last=True)
        return ranked.head(1) if per is None else ranked.group_by(per, maintain_order=True).first()


def _history_frame(history: list[dict[str, Any]], rows: pl.DataFrame) -> pl.DataFrame | None:
    if not history:
        return None
    keys = ("head", "loss", "prior", "distortion", "seed", "label_set")
    heads = rows.select(keys).to_dicts()
    records = []
    for entry in history:
        for k, head in enumerate(heads):
            record = {**head, "epoch": entry["epoch"]}
            record.update({key: float(entry[key][k]) for key in HISTORY_KEYS if key in entry})
            records.append(record)
    return pl.DataFrame(records, infer_schema_length=None)


def run_sweep(
    X: np.ndarray,
    S: np.ndarray,
    label_sets: Sequence[str],
    *,
    losses: Sequence[str] = ("imbnnpu",),
    priors: Sequence[float | str] = (),
    distortions: Sequence[float] = (1.0,),
    seeds: int = 1,
    y: np.ndarray | None = None,
    X_test: np.ndarray | None = None,
    y_test: np.ndarray | None = None,
    prior_prime: float = 0.5,
    beta: float = 0.0,
    gamma: float = 1.0,
    epochs: int = 100,
    batch_size: int = 256,
    lr: float = 3e-4,
    stratified: bool = False,
    shuffle_seed: int = 0,
    device: str = "auto",
    threads: int | None = None,
    kernel: str = "auto",
    eval_every: int = 0,
    on_epoch: Callable[[int, int], None] | None = None,
    on_prior_estimate: Callable[[str, PriorEstimate], None] | None = None,
) -> SweepResult:
    """``impulses.pu.sweep.run_sweep``: train losses × priors × distortions × seeds × label sets, evaluate."""
    from impulses.pu.heads import check_kernel, head_grid, train_heads
    from impulses.pu.losses import get_loss
    from impulses.pu.metrics import evaluate_heads
    from impulses.runtime import resolve_device

    for name, value, low in (("epochs", epochs, 1), ("batch_size", batch_size, 1), ("seeds", seeds, 1),
                             ("eval_every", eval_every, 0)):  # fmt: skip
        if value < low:
            raise ParameterError(name, f"must be at least {low}, got {value}")
    if not (lr > 0 and math.isfinite(lr)):
        raise ParameterError("lr", f"must be a positive number, got {lr:g}")
    if (X_test is None) != (y_test is None):
        raise ParameterError(("X_test", "y_test"), "go together: give both or neither")
    losses = [get_loss(name).name for name in losses]
    torch_device = resolve_device(device)
    try:
        check_kernel(kernel, torch_device)
    except ImpulsesError as err:
        raise ParameterError("kernel", err.message.removeprefix("kernel ")) from None
    needs_y = any(get_loss(name).labels == "y" for name in losses)
    if needs_y and y is None:
        raise ParameterError("y", "is needed by the pn loss (it trains on the true labels)")
    concrete = [float(p) for p in priors if p != "auto"]

    def grid_for(per_set: list[float] | dict[str, list[float]]) -> list:
        return head_grid(losses, per_set, distortions, range(seeds), label_sets,
                         prior_prime=prior_prime, beta=beta, gamma=gamma)  # fmt: skip

    grid = grid_for(concrete) if "auto" not in priors else None  # bad priors fail before any estimate
    estimates: dict[str, PriorEstimate] = {}
    if grid is None:
        for j, name in enumerate(label_sets):
            estimates[name] = auto_prior(X, S[:, j], label_set=name)
            if on_prior_estimate is not None:
                on_prior_estimate(name, estimates[name])
        grid = grid_for({name: [*concrete, float(estimates[name].prior)] for name in label_sets})
    S_all = np.column_stack([S, y]) if needs_y else S
    eval_on = "test" if X_test is not None else ("train (y)" if y is not None else "none")
    if eval_on == "train (y)":
        X_test, y_test = X, y
    if on_epoch is not None:
        on_epoch(0, epochs)
    specs = [head.spec for head in grid]
    result = train_heads(
        X, S_all, specs, epochs=epochs, batch_size=batch_size, lr=lr, stratified=stratified,
        shuffle_seed=shuffle_seed, device=torch_device, threads=threads, kernel=kernel,
        X_test=X_test if eval_every > 0 and eval_on == "test" else None,
        y_test=y_test if eval_every > 0 and eval_on == "test" else None,
        eval_every=eval_every, track_loss=eval_every > 0, on_epoch=on_epoch,
    )  # fmt: skip
    if X_test is not None:
        metrics = evaluate_heads(result.decision_function(X_test), y_test)
    else:
        metrics = [dict.fromkeys(("accuracy", "f1", "auc", "ap"), float("nan")) for _ in specs]
    records = [
        {"head": head.spec.name, "loss": head.spec.loss, "prior": head.spec.prior, "base_prior": head.base_prior,
         "distortion": head.distortion, "seed": head.spec.seed, "label_set": head.label_set, "epochs": epochs,
         **{m: metric[m] for m in ("accuracy", "f1", "auc", "ap")}, "seconds": round(result.seconds, 3),
         "eval_on": eval_on, "skipped_batches": int(result.skipped_batches[k])}
        for k, (head, metric) in enumerate(zip(grid, metrics, strict=True))
    ]  # fmt: skip
    rows = pl.DataFrame(
        records, schema_overrides={"prior": pl.Float64, "base_prior": pl.Float64, "distortion": pl.Float64}
    ).select(RESULT_COLUMNS)
    return SweepResult(
        rows,
        _history_frame(result.history, rows),
        result,
        estimates,
        eval_on,
        str(np.asarray(X).dtype),
        list(label_sets),
    )


# ---------------------------------------------------------------------------------------------
# impulses.pu.heads
# ---------------------------------------------------------------------------------------------
@dataclass
class LoadedHeads(HeadsResult):
    """``impulses.pu.heads.HeadsResult`` as ``load_heads`` returns it: the heads and the file's metadata."""

    meta: dict[str, Any] = field(default_factory=dict)

    def score_store(self, store: Any, batch_rows: int = 65536) -> pl.DataFrame:
        """Every row of ``store``: its id and one float32 logit column per head."""
        data = _open_store(store)
        dim = int(self.W.shape[0])
        if data.dim != dim:
            raise ParameterError(
                "store", f"{data.path} has dim {data.dim}, but the heads were trained on dim {dim}"
            )
        scores = np.empty((len(data), self.W.shape[1]), dtype=np.float32)
        for start, block in data.iter_batches(batch_rows):
            scores[start : start + len(block)] = self.decision_function(block, batch_rows)
        names = [h.name or f"head{k}" for k, h in enumerate(self.heads)]
        return pl.DataFrame(
            {"id": [str(i) for i in data.ids], **{n: scores[:, k] for k, n in enumerate(names)}}
        )


def load_heads(path: str | os.PathLike[str]) -> LoadedHeads:
    """``impulses.pu.heads.load_heads``: a heads.pt file as a HeadsResult with ``.meta``."""
    from impulses.pu.heads import HeadSpec
    from impulses.pu.heads import load_heads as load_payload

    payload = load_payload(path)
    W, b = payload.pop("W").float().numpy(), payload.pop("b").float().numpy()
    heads = [HeadSpec(**h) for h in payload.pop("heads")]
    training = payload.get("training", {})
    zeros = np.zeros(len(heads), dtype=np.int64)
    return LoadedHeads(
        W, b, heads, zeros, zeros, 0, int(training.get("epochs", 0)), 0.0, config=training, meta=payload
    )


# ---------------------------------------------------------------------------------------------
# impulses.pu.splits
# ---------------------------------------------------------------------------------------------
@dataclass
class StoreSplit:
    """``impulses.pu.splits.StoreSplit``: a PU split of a store (and the test store's label set)."""

    split: PUSplit
    classes: list[int]
    class_names: list[str]
    test_labels: pl.DataFrame | None = None
    preset: str | None = None
    seed: int = 0

    def summary(self) -> dict[str, Any]:
        """Classes, label sets and counts (π, P:N, L:U) as plain JSON values."""
        summary = {
            "preset": self.preset,
            "positive_classes": [int(c) for c in self.classes],
            "positive_class_names": self.class_names,
            "seed": self.seed,
            "label_sets": self.split.label_columns,
            **self.split.stats.as_dict(),
        }
        if self.test_labels is not None:
            summary.update(test_rows=self.test_labels.height, test_positive=int(self.test_labels["y"].sum()))
        return summary


def split_store(
    store: Any,
    *,
    positive_classes: str | Sequence[str | int] | None = None,
    preset: str | None = None,
    n_positive: int | None = None,
    label_frequency: float | None = None,
    seed: int = 0,
    n_label_sets: int = 1,
    test_store: Any = None,
) -> StoreSplit:
    """``impulses.pu.splits.split_store``: a PU label set from a store's classes (by list or by preset)."""
    from impulses.pu.splits import (
        check_targets,
        get_preset,
        make_split,
        make_test_labels,
        parse_class_list,
        preset_classes,
        resolve_classes,
    )

    if (positive_classes is None) == (preset is None):
        raise ParameterError(("positive_classes", "preset"), "exclude each other: give exactly one")
    train = _open_store(store)
    targets = check_targets(train.targets, where=str(train.path))
    class_names = train.class_names
    n_classes = int(targets.max()) + 1
    if preset is not None:
        spec = get_preset(preset)
        classes = preset_classes(spec, class_names, n_classes)
        n_positive = spec.n_positive if n_positive is None else n_positive
        label_frequency = spec.label_frequency if label_frequency is None else label_frequency
    else:
        tokens = parse_class_list(positive_classes) if isinstance(positive_classes, str) else positive_classes
        classes = resolve_classes(tokens or [], class_names, n_classes=n_classes)
    split = make_split(
        train.ids, targets, classes, n_positive=n_positive,
        label_frequency=0.2 if label_frequency is None else label_frequency, seed=seed, n_label_sets=n_label_sets,
    )  # fmt: skip
    test_frame = None
    if test_store is not None:
        test = _open_store(test_store)
        if class_names is not None and test.class_names is not None and test.class_names != class_names:
            raise ParameterError(
                "test_store", f"{test.path}: its class names differ from those of {train.path}"
            )
        test_frame = make_test_labels(test.ids, check_targets(test.targets, where=str(test.path)), classes)
    names = [class_names[c] if class_names and c < len(class_names) else str(c) for c in classes]
    return StoreSplit(split, classes, names, test_frame, preset, seed)


# ---------------------------------------------------------------------------------------------
# impulses.embed.extract
# ---------------------------------------------------------------------------------------------
@dataclass
class DatasetEmbedResult(EmbedResult):
    """``impulses.embed.extract.EmbedResult`` with what ``embed_dataset`` adds."""

    dtype: str = "float16"
    processes: int = 1
    is_main: bool = True

    def summary(self) -> dict[str, Any]:
        """What the run did, as plain JSON values."""
        return {
            "store": str(self.path),
            "status": self.status,
            "rows": self.rows,
            "dim": self.dim,
            "dtype": self.dtype,
            "images_embedded": self.images,
            "seconds": round(self.seconds, 3),
            "images_per_s": round(self.images_per_s, 1),
            "skipped": len(self.skipped),
            "processes": self.processes,
        }


def embed_dataset(
    data: str,
    encoder: str,
    out: str | os.PathLike[str],
    *,
    data_root: str | os.PathLike[str] | None = None,
    download: bool = False,
    weights: str | os.PathLike[str] | None = None,
    pretrained: bool = False,
    random_init: bool = False,
    cifar_stem: bool = False,
    image_size: int | None = None,
    batch_size: int = 256,
    workers: int | None = None,
    device: str = "auto",
    dtype: str = "float16",
    overwrite: bool = False,
    skip_bad: bool = False,
    progress: bool = True,
) -> DatasetEmbedResult:
    """``impulses.embed.extract.embed_dataset``: embed a dataset spec with an encoder into a store.

    ``random_init`` (a timm encoder without published or local weights) is accepted; the check that
    requires it lives with the encoder loading.
    """
    import torch

    from impulses.data.sources import ArraySource, RangeSource, open_source
    from impulses.embed.extract import ConfigTransform, embed
    from impulses.embed.shards import RankInfo, embed_sharded
    from impulses.embed.store import DTYPES, StoreSpec
    from impulses.encoders import load_encoder
    from impulses.runtime import resolve_device

    if dtype not in DTYPES:
        raise ParameterError("dtype", f"must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if image_size is not None and image_size < 1:
        raise ParameterError("image_size", f"must be a positive number of pixels, got {image_size}")
    if batch_size < 1:
        raise ParameterError("batch_size", f"must be at least 1, got {batch_size}")
    if workers is not None and workers < 0:
        raise ParameterError("workers", f"must be 0 or more, got {workers}")
    ranks = RankInfo.from_env()
    source = open_source(data, data_root=data_root, download=download)
    loaded = load_encoder(encoder, cifar_stem=cifar_stem, pretrained=pretrained, weights=weights)
    transform = dict(loaded.transform)
    if image_size is not None:
        transform["image_size"] = image_size
    spec = StoreSpec(loaded.name, source.spec, loaded.sha256, transform, source.digest)
    torch_device = resolve_device(device)
    if torch_device.type == "cuda" and ranks.distributed and torch_device.index is None:
        torch_device = torch.device("cuda", ranks.local_rank)
    if workers is None:
        in_memory = isinstance(source.base if isinstance(source, RangeSource) else source, ArraySource)
        workers = 0 if in_memory else 4
    options: dict[str, Any] = {
        "spec": spec, "batch_size": batch_size, "workers": workers, "device": torch_device, "dtype": dtype,
        "overwrite": overwrite, "skip_bad": skip_bad, "progress": progress,
        "extra_attrs": {"encoder_spec": str(encoder), "encoder_preset": loaded.preset},
    }  # fmt: skip
    if ranks.distributed:
        result = embed_sharded(source, loaded.model, ConfigTransform(transform), out, ranks=ranks, **options)
    else:
        result = embed(source, loaded.model, ConfigTransform(transform), out, **options)
    return DatasetEmbedResult(
        **vars(result), dtype=dtype, processes=ranks.world_size, is_main=ranks.rank == 0
    )


# ---------------------------------------------------------------------------------------------
# impulses.encoders.pretrain
# ---------------------------------------------------------------------------------------------
@dataclass
class MainPretrainResult(PretrainResult):
    """``impulses.encoders.pretrain.PretrainResult`` with ``is_main`` (False on torchrun ranks != 0)."""

    is_main: bool = True


def run_pretraining(
    out: str | os.PathLike[str],
    *,
    data: str | None = None,
    data_root: str | os.PathLike[str] | None = None,
    download: bool = False,
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    **options: Any,
) -> MainPretrainResult:
    """``impulses.encoders.pretrain.run_pretraining``: pretrain (or resume) into ``out``.

    ``options`` are PretrainConfig fields; None or absent means the default, or the checkpoint's
    value when resuming.
    """
    from impulses.data.sources import open_source
    from impulses.encoders.checkpoint import CHECKPOINT_NAME, load_checkpoint
    from impulses.encoders.distributed import env_context
    from impulses.encoders.pretrain import PretrainConfig, config_fields, pretrain

    out = Path(out)
    known = config_fields()
    for name in options:
        if name not in known:
            raise ParameterError(name, f"is not a pretraining option (known: {', '.join(known)})")
    checkpoint = out / CHECKPOINT_NAME
    if resume and not checkpoint.exists():
        raise ImpulsesError(f"{checkpoint}: no checkpoint to resume (run once without resume first)")
    if options.get("weights") is not None:
        options["weights"] = str(options["weights"])
    given = {k: v for k, v in {"data": data, **options}.items() if v is not None}
    base = load_checkpoint(checkpoint)["config"] if resume else asdict(PretrainConfig())
    merged = {**base, **given}
    config = PretrainConfig(**{k: merged[k] for k in known if k in merged})
    if not config.data:
        raise ParameterError("data", "is required, e.g. 'digits'")
    source = open_source(config.data, data_root=data_root, download=download)
    config.data = getattr(source, "spec", config.data)
    main = env_context().is_main
    result = pretrain(source, config, out, resume=resume, progress=progress, log=log)
    return MainPretrainResult(result.checkpoint, result.history, is_main=main)
