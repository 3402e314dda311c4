"""``impulses split``: a PU label set from a store's classes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from impulses.cli._options import JsonOption, SkipNonfiniteOption
from impulses.cli._output import print_json, print_table
from impulses.cli._params import check_distinct, check_together, renamed_params
from impulses.cli._stores import splittable
from impulses.errors import ImpulsesError


def split_command(
    store: Annotated[
        Path, typer.Option(help="Training embedding store whose targets give the true classes.")
    ],
    out: Annotated[Path, typer.Option(help="Label set to write: .parquet or .csv (id, y, s or s_0..s_K-1).")],
    positive_classes: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated positive classes: indices or names (a CIFAR-100 store also takes "
            "superclass names such as 'vehicles 1')."
        ),
    ] = None,
    preset: Annotated[
        str | None,
        typer.Option(
            help="A split of the paper's Table I: cifar10-imbalanced, cifar100-vehicles, fashion-mnist-imbalanced."
        ),
    ] = None,
    n_positive: Annotated[
        int | None,
        typer.Option(help="Keep this many positives (seeded random subset); default: all, or the preset's."),
    ] = None,
    label_frequency: Annotated[
        float | None,
        typer.Option(help="c: share of the kept positives that are labeled, in (0, 1]; default 0.2."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the downsampling and of the labeled subsets.")] = 0,
    n_label_sets: Annotated[
        int,
        typer.Option(
            help="K independent labeled subsets of the same samples, written as columns s_0..s_K-1."
        ),
    ] = 1,
    test: Annotated[
        Path | None, typer.Option(help="Test embedding store: also write its label set (id, y).")
    ] = None,
    test_out: Annotated[
        Path | None, typer.Option(help="Where to write the test label set (with --test).")
    ] = None,
    skip_nonfinite: SkipNonfiniteOption = False,
    as_json: JsonOption = False,
) -> None:
    """Make a PU label set from a store's classes and print π = p(y=1|s=0), P:N and L:U.

    Every embedding is checked first: rows holding NaN or Inf stop the split, or with --skip-nonfinite
    stay out of the label set (as samples of unknown class).

    Examples:

        impulses split --store train.h5 --preset fashion-mnist-imbalanced --out labels.parquet

        impulses split --store train.h5 --preset cifar10-imbalanced --out l.parquet --test test.h5 --test-out t.parquet

        impulses split --store digits.h5 --positive-classes 0,1,2 --label-frequency 0.3 --n-label-sets 3 --out l.csv
    """
    from impulses.pu.labels import write_label_set
    from impulses.pu.splits import split_store

    if (positive_classes is None) == (preset is None):
        raise ImpulsesError("give exactly one of --positive-classes and --preset")
    check_together(("test", test), ("test_out", test_out))
    check_distinct("out", out, store=store, test=test, test_out=test_out)
    check_distinct("test_out", test_out, store=store, test=test)
    train_rows = splittable(store, skip_nonfinite=skip_nonfinite)
    test_rows = None if test is None else splittable(test, skip_nonfinite=skip_nonfinite)
    with renamed_params(test_store="test"):
        result = split_store(
            train_rows, positive_classes=positive_classes, preset=preset, n_positive=n_positive,
            label_frequency=label_frequency, seed=seed, n_label_sets=n_label_sets, test_store=test_rows,
        )  # fmt: skip
    write_label_set(result.split.labels, out)
    if result.test_labels is not None and test_out is not None:
        write_label_set(result.test_labels, test_out)
    for rows in (train_rows, test_rows):
        if rows is not None:
            rows.warn_left_out()
    summary = {"store": str(store), "out": str(out), **result.summary()}
    if test is not None:
        summary.update(test=str(test), test_out=str(test_out))
    if as_json:
        print_json(summary)
        return
    title = f"PU split of {store}" + (f" (preset {preset})" if preset else "")
    print_table(title, _stats_rows(result, summary))


def _stats_rows(result: Any, summary: dict[str, Any]) -> list[tuple[str, str]]:
    """The table's rows: classes, P:N, L:U, π, label sets, and what was written."""
    stats = result.split.stats
    classes = zip(result.classes, result.class_names, strict=True)
    rows = [
        ("positive classes", ", ".join(f"{c} {n}" if n != str(c) else n for c, n in classes)),
        ("P : N", f"{stats.n_positive:,} : {stats.n_negative:,}  ({stats.pn_ratio})"),
        ("L : U", f"{stats.n_labeled:,} : {stats.n_unlabeled:,}  (c = {stats.label_frequency:.4g})"),
        ("π = p(y=1 | s=0)", f"{stats.prior:.4f}"),
        ("p(y=1)", f"{stats.class_prior:.4f}"),
        ("label sets", ", ".join(summary["label_sets"]) + f"  (seed {summary['seed']})"),
    ]
    if stats.n_dropped_positive or stats.n_unknown:
        rows.append(
            ("left out", f"{stats.n_dropped_positive:,} positives (downsampled), {stats.n_unknown:,} unknown")
        )
    rows.append(("written", summary["out"]))
    if "test_rows" in summary:
        n_test, n_pos = summary["test_rows"], summary["test_positive"]
        rows.append(
            ("test", f"{summary['test_out']}: {n_test:,} rows, {n_pos:,} positive ({n_pos / n_test:.1%})")
        )
    return rows
