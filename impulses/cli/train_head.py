"""``impulses train-head``: a sweep of linear PU heads on cached embeddings, evaluated and saved."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Annotated, Any

import typer

from impulses.cli._options import DeviceOption, JsonOption, ProgressOption, QuietOption, SkipNonfiniteOption
from impulses.cli._output import LazyProgress, json_value, note, print_json, print_table, say, warn
from impulses.cli._params import check_distinct, check_together, renamed_params
from impulses.cli._stores import read_test, read_training
from impulses.errors import ParameterError


def parse_priors(values: list[str] | None, prior_range: str | None) -> list[float | str]:
    """``--prior`` values (numbers or ``auto``) and ``--prior-range START:STOP:N`` (inclusive linspace).

    Each error names the option the bad value came from.
    """
    priors: list[float | str] = []
    for value in values or []:
        if value.strip().lower() == "auto":
            priors.append("auto")
            continue
        try:
            number = float(value)
        except ValueError:
            raise ParameterError("prior", f"{value!r} is not a number (or 'auto')") from None
        if not 0 < number < 1:
            raise ParameterError(
                "prior", f"{number:g} is not in (0, 1): π is p(y=1 | s=0), a share of the unlabeled"
            )
        priors.append(number)
    if prior_range:
        parts = prior_range.split(":")
        try:
            if len(parts) != 3:
                raise ValueError
            start, stop, count = float(parts[0]), float(parts[1]), int(parts[2])
            if count < 1:
                raise ValueError
        except ValueError:
            raise ParameterError(
                "prior_range", f"{prior_range!r} must be START:STOP:N, e.g. 0.05:0.5:10"
            ) from None
        step = (stop - start) / (count - 1) if count > 1 else 0.0
        for value in (start + i * step for i in range(count)):
            if not 0 < value < 1:
                raise ParameterError("prior_range", f"{prior_range} gives {value:g}, which is not in (0, 1)")
            priors.append(value)
    return list(dict.fromkeys(priors))


def parse_distortions(value: str) -> list[float]:
    """``--distortion 0.1,0.5,1,2``: factors applied to every base prior."""
    try:
        factors = [float(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise ParameterError(
            "distortion", f"{value!r} must be comma-separated numbers, e.g. 0.5,1,2"
        ) from None
    if not factors:
        raise ParameterError("distortion", "needs at least one factor, e.g. 1")
    return list(dict.fromkeys(factors))


def train_head_command(
    train: Annotated[Path, typer.Option(help="Training embedding store (.h5) holding the label set's ids.")],
    labels: Annotated[
        Path,
        typer.Option(
            help="Label set (.parquet/.csv): id, s and/or s_<name> (one label set each), optional y."
        ),
    ],
    out: Annotated[Path, typer.Option(help="Directory for results.csv, heads.pt (and history.csv).")],
    prior: Annotated[
        list[str] | None,
        typer.Option(
            help="π = p(y=1 | s=0), repeatable: a number in (0, 1), or 'auto' (estimated per label set, BBE)."
        ),
    ] = None,
    prior_range: Annotated[
        str | None, typer.Option(help="More priors: START:STOP:N, N evenly spaced values, ends included.")
    ] = None,
    distortion: Annotated[
        str,
        typer.Option(
            help="B1,B2,...: train each PU head at prior × B (the paper's misspecification study); "
            "a product outside (0, 1) is an error."
        ),
    ] = "1",
    loss: Annotated[
        list[str] | None, typer.Option(help="Repeatable: imbnnpu (default), nnpu, upu, bce, wbce, pn.")
    ] = None,
    seeds: Annotated[int, typer.Option(help="Seeds 0..N-1 of each head's initialisation.")] = 1,
    label_set: Annotated[
        list[str] | None,
        typer.Option(help="Only these label sets of the file (s, s_NAME or NAME); default all."),
    ] = None,
    epochs: Annotated[int, typer.Option(help="Passes over the training rows.")] = 100,
    batch_size: Annotated[int, typer.Option(help="Rows per step.")] = 256,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = 3e-4,
    prior_prime: Annotated[
        float, typer.Option(help="π′ of imbnnPU: the positives' share of the loss.")
    ] = 0.5,
    beta: Annotated[float, typer.Option(help="nnPU β: correct when R_n < −β.")] = 0.0,
    gamma: Annotated[float, typer.Option(help="nnPU γ: the correction step's scale.")] = 1.0,
    stratified: Annotated[
        bool, typer.Option(help="Give every batch its share of labeled positives (P and U dealt separately).")
    ] = False,
    shuffle_seed: Annotated[
        int, typer.Option(help="Seed of the per-epoch batch order shared by all heads.")
    ] = 0,
    device: DeviceOption = "auto",
    threads: Annotated[
        int | None,
        typer.Option(
            help="CPU threads. Fused kernel: default all cores, at most one per 256 feature columns, "
            "one fewer with --max-memory windows (their reader gets a core; the weights do not depend on it). "
            "Torch kernel: default 1 for small sweeps, torch's setting for large ones; on a machine "
            "shared with other jobs, 1 is often much faster."
        ),
    ] = None,
    kernel: Annotated[
        str,
        typer.Option(
            help="How a step reads its batch: fused (numba, CPU; reads shuffled rows in place, fastest "
            "for few heads), wide (numba, CPU; 4x4 tiles of rows and heads, fastest for many), torch "
            "(gather + matrix products; the one on CUDA) or auto (on a CPU with numba fused up to 2 "
            "heads, wide beyond; torch otherwise)."
        ),
    ] = "auto",
    max_memory: Annotated[
        str | None,
        typer.Option(
            help="Memory the run may take, e.g. 2G (half of it for the process itself): larger stores are read "
            "in windows of a quarter of it (features plus 64 bytes per row and head), with block-shuffled "
            "epochs (chunk order shuffled, rows shuffled within a window)."
        ),
    ] = None,
    test: Annotated[Path | None, typer.Option(help="Test embedding store (with --test-labels).")] = None,
    test_labels: Annotated[Path | None, typer.Option(help="Test label set (.parquet/.csv): id, y.")] = None,
    eval_every: Annotated[
        int,
        typer.Option(
            help="With --test: test metrics every N epochs into DIR/history.csv (0: only at the end)."
        ),
    ] = 0,
    plot: Annotated[
        Path | None,
        typer.Option(
            help="With --test: write the figures here: test AUC over epochs per prior distortion, "
            "and a t-SNE of the test embeddings by class and by P/N."
        ),
    ] = None,
    surrogate: Annotated[
        str,
        typer.Option(
            help="The PU losses' loss: sigmoid (the paper's; logits are scores) or logistic (logits are "
            "log-odds, so predict --prevalence gives probabilities without calibration)."
        ),
    ] = "sigmoid",
    calibrate: Annotated[
        bool,
        typer.Option(
            "--calibrate",
            help="Hold out --calibrate-fraction of the training rows (stratified by their labels, seeded "
            "by --shuffle-seed), train on the rest, and fit PU Platt scaling per head on the held-out rows "
            "at its prior (saved in heads.pt; predict --prevalence uses it).",
        ),
    ] = False,
    calibrate_fraction: Annotated[
        float, typer.Option(help="With --calibrate: the share of training rows held out.")
    ] = 0.2,
    allow_other_encoder: Annotated[
        bool,
        typer.Option(
            "--allow-other-encoder",
            help="Evaluate on a --test store embedded by another encoder or transform than --train.",
        ),
    ] = False,
    skip_nonfinite: SkipNonfiniteOption = False,
    val_fraction: Annotated[
        float,
        typer.Option(
            help="Hold out this share of each label set's labeled positives and unlabeled rows, train on "
            "the rest, and report PU criteria per head on the held-out rows (pu_auc, lee_liu, ...)."
        ),
    ] = 0.0,
    val_seed: Annotated[int, typer.Option(help="Seed of the --val-fraction split.")] = 0,
    select: Annotated[
        str | None,
        typer.Option(
            help="With --val-fraction: mark the best head per label set by pu-auc, lee-liu, pu-accuracy or "
            "pu-balanced-accuracy (results.csv: selected) and save it alone under DIR/selected/."
        ),
    ] = None,
    progress: ProgressOption = True,
    quiet: QuietOption = False,
    as_json: JsonOption = False,
) -> None:
    """Train a sweep of linear PU heads on cached embeddings in one pass per epoch, and evaluate them.

    The heads are losses × priors × distortions × seeds × label sets (bce/wbce ignore the prior; pn trains on the true labels y).

    Metrics (decision at logit 0) are on --test when given, else on the training rows' y when the label set has it; 'seconds' is the wall time of the one joint training run of all heads.

    Examples:

        impulses train-head --train train.h5 --labels labels.parquet --prior 0.074 --out runs/heads

        impulses train-head --train train.h5 --labels l.parquet --prior 0.074 --distortion 0.1,0.5,1,2,5,10 --seeds 3 --test test.h5 --test-labels t.parquet --eval-every 1 --out runs/distortion

        impulses train-head --train train.h5 --labels l.parquet --prior-range 0.02:0.5:25 --loss imbnnpu --loss nnpu --loss bce --out runs/sweep --json

        impulses train-head --train train.h5 --labels l.parquet --prior 0.074 --distortion 0.5,1,2 --loss imbnnpu --loss nnpu --seeds 3 --val-fraction 0.2 --select pu-auc --out runs/select
    """
    from impulses.cli._stores import open_store
    from impulses.pu.calibration import held_out_rows
    from impulses.pu.heads import check_same_encoder, store_encoder
    from impulses.pu.losses import check_surrogate, get_loss
    from impulses.pu.sweep import check_output_dir, check_selection, run_sweep
    from impulses.pu.trainer import FeatureSource, parse_bytes

    check_selection(val_fraction, select)
    priors = parse_priors(prior, prior_range)
    distortions = parse_distortions(distortion)
    losses = loss or ["imbnnpu"]
    check_together(("test", test), ("test_labels", test_labels))
    if plot is not None and test is None:
        raise ParameterError("plot", "draws test-set figures: give --test and --test-labels too")
    check_distinct("out", out, train=train, labels=labels, test=test, test_labels=test_labels)
    check_output_dir(out)
    check_surrogate(surrogate)
    if calibrate and not 0 < calibrate_fraction < 1:
        raise ParameterError("calibrate_fraction", f"must be in (0, 1), got {calibrate_fraction:g}")
    needs_y = any(get_loss(name).labels == "y" for name in losses)
    budget = parse_bytes(max_memory)
    if budget is not None and skip_nonfinite:
        raise ParameterError(
            ("max_memory", "skip_nonfinite"),
            "do not go together: rows read in windows are checked, not left out",
        )
    if budget is not None and calibrate:
        raise ParameterError(
            ("max_memory", "calibrate"), "do not go together: calibration holds rows out in memory"
        )
    training = read_training(
        train, labels, label_set, require_y=needs_y, skip_nonfinite=skip_nonfinite, features=budget is None
    )
    test_set = None
    if test is not None:
        with renamed_params(store="test"):
            check_same_encoder(store_encoder(training.store), open_store(test), allow_other_encoder)
        test_set = read_test(test, test_labels, skip_nonfinite=skip_nonfinite)
    X, S, y = training.X, training.S, training.y
    if budget is not None:  # read from the store in windows while training (block-shuffled epochs)
        X = FeatureSource(training.store, training.rows)
    held = None
    if calibrate:
        with renamed_params(fraction="calibrate_fraction"):
            held = held_out_rows(S, calibrate_fraction, shuffle_seed)
        X, S, y = X[~held], S[~held], None if y is None else y[~held]
    start = f"training on {X.shape[0]:,} x {X.shape[1]} features ({len(training.names)} label set(s))"
    with LazyProgress(
        "epochs", enabled=progress and not quiet, on_start=partial(note, start, quiet=quiet)
    ) as bar:
        result = run_sweep(
            X, S, training.names, losses=losses, priors=priors, distortions=distortions,
            seeds=seeds, y=y, X_test=getattr(test_set, "X", None), y_test=getattr(test_set, "y", None),
            prior_prime=prior_prime, beta=beta, gamma=gamma, epochs=epochs, batch_size=batch_size, lr=lr,
            stratified=stratified, shuffle_seed=shuffle_seed, device=device, threads=threads, kernel=kernel,
            eval_every=1 if plot is not None and eval_every == 0 else eval_every,  # the AUC figure needs every epoch
            on_epoch=bar, on_prior_estimate=partial(_show_estimate, quiet=quiet), surrogate=surrogate,
            max_memory=budget,
            val_fraction=val_fraction, val_seed=val_seed, select=select,
        )  # fmt: skip
    provenance: dict[str, Any] = {}
    if held is not None:
        result.heads.calibrate(training.X[held], training.S[held])
        provenance["calibration_rows"] = {"fraction": calibrate_fraction, "seed": shuffle_seed,
                                          "held_out": int(held.sum()), "trained_on": int((~held).sum())}  # fmt: skip
    result.save(
        out, train_store=str(train), labels=str(labels), store_fingerprint=training.store.fingerprint,
        store_dim=training.store.dim, feature_dtype=training.store.dtype,
        store_encoder=store_encoder(training.store), **provenance,
    )  # fmt: skip
    if plot is not None and test_set is not None:
        for path in _write_plots(plot, result, test_set):
            note(f"figure: {path}", quiet=quiet)
    _warn_skipped(result)
    if as_json:
        print_json([{k: json_value(v) for k, v in row.items()} for row in result.rows.to_dicts()])
        return
    _print_results(result, out)


def _show_estimate(label_set: str, estimate: Any, *, quiet: bool) -> None:
    from impulses.pu.prior import METHOD_LABELS

    note(
        f"--prior auto (label set {label_set}): {METHOD_LABELS[estimate.method]} estimate π = {estimate.prior:.4f} "
        f"(interval {estimate.lower:.4f}-{estimate.upper:.4f})",
        quiet=quiet,
    )


def _warn_skipped(result: Any) -> None:
    """Heads that skipped batches (no labeled positive or no unlabeled row in them) deserve a warning."""
    skipped = result.rows["skipped_batches"]
    if skipped.max():
        batches = result.heads.batches_per_epoch * result.heads.epochs
        warn(
            f"warning: {(skipped > 0).sum()} head(s) took no step on up to {skipped.max()} of {batches} "
            "batches, which held no labeled positive or no unlabeled row (results.csv: skipped_batches); "
            "--stratified avoids that"
        )


def _write_plots(plot_dir: Path, result: Any, test_set: Any) -> list[Path]:
    """Fig. 3 (test AUC over epochs, one line per prior distortion, a panel per PU loss) and Fig. 2 (t-SNE)."""
    import polars as pl

    from impulses.plots import plot_auc_over_epochs, plot_tsne

    written = []
    history = result.history
    if history is not None and "auc" in history.columns:
        curves = history.filter(pl.col("distortion").is_not_null() & pl.col("auc").is_not_null()).select(
            "distortion", "epoch", "auc", head=pl.format("{}/seed {}", "label_set", "seed"), panel="loss"
        )
        if curves.height:
            written.append(plot_auc_over_epochs(curves, plot_dir / "auc_over_epochs.png"))
    written.append(
        plot_tsne(
            test_set.X, test_set.targets, test_set.y, plot_dir / "tsne.png", class_names=test_set.class_names
        )
    )
    return written


def _print_results(result: Any, out: Path) -> None:
    rows = result.rows.to_dicts()
    held_out = "pu_auc" in result.rows.columns
    chosen = "selected" in result.rows.columns
    table = [
        (row["head"] + (" *" if chosen and row["selected"] else ""),
         "" if row["prior"] is None else f"{row['prior']:.4g}",
         *(f"{row[m]:.4f}" for m in ("accuracy", "f1", "auc", "ap")),
         *((f"{row['pu_auc']:.4f}",) if held_out else ()))
        for row in rows
    ]  # fmt: skip
    columns = ("head", "prior", "accuracy", "f1", "auc", "ap", *(("pu_auc",) if held_out else ()))
    print_table(f"{len(rows)} head(s) -> {out}/results.csv, heads.pt", table, columns, right=columns[1:])
    say(f"metrics on: {result.eval_on}; trained in {rows[0]['seconds']:.2f} s")
    if held_out:
        say(
            f"pu_auc: on {result.val_fraction:g} of each label set's rows, held out (--val-seed {result.val_seed})"
        )
    if chosen:
        say(f"* selected by {result.select} per label set -> {out}/selected/")
