"""A sweep of linear PU heads in one call: the grid, training in one pass per epoch, metrics, files.

:func:`run_sweep` is what ``impulses train-head`` and the experiment pipeline run: it builds the
grid losses × priors × distortions × seeds × label sets (:func:`head_grid`), estimates ``"auto"``
priors per label set (:func:`impulses.pu.prior.auto_prior`), trains every head together
(:func:`impulses.pu.heads.train_heads`), evaluates them on a test set (or on the training rows'
true labels ``y``) and returns a :class:`SweepResult` with one row per head and the per-epoch
history as polars frames. :meth:`SweepResult.save` writes ``results.csv``, ``heads.pt``, the
portable ``heads.safetensors`` + ``heads.json`` and ``history.csv`` atomically.

**Model selection without negatives.** With ``val_fraction=F > 0`` the sweep holds out, per label
set, a stratified share F of its labeled positives and of its unlabeled rows
(:func:`validation_split`, seeded by ``val_seed``), trains that label set's heads on the other rows
(one training run per label set: a head never sees the rows its label set holds out, and equals a
run on its training part alone), and scores every head on its held-out PU data with the criteria of
:mod:`impulses.pu.criteria` (:data:`VALIDATION_COLUMNS`). ``select`` marks the head with the best
criterion per label set (``selected``); :meth:`SweepResult.save` then also writes those heads alone
under ``selected/``.

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

from impulses.atomic import atomic_path, check_creatable
from impulses.errors import ParameterError
from impulses.pu.heads import HeadSpec, HeadsResult, save_heads
from impulses.pu.losses import LOSSES, check_surrogate, get_loss
from impulses.pu.metrics import METRICS
from impulses.pu.prior import PriorEstimate

DISTORTIONS = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)  # the paper's prior distortions b (Fig. 3): prior b·π
RESULT_COLUMNS = (
    "head", "loss", "prior", "base_prior", "distortion", "seed", "label_set", "epochs",
    *METRICS, "seconds", "eval_on", "skipped_batches",
)  # fmt: skip
HISTORY_KEYS = ("train_loss", "auc", "f1", "accuracy", "test_loss")  # per-epoch values of HeadsResult.history
TRUE_LABELS = "y"  # the label set of heads trained on the true labels (pn)
# held-out PU criteria (run_sweep with val_fraction > 0), in results.csv after RESULT_COLUMNS
VALIDATION_COLUMNS = (
    "val_fraction", "val_seed", "val_labeled", "val_unlabeled", "val_prior", "pu_auc", "pu_auc_low",
    "pu_auc_high", "implied_pn_auc", "lee_liu", "pu_accuracy", "pu_balanced_accuracy",
)  # fmt: skip
SELECTION_CRITERIA = {  # select=... -> the VALIDATION_COLUMNS column it maximises
    "pu-auc": "pu_auc",
    "lee-liu": "lee_liu",
    "pu-accuracy": "pu_accuracy",
    "pu-balanced-accuracy": "pu_balanced_accuracy",
}
SELECTED_DIR = "selected"  # save(): the selected heads alone go into this subfolder


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
    surrogate: str = "sigmoid",
) -> list[GridHead]:
    """The grid: losses × priors × distortions × seeds × label sets, without heads that would be identical.

    A PU head's prior is ``base prior × distortion`` (the paper's misspecification study) and must
    stay in (0, 1): a product outside is an error naming it (clipping would silently change the
    experiment). ``priors`` may map each label set to its own priors (estimated ones). bce/wbce
    ignore the prior, so they get one head per (seed, label set); pn trains on the true labels, so
    it gets one head per seed, with label set ``true_label_column``. ``column`` of each spec
    indexes ``[*label_sets, true_label_column]``. ``distorted_losses`` (default: every PU loss)
    are the losses the distortions apply to; the others train at distortion 1 only. ``surrogate``
    is every PU head's loss ℓ (``sigmoid`` or ``logistic``, :mod:`impulses.pu.losses`).

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
                        head = HeadSpec(
                            loss,
                            prior,
                            seed,
                            column,
                            prior_prime,
                            beta,
                            gamma,
                            name=name,
                            surrogate=surrogate,
                        )
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
        val_fraction: The share held out per label set for the PU criteria (0: none).
        val_seed: The seed of the held-out split.
        select: The criterion that marked the ``selected`` heads (a key of
            :data:`SELECTION_CRITERIA`), or None.
        validation: Per label set (and ``y`` for pn heads): ``labeled``/``unlabeled`` rows held out
            and ``train_labeled``/``train_unlabeled`` rows trained on.
        val_rows: Per label set, the held-out row indices into X (sorted).
    """

    rows: Any
    history: Any
    heads: HeadsResult
    prior_estimates: dict[str, PriorEstimate] = field(default_factory=dict)
    eval_on: str = "none"
    label_sets: list[str] = field(default_factory=list)
    val_fraction: float = 0.0
    val_seed: int = 0
    select: str | None = None
    validation: dict[str, dict[str, int]] = field(default_factory=dict)
    val_rows: dict[str, np.ndarray] = field(default_factory=dict)

    def save(self, out_dir: str | os.PathLike[str], **provenance: Any) -> list[Path]:
        """Write the run into ``out_dir``, atomically: results, heads (torch and portable), history, selection.

        Files: ``results.csv``, ``heads.pt``, ``heads.safetensors`` + ``heads.json``
        (:func:`impulses.pu.export.save_portable`), ``history.csv`` when there is a history, and with
        a selection ``selected/heads.pt`` + ``selected/heads.safetensors`` + ``selected/heads.json``
        holding the selected heads alone, their held-out criteria in the meta's ``selection``. A
        ``history.csv`` or ``selected/`` left by an earlier run is removed when this run has none,
        so the folder never pairs results with another run's files.

        Args:
            out_dir: The run folder (created if missing).
            **provenance: Kept in heads.pt and heads.json beside the weights (the store's dim and
                fingerprint, the label file, ...); JSON-able values.

        Returns:
            The files written.

        Raises:
            ImpulsesError: ``out_dir`` is an existing file or cannot be written.
        """
        from impulses.pu.export import SIDECAR_NAME, WEIGHTS_NAME, save_portable

        out = check_output_dir(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        written = [out / "results.csv", out / "heads.pt"]
        with atomic_path(written[0]) as tmp:
            self.rows.write_csv(tmp)
        grid = self.rows.select("head", "loss", "prior", "base_prior", "distortion", "seed", "label_set")
        meta = {"label_sets": list(self.label_sets), "grid": grid.to_dicts(), **provenance}
        if self.prior_estimates:
            meta["prior_estimates"] = {name: est.as_dict() for name, est in self.prior_estimates.items()}
        if self.val_fraction > 0:
            meta["validation"] = {
                "val_fraction": float(self.val_fraction),
                "val_seed": int(self.val_seed),
                "label_sets": {name: dict(counts) for name, counts in self.validation.items()},
            }
        save_heads(written[1], self.heads, **meta)
        written.extend(save_portable(self.heads, out, meta=meta))
        history = out / "history.csv"
        if self.history is not None:
            with atomic_path(history) as tmp:
                self.history.write_csv(tmp)
            written.append(history)
        else:
            history.unlink(missing_ok=True)
        chosen_dir = out / SELECTED_DIR
        if self.select is not None:
            index = [k for k, chosen in enumerate(self.rows["selected"].to_list()) if chosen]
            chosen_meta = {
                **meta,
                "grid": [meta["grid"][k] for k in index],
                "selection": {
                    "criterion": self.select,
                    "column": SELECTION_CRITERIA[self.select],
                    "heads": self.selected().select("head", "label_set", *VALIDATION_COLUMNS).to_dicts(),
                },
            }
            chosen = subset_heads(self.heads, index)
            written.append(save_heads(chosen_dir / "heads.pt", chosen, **chosen_meta))
            written.extend(save_portable(chosen, chosen_dir, meta=chosen_meta))
        elif chosen_dir.is_dir():
            for name in ("heads.pt", WEIGHTS_NAME, SIDECAR_NAME):
                (chosen_dir / name).unlink(missing_ok=True)
            if not any(chosen_dir.iterdir()):
                chosen_dir.rmdir()
        return written

    def selected(self) -> Any:
        """The rows of the heads ``select`` chose: one per label set (none where every value was NaN).

        Raises:
            ParameterError: the sweep made no selection (``select`` was None).
        """
        import polars as pl

        if self.select is None or "selected" not in self.rows.columns:
            raise ParameterError(
                "select", "was not given: the sweep selected no head (give val_fraction too)"
            )
        return self.rows.filter(pl.col("selected"))

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


def subset_heads(result: HeadsResult, index: Sequence[int]) -> HeadsResult:
    """The heads ``index`` of ``result`` (in that order) as a HeadsResult of their own, history dropped.

    Specs keep their label ``column``, so the ``label_sets`` recorded beside them still apply.
    """
    index = [int(k) for k in index]
    config = dict(result.config)
    if isinstance(config.get("columns"), list) and len(config["columns"]) == len(result.heads):
        config["columns"] = [config["columns"][k] for k in index]
    return HeadsResult(
        W=np.ascontiguousarray(result.W[:, index]),
        b=np.ascontiguousarray(result.b[index]),
        heads=[result.heads[k] for k in index],
        steps=np.asarray(result.steps)[index],
        skipped_batches=np.asarray(result.skipped_batches)[index],
        batches_per_epoch=result.batches_per_epoch,
        epochs=result.epochs,
        seconds=result.seconds,
        config=config,
        meta=dict(result.meta),
    )


def check_selection(val_fraction: float, select: str | None, bootstrap: int = 200) -> None:
    """The held-out validation arguments of :func:`run_sweep`, checked (call it before loading data).

    Raises:
        ParameterError: ``val_fraction`` outside [0, 1), an unknown ``select``, ``select`` without a
            held-out share, or ``bootstrap`` not an integer >= 0.
    """
    if not (isinstance(val_fraction, int | float) and 0 <= val_fraction < 1):
        raise ParameterError(
            "val_fraction", f"must be in [0, 1) (the share held out; 0: none), got {val_fraction!r}"
        )
    if select is not None:
        if select not in SELECTION_CRITERIA:
            raise ParameterError("select", f"must be one of {', '.join(SELECTION_CRITERIA)}, got {select!r}")
        if val_fraction == 0:
            raise ParameterError(
                ("select", "val_fraction"),
                "go together: the criteria are computed on held-out PU data, give a val_fraction > 0",
            )
    if not isinstance(bootstrap, int | np.integer) or isinstance(bootstrap, bool) or bootstrap < 0:
        raise ParameterError("bootstrap", f"must be an integer >= 0 (0: no interval), got {bootstrap!r}")


def validation_split(
    S: Any, fraction: float, seed: int = 0, *, names: Sequence[str] | None = None
) -> list[np.ndarray]:
    """The held-out rows of each column of a 0/1 label matrix: a stratified, seeded share ``fraction``.

    Column c holds out round(fraction × n) of its n rows labeled 1 and likewise of its rows labeled
    0, at least one and at most n − 1 of each, drawn by ``np.random.default_rng([seed, c])``: a
    column's split depends only on its own labels, the seed and its position.

    Args:
        S: Labels (N, C) or (N,), 0/1.
        fraction: The share to hold out, in (0, 1).
        seed: The split's seed.
        names: Each column's name, for errors.

    Returns:
        One sorted int64 array of row indices per column.

    Raises:
        ParameterError: a column has fewer than 2 rows labeled 1 or labeled 0 (nothing to hold out
            while keeping one to train on).
    """
    S = np.asarray(S)
    S = S[:, None] if S.ndim == 1 else S
    out = []
    for c in range(S.shape[1]):
        rng = np.random.default_rng([int(seed), c])
        held = []
        for value, what in ((1, "labeled positive"), (0, "unlabeled row")):
            rows = np.flatnonzero(S[:, c] == value)
            if rows.size < 2:
                name = names[c] if names is not None else str(c)
                raise ParameterError(
                    "val_fraction",
                    f"holds out rows of label set {name}, which has {rows.size} {what}(s): need at least 2",
                )
            m = min(max(round(fraction * rows.size), 1), rows.size - 1)
            held.append(rng.permutation(rows)[:m])
        out.append(np.sort(np.concatenate(held)).astype(np.int64))
    return out


def check_output_dir(out: str | os.PathLike[str]) -> Path:
    """``out`` as a folder results can be written to; call it before training. Creates nothing.

    Raises:
        ParameterError: ``out`` is an existing file, or it (or the folder it would be created in)
            cannot be written.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ParameterError("out", f"{out} is a file, not a folder; choose a folder for the results")
    check_creatable(out, out, "out")
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
    surrogate: str = "sigmoid",
    val_fraction: float = 0.0,
    val_seed: int = 0,
    select: str | None = None,
    bootstrap: int = 200,
    on_epoch: Callable[[int, int], None] | None = None,
    on_prior_estimate: Callable[[str, PriorEstimate], None] | None = None,
    max_memory: int | str | None = None,
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
        surrogate: The PU losses' loss ℓ: ``sigmoid`` (the paper's) or ``logistic`` (log-odds logits).
        val_fraction: Share F of each label set's labeled positives and of its unlabeled rows held
            out (:func:`validation_split`; pn heads hold out F of y's positives and negatives): each
            label set's heads train on its other rows, in a run of their own (so a head is the one
            a run on its training part alone gives), ``"auto"`` priors are estimated there, and
            every head gets the held-out criteria :data:`VALIDATION_COLUMNS`. 0: no hold-out, one
            joint run, no criteria.
        val_seed: Seed of the held-out split.
        select: Mark the head with the highest criterion per label set (``selected``): one of
            :data:`SELECTION_CRITERIA` (``"pu-auc"``, ``"lee-liu"``, ``"pu-accuracy"``,
            ``"pu-balanced-accuracy"``); needs ``val_fraction > 0``. Ties go to the first head
            of the grid.
        bootstrap: Bootstrap replicates of the ``pu_auc`` interval (95%, seeded by ``val_seed``);
            0: no interval (NaN).
        on_epoch: Called with (epochs done, epochs) after each epoch (with a hold-out, epochs
            counts over the per-label-set runs).
        on_prior_estimate: Called with (label set, estimate) for each ``"auto"`` prior.
        max_memory: Bytes (or "2G") the training features may take; more is read from ``X`` (a
            store or :class:`~impulses.pu.trainer.FeatureSource`) in windows, block-shuffled (see
            :func:`impulses.pu.heads.train_heads`).

    Returns:
        A :class:`SweepResult`; metrics (decision at logit 0) are on the test set when given, else
        on the training rows' ``y`` when given (``eval_on`` says which). The held-out criteria
        (logits of the held-out rows, decision at logit 0) are ``pu_auc`` with its bootstrap
        interval, ``lee_liu``, and at ``val_prior`` ``implied_pn_auc``, ``pu_accuracy`` and
        ``pu_balanced_accuracy``. ``val_prior`` is the head's base prior (before distortion: the
        prior the user believes, the same for the heads of a distortion study, so that their
        accuracies are comparable); for bce/wbce heads the label set's ``"auto"`` estimate, else
        the sweep's base prior when it has exactly one, else NaN; for pn heads (label set ``y``,
        no unlabeled positives) NaN, so their prior-based criteria are NaN.

    Raises:
        ParameterError: any argument out of range, checked before training.
    """
    import polars as pl

    from impulses.pu.heads import train_heads
    from impulses.pu.kernels import check_kernel
    from impulses.pu.metrics import evaluate_heads
    from impulses.pu.prior import auto_prior
    from impulses.runtime import light_device

    for name, value in (("epochs", epochs), ("batch_size", batch_size), ("seeds", seeds)):
        if not isinstance(value, int | np.integer) or value < 1:
            raise ParameterError(name, f"must be an integer of at least 1, got {value!r}")
    if not (isinstance(lr, int | float) and lr > 0 and math.isfinite(lr)):
        raise ParameterError("lr", f"must be > 0, got {lr!r}")
    if eval_every < 0:
        raise ParameterError("eval_every", f"must be 0 or more, got {eval_every}")
    check_selection(val_fraction, select, bootstrap)
    if max_memory is not None and val_fraction > 0:
        raise ParameterError(
            ("max_memory", "val_fraction"), "do not go together yet: the hold-out runs index X in memory"
        )
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
    check_surrogate(surrogate)
    run_device = light_device(device)  # the CPU without importing torch, where that is all it is
    check_kernel(kernel, run_device)
    seed_list = list(range(int(seeds)))

    def grid_for(per_set: Sequence[float] | Mapping[str, Sequence[float]]) -> list[GridHead]:
        return head_grid(
            losses, per_set, distortions, seed_list, label_sets, prior_prime=prior_prime, beta=beta,
            gamma=gamma, distorted_losses=distorted_losses, surrogate=surrogate,
        )  # fmt: skip

    label_matrix = np.column_stack([S, y]) if needs_y else S
    held: list[np.ndarray] | None = None
    train_rows: list[np.ndarray] = []
    if val_fraction > 0:
        held = validation_split(label_matrix, val_fraction, val_seed, names=[*label_sets, TRUE_LABELS])
        train_rows = [np.setdiff1d(np.arange(n), rows, assume_unique=True) for rows in held]

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
            if not hasattr(X, "__array__") and not hasattr(X, "numpy"):  # a store read in windows
                raise ParameterError(
                    ("priors", "max_memory"),
                    "do not go together: 'auto' estimates the prior from features in memory; give a number",
                )
            for j, name in enumerate(label_sets):
                if held is None:
                    estimates[name] = auto_prior(X, S[:, j], label_set=name)
                else:  # on the label set's training rows: the held-out rows stay unseen
                    estimates[name] = auto_prior(X[train_rows[j]], S[train_rows[j], j], label_set=name)
                if on_prior_estimate is not None:
                    on_prior_estimate(name, estimates[name])
            grid = grid_for({name: [*concrete, float(estimates[name].prior)] for name in label_sets})

    if X_test is not None:
        eval_X, eval_y, eval_on = X_test, y_test, "test"
    elif y is not None:
        eval_X, eval_y, eval_on = X, y, "train (y)"
    else:
        eval_X = eval_y = None
        eval_on = "none"
    specs = [head.spec for head in grid]
    train_args = dict(
        epochs=epochs, batch_size=batch_size, lr=lr, stratified=stratified, shuffle_seed=shuffle_seed,
        device=run_device, threads=threads, kernel=kernel, X_test=X_test if eval_every > 0 else None,
        y_test=y_test if eval_every > 0 else None, eval_every=eval_every, track_loss=eval_every > 0, max_memory=max_memory,
    )  # fmt: skip
    if held is None:
        result = train_heads(X, label_matrix, specs, on_epoch=on_epoch, **train_args)
    else:
        result = _train_per_label_column(X, label_matrix, specs, train_rows, on_epoch, train_args)
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
    ).select(RESULT_COLUMNS)
    validation: dict[str, dict[str, int]] = {}
    val_rows: dict[str, np.ndarray] = {}
    if held is not None:
        names = [*label_sets, TRUE_LABELS]
        for column, rows_c in enumerate(held):
            s_c = label_matrix[:, column]
            n_p = int(s_c.sum())
            labeled = int(s_c[rows_c].sum())
            validation[names[column]] = {
                "labeled": labeled, "unlabeled": int(rows_c.size - labeled),
                "train_labeled": n_p - labeled, "train_unlabeled": int(n - n_p - rows_c.size + labeled),
            }  # fmt: skip
            val_rows[names[column]] = rows_c
        concrete_bases = {float(p) for p in concrete}
        sweep_base = next(iter(concrete_bases)) if len(concrete_bases) == 1 else math.nan
        val_prior = []
        for head in grid:
            if head.label_set == TRUE_LABELS and get_loss(head.spec.loss).labels == "y":
                val_prior.append(math.nan)
            elif head.base_prior is not None:
                val_prior.append(float(head.base_prior))
            elif head.label_set in estimates:
                val_prior.append(float(estimates[head.label_set].prior))
            else:
                val_prior.append(sweep_base)
        criteria = held_out_criteria(
            result, X, label_matrix, [h.spec.column for h in grid], held, np.asarray(val_prior),
            bootstrap=bootstrap, seed=val_seed,
        )  # fmt: skip
        counts = [validation[names[h.spec.column]] for h in grid]
        rows = rows.with_columns(
            pl.Series("val_fraction", [float(val_fraction)] * len(grid), dtype=pl.Float64),
            pl.Series("val_seed", [int(val_seed)] * len(grid), dtype=pl.Int64),
            pl.Series("val_labeled", [c["labeled"] for c in counts], dtype=pl.Int64),
            pl.Series("val_unlabeled", [c["unlabeled"] for c in counts], dtype=pl.Int64),
            pl.Series("val_prior", val_prior, dtype=pl.Float64),
            *(pl.Series(name, criteria[name], dtype=pl.Float64) for name in VALIDATION_COLUMNS[5:]),
        )
        if select is not None:
            rows = rows.with_columns(pl.Series("selected", _select(rows, SELECTION_CRITERIA[select])))
    return SweepResult(
        rows=rows,
        history=history_frame(result.history, pl.DataFrame(coords, schema_overrides=schema)),
        heads=result,
        prior_estimates=estimates,
        eval_on=eval_on,
        label_sets=label_sets,
        val_fraction=float(val_fraction),
        val_seed=int(val_seed),
        select=select,
        validation=validation,
        val_rows=val_rows,
    )


def _select(rows: Any, column: str) -> list[bool]:
    """Per label set, True for the first row with the highest finite ``column`` (none if all are NaN)."""
    values = rows[column].to_numpy()
    chosen = [False] * rows.height
    for label_set in dict.fromkeys(rows["label_set"].to_list()):
        index = np.flatnonzero((rows["label_set"] == label_set).to_numpy() & np.isfinite(values))
        if index.size:
            chosen[int(index[np.argmax(values[index])])] = True
    return chosen


def held_out_criteria(
    heads: HeadsResult,
    X: Any,
    label_matrix: np.ndarray,
    columns: Sequence[int],
    held: Sequence[np.ndarray],
    priors: np.ndarray,
    *,
    bootstrap: int = 200,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """The PU criteria of every head on its label column's held-out rows (decision at logit 0).

    Args:
        heads: K trained heads.
        X: The features (N, D).
        label_matrix: 0/1 labels (N, C).
        columns: Each head's column of ``label_matrix``.
        held: Per column, its held-out row indices.
        priors: (K,) π per head for ``implied_pn_auc`` and the PU accuracies; NaN: those are NaN.
        bootstrap: Replicates of the ``pu_auc`` interval (0: NaN bounds).
        seed: The bootstrap's seed.

    Returns:
        (K,) float64 arrays keyed by ``pu_auc``, ``pu_auc_low``, ``pu_auc_high``,
        ``implied_pn_auc``, ``lee_liu``, ``pu_accuracy``, ``pu_balanced_accuracy``.
    """
    from impulses.pu.criteria import (
        bootstrap_interval,
        implied_pn_auc,
        lee_liu,
        pu_auc,
        pu_balanced_accuracy,
        pu_risk_accuracy,
    )

    k = len(columns)
    out = {name: np.full(k, np.nan) for name in VALIDATION_COLUMNS[5:]}
    columns = np.asarray(columns)
    for column in dict.fromkeys(columns.tolist()):
        idx = np.flatnonzero(columns == column)
        rows = held[column]
        logits = heads.decision_function(X[rows])[:, idx]
        s = label_matrix[rows, column]
        out["pu_auc"][idx] = pu_auc(logits, s)
        if bootstrap > 0:
            interval = bootstrap_interval(pu_auc, logits, s, n=int(bootstrap), seed=seed)
            out["pu_auc_low"][idx], out["pu_auc_high"][idx] = interval.low, interval.high
        out["lee_liu"][idx] = lee_liu(logits > 0, s)
        known = np.isfinite(priors[idx])
        if known.any():
            at, pi = idx[known], priors[idx][known]
            out["implied_pn_auc"][at] = implied_pn_auc(out["pu_auc"][at], pi)
            out["pu_accuracy"][at] = pu_risk_accuracy(logits[:, known], s, pi)
            out["pu_balanced_accuracy"][at] = pu_balanced_accuracy(logits[:, known], s, pi)
    return out


def _train_per_label_column(
    X: Any,
    label_matrix: np.ndarray,
    specs: list[HeadSpec],
    train_rows: Sequence[np.ndarray],
    on_epoch: Callable[[int, int], None] | None,
    train_args: dict[str, Any],
) -> HeadsResult:
    """Each label column's heads trained on that column's training rows alone, joined in grid order.

    One :func:`~impulses.pu.heads.train_heads` run per column: the held-out rows of a label set are
    not in its heads' run at all (exact, unlike a per-row weight, which would still shape the
    batches), and a head equals the one a run on its training rows alone gives.
    """
    from impulses.pu.heads import train_heads

    columns = [int(spec.column) for spec in specs]
    groups = list(dict.fromkeys(columns))
    epochs = int(train_args["epochs"])
    d, k = X.shape[1], len(specs)
    W = np.empty((d, k), dtype=np.float32)
    b = np.empty(k, dtype=np.float32)
    steps = np.zeros(k, dtype=np.int64)
    skipped = np.zeros(k, dtype=np.int64)
    parts = []
    for g, column in enumerate(groups):
        idx = [i for i, c in enumerate(columns) if c == column]
        rows = train_rows[column]
        progress = None
        if on_epoch is not None:

            def progress(done: int, total: int, _g: int = g) -> None:
                on_epoch(_g * total + done, len(groups) * total)

        part = train_heads(
            X[rows], label_matrix[rows], [specs[i] for i in idx], on_epoch=progress, **train_args
        )
        W[:, idx], b[idx] = part.W, part.b
        steps[idx], skipped[idx] = part.steps, part.skipped_batches
        parts.append((idx, part))
    history = []
    for r, record in enumerate(parts[0][1].history):
        merged: dict[str, Any] = {"epoch": record["epoch"]}
        for key in record:
            if key == "epoch":
                continue
            values = np.full(k, np.nan)
            for idx, part in parts:
                values[idx] = np.asarray(part.history[r][key], dtype=np.float64).reshape(-1)
            merged[key] = values
        history.append(merged)
    config = dict(parts[0][1].config)
    config["columns"] = columns
    kernels = list(dict.fromkeys(part.config["kernel"] for _, part in parts))
    config["kernel"] = kernels[0] if len(kernels) == 1 else ",".join(kernels)
    config["runs"] = "one per label set (held-out rows)"
    return HeadsResult(
        W=W,
        b=b,
        heads=list(specs),
        steps=steps,
        skipped_batches=skipped,
        batches_per_epoch=max(part.batches_per_epoch for _, part in parts),
        epochs=epochs,
        seconds=sum(part.seconds for _, part in parts),
        history=history,
        config=config,
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
