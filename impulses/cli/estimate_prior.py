"""``impulses estimate-prior``: π = p(y=1|s=0) from a label set's features (BBE, Elkan–Noto)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from impulses.cli._options import JsonOption, QuietOption, SkipNonfiniteOption
from impulses.cli._output import note, print_json, print_table
from impulses.cli._stores import read_training
from impulses.errors import LabelSetError, ParameterError

METHOD_NAMES = {"bbe": "BBE", "elkan-noto": "Elkan–Noto", "tedn": "TEDⁿ"}


def estimate_prior_command(
    train: Annotated[Path, typer.Option(help="Training embedding store holding the label set's ids.")],
    labels: Annotated[
        Path, typer.Option(help="Label set (.parquet/.csv) with id and s (or s_<name>), optionally y.")
    ],
    label_set: Annotated[
        str | None, typer.Option(help="Which label set of a file with several (s_<name>): give NAME.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the cross-fitting folds.")] = 0,
    folds: Annotated[
        int, typer.Option(min=2, help="Cross-fitting folds of the P-vs-U classifier (at least 2).")
    ] = 2,
    method: Annotated[
        list[str] | None,
        typer.Option(help="Repeatable: bbe, elkan-noto, tedn (--prior auto uses bbe). (default: all three)"),
    ] = None,
    skip_nonfinite: SkipNonfiniteOption = False,
    quiet: QuietOption = False,
    as_json: JsonOption = False,
) -> None:
    """Estimate the prior π = p(y=1|s=0), the share of positives among the unlabeled (BBE, Elkan–Noto, TEDⁿ).

    BBE and TEDⁿ (Garg et al. 2021) give a confidence interval; with a y column the true π is shown too. BBE is the estimate train-head --prior auto uses.

    Examples:

        impulses estimate-prior --train train.h5 --labels labels.parquet

        impulses estimate-prior --train train.h5 --labels labels.csv --label-set 2 --json
    """
    from impulses.pu.prior import PRIOR_METHODS, prior_report

    methods = tuple(method or ("bbe", "elkan-noto", "tedn"))
    unknown = [m for m in methods if m not in PRIOR_METHODS]
    if unknown:  # before any reading, so the error comes alone
        raise ParameterError("methods", f"{unknown} not known (known: {', '.join(PRIOR_METHODS)})")
    names = [label_set] if label_set is not None else None
    training = read_training(train, labels, names, skip_nonfinite=skip_nonfinite)
    if len(training.names) > 1:
        raise LabelSetError(
            f"{labels} holds label sets {', '.join(training.names)}: choose one with --label-set"
        )
    note(
        f"fitting the P-vs-U classifiers on {len(training.X):,} x {training.X.shape[1]} features ...",
        quiet=quiet,
    )
    report = prior_report(training.X, training.S[:, 0], training.y, methods=methods, n_folds=folds, seed=seed)
    if as_json:
        print_json({"train": str(train), "labels": str(labels), "label_set": label_set, **report})
        return
    true_prior = report["true_prior"]
    rows = []
    for name, est in report["estimates"].items():
        interval = (
            f"[{est['lower']:.4f}, {est['upper']:.4f}] (δ = {est['details']['delta']})"
            if est["lower"] is not None
            else ""
        )
        error = f"{est['prior'] - true_prior:+.4f}" if true_prior is not None else ""
        rows.append(
            (
                METHOD_NAMES.get(name, name),
                f"{est['prior']:.4f}",
                interval,
                f"{est['class_prior']:.4f}",
                error,
            )
        )
    if true_prior is not None:
        rows.append(("true (from y)", f"{true_prior:.4f}", "", f"{report['true_class_prior']:.4f}", ""))
    n_l, n_u = report["n_labeled"], report["n_unlabeled"]
    print_table(
        f"π = p(y=1 | s=0) of {labels} ({n_l:,} labeled, {n_u:,} unlabeled)",
        rows,
        ("method", "π estimate", "interval", "p(y=1)", "error"),
        right=("π estimate", "p(y=1)", "error"),
    )
