"""A sweep of linear PU heads in one call: the grid, training in one pass per epoch, metrics, files.

:func:`run_sweep` is what ``impulses train-head`` and the experiment pipeline run: it builds the
grid losses × priors × distortions × seeds × label sets (:func:`head_grid`), estimates ``"auto"``
priors per label set (:func:`impulses.pu.prior.auto_prior`), trains every head together
(:func:`impulses.pu.heads.train_heads`), evaluates them on a test set (or on the training rows'
true labels ``y``) and returns a :class:`SweepResult` with one row per head and the per-epoch
history as polars frames. :meth:`SweepResult.save` writes ``results.csv``, ``heads.pt`` and
``history.csv`` atomically.

Every argument is checked before any training, and each problem is a
:class:`~impulses.errors.ParameterError` naming the parameter.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from impulses.atomic import atomic_path
from impulses.errors import ParameterError
from impulses.pu.heads import HeadSpec, HeadsResult, save_heads
from impulses.pu.losses import LOSSES, get_loss
from impulses.pu.metrics import METRICS
from impulses.pu.prior import PriorEstimate

DISTORTIONS = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)  # the paper's prior distortions b (Fig. 3): prior b·π
RESULT_COLUMNS = (
    "head", "loss", "prior", "base_prior", "distortion", "seed", "label_set", "epochs",
    *METRICS, "seconds", "eval_on", "skipped_batches",
)  # fmt: skip
HISTORY_KEYS = ("train_loss", "auc", "f1", "accuracy", "test_loss")  # per-epoch values of HeadsResult.history
TRUE_LABELS = "y"  # the label set of heads trained on the true labels (pn)


@dataclass(frozen=True)
class GridHead:
    """One head of a sweep and the coordinates it came from (base prior, distortion, label set)."""

    spec: HeadSpec
    base_prior: float | None
    distortion: float | None
    label_set: str


def _check_prior(value: float, param: str = "priors") -> None:
    try:
        inside = 0 < float(value) < 1
    except (TypeError, ValueError):
        inside = False
    if not inside:
        raise ParameterError(param, f"must be in (0, 1) (π = p(y=1 | s=0)), got {value!r}")


def head_grid(
    losses: Sequence[str],
    priors: Sequence[float] | Mapping[str, Sequence[float]],
    distortions: Sequence[float],
    seeds: Sequence[int],
    label_sets: Sequence[str],
    *,
    prior_prime: float = 0.5,
    beta: float = 0.0,
    gamma: float = 1.0,
    distorted_losses: Sequence[str] | None = None,
    true_label_column: str = TRUE_LABELS,
) -> list[GridHead]:
    """losses × priors × distortions × seeds × label sets, without heads that would be identical.

    A PU head's prior is ``base prior × distortion`` (the paper's misspecification study) and must
    stay in (0, 1): a product outside is an error naming it (clipping would silently change the
    experiment). ``priors`` may map each label set to its own priors (estimated ones). bce/wbce
    ignore the prior, so they get one head per (seed, label set); pn trains on the true labels, so
    it gets one head per seed, with label set ``true_label_column``. ``column`` of each spec
    indexes ``[*label_sets, true_label_column]``. ``distorted_losses`` (default: every PU loss)
    are the losses the distortions apply to; the others train at distortion 1 only.

    Raises:
        ParameterError: an empty axis, a prior or distortion out of range, a PU loss without a prior.
    """
    for name, values in (("losses", losses), ("seeds", seeds), ("label_sets", label_sets)):
        if not len(values):
            raise ParameterError(name, "is empty: give at least one")
    if not len(distortions):
        raise ParameterError("distortions", "is empty: give at least one (1 is the prior itself)")
    for dist in distortions:
        if not (dist > 0 and math.isfinite(dist)):
            raise ParameterError("distortions", f"must be positive numbers, got {dist:g}")
    per_set = priors if isinstance(priors, Mapping) else dict.fromkeys(label_sets, priors)
    for values in per_set.values():
        for prior in values:
            _check_prior(prior)
    names = [get_loss(name).name for name in losses]
    distorted = set(names if distorted_losses is None else (get_loss(n).name for n in distorted_losses))
    grid: list[GridHead] = []
    seen: set[tuple] = set()

    def add(spec: HeadSpec, base: float | None, dist: float | None, label_set: str) -> None:
        key = (spec.loss, base, dist, spec.seed, label_set)
        if key not in seen:
            seen.add(key)
            grid.append(GridHead(spec, base, dist, label_set))

    for loss in dict.fromkeys(names):
        spec = get_loss(loss)
        factors = distortions if loss in distorted else [1.0]
        for column, label_set in enumerate(label_sets):
            if spec.labels == "y":
                column, label_set = len(label_sets), true_label_column
            for seed in seeds:
                if not spec.uses_prior:
                    name = f"{loss}_seed{seed}_{label_set}"
                    add(HeadSpec(loss, None, seed, column, name=name), None, None, label_set)
                    continue
                if not per_set.get(label_set):
                    raise ParameterError("priors", f"is empty, but loss {loss} needs a prior")
                for base in per_set[label_set]:
                    for dist in factors:
                        prior = base * dist
                        if not 0 < prior < 1:
                            raise ParameterError(
                                ("distortions", "priors"),
                                f"give {dist:g} x prior {base:g} = {prior:g}, not in (0, 1): "
                                "drop that distortion or lower the prior",
                            )
                        dist_part = "" if dist == 1 else f"_x{dist:g}"
                        name = f"{loss}_pi{base:.6g}{dist_part}_seed{seed}_{label_set}"
                        head = HeadSpec(loss, prior, seed, column, prior_prime, beta, gamma, name=name)
                        add(head, base, dist, label_set)
    return grid


@dataclass
class SweepResult:
    """The outcome of :func:`run_sweep`.

    Attributes:
        rows: One row per head (polars): ``RESULT_COLUMNS``; metrics are NaN when ``eval_on`` is "none".
        history: Long format (polars), one row per head and recorded epoch: head, loss, prior,
            base_prior, distortion, seed, label_set, epoch and the recorded values (train_loss, auc,
            f1, accuracy, test_loss); None when nothing was recorded.
        heads: The trained heads (``heads.names`` are ``rows["head"]``).
        prior_estimates: The estimate (:func:`~impulses.pu.prior.auto_prior`) per label set for ``"auto"`` priors.
        eval_on: "test", "train (y)" or "none".
        label_sets: The label sets trained.
    """

    rows: Any
    history: Any
    heads: HeadsResult
    prior_estimates: dict[str, PriorEstimate] = field(default_factory=dict)
    eval_on: str = "none"
    label_sets: list[str] = field(default_factory=list)

    def save(self, out_dir: str | os.PathLike[str], **provenance: Any) -> list[Path]:
        """Write ``results.csv``, ``heads.pt`` and (with a history) ``history.csv`` into ``out_dir``, atomically.

        A ``history.csv`` left by an earlier run is removed when this run has none, so the folder
        never pairs results with another run's history.

        Args:
            out_dir: The run folder (created if missing).
            **provenance: Kept in heads.pt beside the weights (the store's dim and fingerprint, the
                label file, ...).

        Returns:
            The files written.

        Raises:
            ImpulsesError: ``out_dir`` is an existing file or cannot be written.
        """
        out = check_output_dir(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        written = [out / "results.csv", out / "heads.pt"]
        with atomic_path(written[0]) as tmp:
            self.rows.write_csv(tmp)
        grid = self.rows.select("head", "loss", "prior", "base_prior", "distortion", "seed", "label_set")
        meta = {"label_sets": list(self.label_sets), "grid": grid.to_dicts(), **provenance}
        if self.prior_estimates:
            meta["prior_estimates"] = {name: est.as_dict() for name, est in self.prior_estimates.items()}
        save_heads(written[1], self.heads, **meta)
        history = out / "history.csv"
        if self.history is not None:
            with atomic_path(history) as tmp:
                self.history.write_csv(tmp)
            written.append(history)
        else:
            history.unlink(missing_ok=True)
        return written

    def best(self, by: str = "auc", per: str | Sequence[str] | None = "label_set") -> Any:
        """The row with the highest ``by`` (NaN last), for each value of ``per`` (all rows when None).

        Raises:
            ParameterError: ``by`` or ``per`` is not a column of :attr:`rows`.
        """
        import polars as pl

        groups = [] if per is None else [per] if isinstance(per, str) else list(per)
        for param, names in (("by", [by]), ("per", groups)):
            unknown = [n for n in names if n not in self.rows.columns]
            if unknown:
                raise ParameterError(param, f"names no column of the results: {', '.join(unknown)}")
        ranked = self.rows.with_row_index("_row").sort(
            pl.col(by).fill_nan(None), descending=True, nulls_last=True, maintain_order=True
        )
        if not groups:
            return ranked.head(1).drop("_row")
        return ranked.group_by(groups, maintain_order=True).first().sort("_row").drop("_row")


def check_output_dir(out: str | os.PathLike[str]) -> Path:
    """``out`` as a folder results can be written to; call it before training. Creates nothing.

    Raises:
        ParameterError: ``out`` is an existing file, or it (or the folder it would be created in)
            cannot be written.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ParameterError("out", f"{out} is a file, not a folder; choose a folder for the results")
    existing = next(p for p in (out, *out.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise ParameterError("out", f"{out} cannot be created: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ParameterError("out", f"{out} cannot be written: {existing} is not writable")
    return out


def _labels(values: Any, n: int, param: str) -> np.ndarray:
    """A 0/1 label matrix (N, C) or vector (N,) as int8, checked."""
    array = np.asarray(values)
    if array.shape[:1] != (n,) or array.ndim not in (1, 2):
        raise ParameterError(param, f"must have {n} rows (one per row of X), got shape {array.shape}")
    if not np.isin(array, (0, 1)).all():
        raise ParameterError(param, "must hold only 0 and 1")
    return array.astype(np.int8)


def run_sweep(
    X: Any,
    S: Any,
    label_sets: Sequence[str],
    *,
    losses: Sequence[str] = ("imbnnpu",),
    priors: Sequence[float | str] = (),
    distortions: Sequence[float] = (1.0,),
    seeds: int = 1,
    y: Any = None,
    X_test: Any = None,
    y_test: Any = None,
    prior_prime: float = 0.5,
    beta: float = 0.0,
    gamma: float = 1.0,
    epochs: int = 100,
    batch_size: int = 256,
    lr: float = 3e-4,
    stratified: bool = False,
    shuffle_seed: int = 0,
    device: Any = "auto",
    threads: int | None = None,
    kernel: str = "auto",
    eval_every: int = 0,
    distorted_losses: Sequence[str] | None = None,
    on_epoch: Callable[[int, int], None] | None = None,
    on_prior_estimate: Callable[[str, PriorEstimate], None] | None = None,
) -> SweepResult:
    """Train and evaluate the heads losses × priors × distortions × seeds × label sets in one pass per epoch.

    Args:
        X: Training features (N, D), float16 or float32 (kept as they are).
        S: PU labels (N, L) or (N,), 0/1, one column per label set.
        label_sets: The name of each column of ``S`` (written to ``label_set``).
        losses: Loss names (:data:`impulses.pu.losses.LOSSES`); bce/wbce ignore the prior, pn trains
            on ``y``.
        priors: π = p(y=1 | s=0) values in (0, 1) and/or ``"auto"`` (:func:`~impulses.pu.prior.auto_prior` per label set).
        distortions: Factors b: each PU head trains at prior b·π, which must stay in (0, 1).
        seeds: Initialisation seeds 0..seeds-1 of every head.
        y: True labels (N,) of the training rows: needed by pn; without a test set, metrics use them.
        X_test: Test features (M, D), with ``y_test`` (M,).
        y_test: Test labels, 0/1.
        prior_prime: π′ of imbnnPU.
        beta: nnPU's β.
        gamma: nnPU's γ.
        epochs: Passes over the training rows.
        batch_size: Rows per step.
        lr: Adam's learning rate.
        stratified: Give every batch its share of labeled positives.
        shuffle_seed: Seed of the batch order shared by all heads.
        device: "auto", "cpu", "cuda" or "cuda:N" (or a torch.device).
        threads: CPU threads (see :func:`impulses.pu.heads.train_heads`).
        kernel: "auto", "fused" or "torch".
        eval_every: Record test metrics (and the training objective) every N epochs; 0: only at the end.
        distorted_losses: PU losses the distortions apply to (default all).
        on_epoch: Called with (epochs done, epochs) after each epoch.
        on_prior_estimate: Called with (label set, estimate) for each ``"auto"`` prior.

    Returns:
        A :class:`SweepResult`; metrics (decision at logit 0) are on the test set when given, else
        on the training rows' ``y`` when given (``eval_on`` says which).

    Raises:
        ParameterError: any argument out of range, checked before training.
    """
    import polars as pl

    from impulses.pu.heads import train_heads
    from impulses.pu.kernels import check_kernel
    from impulses.pu.metrics import evaluate_heads
    from impulses.pu.prior import auto_prior
    from impulses.runtime import resolve_device

    for name, value in (("epochs", epochs), ("batch_size", batch_size), ("seeds", seeds)):
        if not isinstance(value, int | np.integer) or value < 1:
            raise ParameterError(name, f"must be an integer of at least 1, got {value!r}")
    if not (isinstance(lr, int | float) and lr > 0 and math.isfinite(lr)):
        raise ParameterError("lr", f"must be > 0, got {lr!r}")
    if eval_every < 0:
        raise ParameterError("eval_every", f"must be 0 or more, got {eval_every}")
    if X is None or getattr(X, "ndim", 0) != 2 or X.shape[0] == 0:
        raise ParameterError("X", f"must be a non-empty (N, D) matrix, got shape {getattr(X, 'shape', None)}")
    n = X.shape[0]
    S = _labels(S, n, "S")
    S = S[:, None] if S.ndim == 1 else S
    label_sets = [str(name) for name in label_sets]
    if len(label_sets) != S.shape[1] or len(set(label_sets)) != len(label_sets) or not label_sets:
        raise ParameterError(
            "label_sets", f"must name each of the {S.shape[1]} columns of S once, got {label_sets}"
        )
    if isinstance(losses, str) or not losses:
        raise ParameterError("losses", f"must be a non-empty list of loss names, got {losses!r}")
    unknown = [name for name in losses if str(name).lower() not in LOSSES]
    if unknown:
        raise ParameterError("losses", f"must be among {', '.join(LOSSES)}: unknown loss {unknown[0]!r}")
    losses = list(dict.fromkeys(get_loss(name).name for name in losses))
    if isinstance(priors, str | float | int):
        priors = [priors]
    concrete = [p for p in priors if not (isinstance(p, str) and p == "auto")]
    for prior in concrete:
        _check_prior(prior)
    auto = len(concrete) < len(priors)
    if isinstance(distortions, int | float):
        distortions = [distortions]
    for dist in distortions:
        if not (isinstance(dist, int | float) and dist > 0 and math.isfinite(dist)):
            raise ParameterError("distortions", f"must be positive numbers, got {dist!r}")
    if y is not None:
        y = _labels(y, n, "y")
        if y.ndim != 1:
            raise ParameterError("y", f"must be a vector of {n} labels, got shape {y.shape}")
    needs_y = any(get_loss(name).labels == "y" for name in losses)
    if needs_y and y is None:
        raise ParameterError("y", "is required by loss pn (it trains on the true labels)")
    if (X_test is None) != (y_test is None):
        raise ParameterError(("X_test", "y_test"), "go together: give both or neither")
    if X_test is not None:
        if getattr(X_test, "ndim", 0) != 2 or X_test.shape[1] != X.shape[1]:
            raise ParameterError(
                "X_test", f"must be (M, {X.shape[1]}) like X, got shape {getattr(X_test, 'shape', None)}"
            )
        y_test = _labels(y_test, X_test.shape[0], "y_test")
    torch_device = resolve_device(device) if isinstance(device, str) else device
    check_kernel(kernel, torch_device)
    seed_list = list(range(int(seeds)))

    def grid_for(per_set: Sequence[float] | Mapping[str, Sequence[float]]) -> list[GridHead]:
        return head_grid(
            losses, per_set, distortions, seed_list, label_sets, prior_prime=prior_prime, beta=beta,
            gamma=gamma, distorted_losses=distorted_losses,
        )  # fmt: skip

    estimates: dict[str, PriorEstimate] = {}
    if not auto:
        grid = grid_for(concrete)  # every grid error before any work
    else:
        if not any(get_loss(name).uses_prior for name in losses):
            grid = grid_for(concrete)
        else:
            # every grid error but the estimate's own range, before the estimate (a tiny stand-in
            # prior passes any sane distortion; the estimate's products are checked below)
            grid_for({name: [*concrete, 1e-12] for name in label_sets})
            for j, name in enumerate(label_sets):
                estimates[name] = auto_prior(X, S[:, j], label_set=name)
                if on_prior_estimate is not None:
                    on_prior_estimate(name, estimates[name])
            grid = grid_for({name: [*concrete, float(estimates[name].prior)] for name in label_sets})

    label_matrix = np.column_stack([S, y]) if needs_y else S
    if X_test is not None:
        eval_X, eval_y, eval_on = X_test, y_test, "test"
    elif y is not None:
        eval_X, eval_y, eval_on = X, y, "train (y)"
    else:
        eval_X = eval_y = None
        eval_on = "none"
    specs = [head.spec for head in grid]
    result = train_heads(
        X, label_matrix, specs, epochs=epochs, batch_size=batch_size, lr=lr, stratified=stratified,
        shuffle_seed=shuffle_seed, device=torch_device, threads=threads, kernel=kernel,
        X_test=X_test if eval_every > 0 else None, y_test=y_test if eval_every > 0 else None,
        eval_every=eval_every, track_loss=eval_every > 0, on_epoch=on_epoch,
    )  # fmt: skip
    if eval_X is not None:
        metrics = evaluate_heads(result.decision_function(eval_X), eval_y)
    else:
        metrics = [dict.fromkeys(METRICS, float("nan")) for _ in specs]
    coords = {
        "head": [h.spec.name for h in grid],
        "loss": [h.spec.loss for h in grid],
        "prior": [h.spec.prior for h in grid],
        "base_prior": [h.base_prior for h in grid],
        "distortion": [h.distortion for h in grid],
        "seed": [h.spec.seed for h in grid],
        "label_set": [h.label_set for h in grid],
    }
    schema = {"prior": pl.Float64, "base_prior": pl.Float64, "distortion": pl.Float64, "seed": pl.Int64}
    rows = pl.DataFrame(
        {
            **coords,
            "epochs": [epochs] * len(grid),
            **{m: [float(row[m]) for row in metrics] for m in METRICS},
            "seconds": [round(result.seconds, 3)] * len(grid),
            "eval_on": [eval_on] * len(grid),
            "skipped_batches": [int(v) for v in result.skipped_batches],
        },
        schema_overrides=schema,
    )
    return SweepResult(
        rows=rows.select(RESULT_COLUMNS),
        history=history_frame(result.history, pl.DataFrame(coords, schema_overrides=schema)),
        heads=result,
        prior_estimates=estimates,
        eval_on=eval_on,
        label_sets=label_sets,
    )


def history_frame(history: Sequence[Mapping[str, Any]], heads: Any) -> Any:
    """``HeadsResult.history`` in long format: one row per (recorded epoch, head); None when empty.

    Args:
        history: Per-epoch dicts with ``epoch`` and arrays of K values (train_loss, auc, ...).
        heads: A polars frame of K rows describing the heads (its columns lead each row).
    """
    import polars as pl

    if not history:
        return None
    k = heads.height
    parts = []
    for record in history:
        values = {
            key: np.asarray(record[key], dtype=np.float64).reshape(k) for key in HISTORY_KEYS if key in record
        }
        parts.append(
            heads.with_columns(pl.lit(int(record["epoch"]), dtype=pl.Int64).alias("epoch"), **values)
        )
    return pl.concat(parts, how="diagonal_relaxed")
