"""run_sweep without the CLI: a sweep on scikit-learn digits, its metrics against sklearn, its files."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from sklearn.datasets import load_digits
from sklearn.metrics import accuracy_score, average_precision_score, f1_score, roc_auc_score

from impulses.errors import ImpulsesError, ParameterError
from impulses.pu import criteria
from impulses.pu.export import load_portable
from impulses.pu.heads import load_heads, train_heads
from impulses.pu.prior import auto_prior
from impulses.pu.sweep import (
    DISTORTIONS,
    SELECTION_CRITERIA,
    VALIDATION_COLUMNS,
    check_output_dir,
    head_grid,
    run_sweep,
    validation_split,
)


@pytest.fixture(scope="module")
def digits() -> dict[str, np.ndarray]:
    """Digits 0-3 positive, two label sets with c = 0.3, a held-out test third."""
    data = load_digits()
    X = (data.data / 16).astype(np.float32)
    y_all = np.isin(data.target, [0, 1, 2, 3]).astype(np.int8)
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(X))
    test, train = perm[:500], perm[500:]
    y = y_all[train]
    S = np.zeros((len(train), 2), dtype=np.int8)
    for j in range(2):
        S[rng.choice(np.flatnonzero(y == 1), round(0.3 * y.sum()), replace=False), j] = 1
    prior = float(y[S[:, 0] == 0].mean())
    return {"X": X[train], "S": S, "y": y, "X_test": X[test], "y_test": y_all[test], "prior": prior}


@pytest.fixture(scope="module")
def sweep(digits):
    return run_sweep(
        digits["X"], digits["S"], ["s_a", "s_b"], losses=("imbnnpu", "bce", "pn"), priors=[digits["prior"]],
        distortions=(0.5, 1.0), seeds=2, y=digits["y"], X_test=digits["X_test"], y_test=digits["y_test"],
        epochs=3, batch_size=64, lr=3e-3, eval_every=1,
    )  # fmt: skip


def test_rows_and_heads_follow_the_grid(sweep) -> None:
    rows = sweep.rows
    # imbnnpu: 2 distortions x 2 seeds x 2 label sets; bce: 2 seeds x 2 sets; pn: 2 seeds (label set y)
    assert rows.height == 8 + 4 + 2 == sweep.heads.W.shape[1]
    assert rows["head"].to_list() == sweep.heads.names
    assert rows.filter(pl.col("loss") == "pn")["label_set"].to_list() == ["y", "y"]
    assert set(rows.filter(pl.col("loss") == "imbnnpu")["distortion"].to_list()) == {0.5, 1.0}
    assert (rows["eval_on"] == "test").all() and sweep.eval_on == "test"
    assert (rows["epochs"] == 3).all()


def test_metrics_equal_sklearn_on_the_heads_logits(sweep, digits) -> None:
    logits = sweep.heads.decision_function(digits["X_test"])
    y = digits["y_test"]
    for k, row in enumerate(sweep.rows.iter_rows(named=True)):
        assert row["auc"] == pytest.approx(roc_auc_score(y, logits[:, k]))
        assert row["ap"] == pytest.approx(average_precision_score(y, logits[:, k]))
        assert row["accuracy"] == pytest.approx(accuracy_score(y, logits[:, k] > 0))
        assert row["f1"] == pytest.approx(f1_score(y, logits[:, k] > 0, zero_division=0))
    imbnnpu = sweep.rows.filter(pl.col("loss") == "imbnnpu", pl.col("distortion") == 1.0)
    assert imbnnpu["auc"].min() > 0.8  # the sweep learned the task in 3 epochs


def test_history_is_one_row_per_head_and_epoch(sweep, digits) -> None:
    history = sweep.history
    assert history.height == 3 * sweep.rows.height
    last = history.filter(pl.col("epoch") == 3)
    assert last["head"].to_list() == sweep.rows["head"].to_list()
    logits = sweep.heads.decision_function(digits["X_test"])
    expected = [roc_auc_score(digits["y_test"], logits[:, k]) for k in range(logits.shape[1])]
    np.testing.assert_allclose(last["auc"].to_numpy(), expected, rtol=1e-6)
    assert history["train_loss"].null_count() == 0


def test_save_and_load_round_trip_and_stale_history(sweep, digits, tmp_path) -> None:
    out = tmp_path / "run"
    written = sweep.save(out, labels="l.parquet")
    files = ["heads.json", "heads.pt", "heads.safetensors", "history.csv", "results.csv"]
    assert sorted(p.name for p in written) == files
    assert sorted(p.name for p in out.iterdir()) == files  # no temp files
    loaded = load_heads(out / "heads.pt")
    X = digits["X_test"]
    np.testing.assert_array_equal(loaded.decision_function(X), sweep.heads.decision_function(X))
    portable = load_portable(out)
    np.testing.assert_array_equal(portable.decision_function(X), sweep.heads.decision_function(X))
    assert portable.meta["head_label_sets"] == sweep.rows["label_set"].to_list()
    assert portable.meta["labels"] == "l.parquet"
    assert loaded.meta["labels"] == "l.parquet" and loaded.meta["label_sets"] == ["s_a", "s_b"]
    assert [g["head"] for g in loaded.meta["grid"]] == sweep.rows["head"].to_list()
    table = pl.read_csv(out / "results.csv")
    np.testing.assert_allclose(table["auc"].to_numpy(), sweep.rows["auc"].to_numpy())

    again = run_sweep(digits["X"], digits["S"][:, :1], ["s_a"], priors=[0.2], epochs=1)  # no test set, no y
    assert again.history is None and again.eval_on == "none" and again.rows["auc"].is_nan().all()
    again.save(out)
    assert not (out / "history.csv").exists()  # the earlier run's history does not stay beside these results


def test_training_rows_y_evaluate_when_there_is_no_test_set(digits) -> None:
    result = run_sweep(
        digits["X"], digits["S"][:, 0], ["s"], priors=[digits["prior"]], y=digits["y"], epochs=2
    )
    logits = result.heads.decision_function(digits["X"])[:, 0]
    assert result.eval_on == "train (y)" and result.rows["eval_on"].to_list() == ["train (y)"]
    assert result.rows["auc"][0] == pytest.approx(roc_auc_score(digits["y"], logits))


def test_auto_prior_is_estimated_per_label_set_and_reported(digits) -> None:
    reported = []
    result = run_sweep(
        digits["X"], digits["S"], ["s_a", "s_b"], priors=["auto", 0.3], epochs=1,
        on_prior_estimate=lambda name, est: reported.append((name, est)),
    )  # fmt: skip
    assert [name for name, _ in reported] == ["s_a", "s_b"]
    for j, (name, est) in enumerate(reported):
        expected = auto_prior(digits["X"], digits["S"][:, j]).prior
        assert est.prior == pytest.approx(expected) and result.prior_estimates[name] == est
        priors = result.rows.filter(pl.col("label_set") == name)["prior"].to_list()
        assert priors == pytest.approx([0.3, expected])


def test_best_picks_the_highest_metric_per_label_set(sweep) -> None:
    best = sweep.best("auc")
    for row in best.iter_rows(named=True):
        group = sweep.rows.filter(pl.col("label_set") == row["label_set"])
        assert row["auc"] == group["auc"].max()
    assert best["label_set"].to_list() == ["s_a", "s_b", "y"]
    assert sweep.best("f1", per=None).height == 1
    with pytest.raises(ParameterError, match="names no column"):
        sweep.best("nope")


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"epochs": 0}, "epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"lr": 0.0}, "lr"),
        ({"eval_every": -1}, "eval_every"),
        ({"seeds": 0}, "seeds"),
        ({"priors": [1.2]}, "priors"),
        ({"priors": [0.0]}, "priors"),
        ({"distortions": [0.0]}, "distortions"),
        ({"distortions": [10.0]}, ("distortions", "priors")),  # 10 x 0.2 = 2 is no prior: an error
        ({"losses": ["hinge"]}, "losses"),
        ({"losses": ["pn"]}, "y"),
        ({"X_test": np.zeros((3, 64), np.float32)}, ("X_test", "y_test")),
        ({"label_sets": ["s", "t"]}, "label_sets"),
        ({"kernel": "gpu"}, "kernel"),
        ({"losses": ["nnpu"], "priors": []}, "priors"),
    ],
)
def test_bad_arguments_are_parameter_errors_before_training(digits, kwargs, param) -> None:
    args = {"label_sets": ["s"], "priors": [0.2], **kwargs}
    label_sets = args.pop("label_sets")
    with pytest.raises(ParameterError) as info:
        run_sweep(digits["X"], digits["S"][:, 0], label_sets, on_epoch=pytest.fail, **args)
    assert info.value.params == ((param,) if isinstance(param, str) else param)


def test_check_output_dir_refuses_a_file_and_creates_nothing(tmp_path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(ImpulsesError, match="is a file, not a folder") as err:
        check_output_dir(tmp_path / "f")
    assert err.value.params == ("out",)
    with pytest.raises(ImpulsesError, match="cannot be created"):
        check_output_dir(tmp_path / "f" / "sub")
    assert check_output_dir(tmp_path / "new" / "dir") == tmp_path / "new" / "dir"
    assert not (tmp_path / "new").exists()


def test_head_grid_distorts_only_the_losses_asked_for() -> None:
    grid = head_grid(["imbnnpu", "nnpu"], [0.05], DISTORTIONS, [0], ["s"], distorted_losses=["imbnnpu"])
    assert len([g for g in grid if g.spec.loss == "imbnnpu"]) == len(DISTORTIONS)
    assert [g.distortion for g in grid if g.spec.loss == "nnpu"] == [1.0]


# ---------------------------------------------------------------------------------------------
# held-out PU validation and selection
# ---------------------------------------------------------------------------------------------
VAL = {"val_fraction": 0.25, "val_seed": 3, "bootstrap": 50}


def validated(digits, **kwargs):
    args = {
        "losses": ("imbnnpu", "bce", "pn"), "priors": [digits["prior"]], "distortions": (0.5, 1.0, 2.0),
        "seeds": 2, "y": digits["y"], "epochs": 3, "batch_size": 64, "lr": 3e-3, **VAL, **kwargs,
    }  # fmt: skip
    return run_sweep(digits["X"], digits["S"], ["s_a", "s_b"], **args)


@pytest.fixture(scope="module")
def selection(digits):
    return validated(digits, select="pu-auc")


def test_validation_split_is_stratified_and_seeded(digits) -> None:
    S = np.column_stack([digits["S"], digits["y"]])
    held = validation_split(S, 0.25, seed=3)
    for column, rows in enumerate(held):
        s = S[:, column]
        assert np.all(np.diff(rows) > 0)  # sorted, no repeats
        assert s[rows].sum() == round(0.25 * s.sum())
        assert (s[rows] == 0).sum() == round(0.25 * (s == 0).sum())
    assert [r.tolist() for r in validation_split(S, 0.25, seed=3)] == [r.tolist() for r in held]
    assert validation_split(S, 0.25, seed=4)[0].tolist() != held[0].tolist()
    assert held[0].tolist() != held[1].tolist()  # each label set draws its own rows
    one = np.zeros(50, dtype=np.int8)
    one[0] = 1
    with pytest.raises(ParameterError, match="label set s_x, which has 1 labeled positive") as err:
        validation_split(one, 0.2, names=["s_x"])
    assert err.value.params == ("val_fraction",)


def test_the_split_is_recorded_per_label_set_and_per_row(selection, digits) -> None:
    S = np.column_stack([digits["S"], digits["y"]])
    held = validation_split(S, VAL["val_fraction"], VAL["val_seed"])
    for column, name in enumerate(["s_a", "s_b", "y"]):
        np.testing.assert_array_equal(selection.val_rows[name], held[column])
        s = S[:, column]
        counts = selection.validation[name]
        assert counts["labeled"] == s[held[column]].sum()
        assert counts["labeled"] + counts["train_labeled"] == s.sum()
        assert counts["unlabeled"] + counts["train_unlabeled"] == (s == 0).sum()
        rows = selection.rows.filter(pl.col("label_set") == name)
        assert set(rows["val_labeled"]) == {counts["labeled"]}
        assert set(rows["val_unlabeled"]) == {counts["unlabeled"]}
    assert set(selection.rows["val_fraction"]) == {0.25} and set(selection.rows["val_seed"]) == {3}
    assert selection.rows.columns[-len(VALIDATION_COLUMNS) - 1 :] == [*VALIDATION_COLUMNS, "selected"]


def test_held_out_rows_never_shape_their_label_sets_heads(selection, digits) -> None:
    held_a = selection.val_rows["s_a"]
    noisy = digits["X"].copy()
    noisy[held_a] = np.random.default_rng(1).random((held_a.size, noisy.shape[1]), dtype=np.float32)
    rerun = run_sweep(
        noisy, digits["S"], ["s_a", "s_b"], losses=("imbnnpu", "bce", "pn"), priors=[digits["prior"]],
        distortions=(0.5, 1.0, 2.0), seeds=2, y=digits["y"], epochs=3, batch_size=64, lr=3e-3, **VAL,
    )  # fmt: skip
    in_a = (selection.rows["label_set"] == "s_a").to_numpy()
    np.testing.assert_array_equal(rerun.heads.W[:, in_a], selection.heads.W[:, in_a])
    np.testing.assert_array_equal(rerun.heads.b[in_a], selection.heads.b[in_a])
    # label set s_b trains on most of those rows: its heads change
    assert not np.array_equal(rerun.heads.W[:, ~in_a], selection.heads.W[:, ~in_a])

    # and each label set's heads are those of a run on its training rows alone
    for column, name in enumerate(["s_a", "s_b"]):
        keep = np.setdiff1d(np.arange(len(digits["X"])), selection.val_rows[name])
        index = np.flatnonzero((selection.rows["label_set"] == name).to_numpy())
        specs = [selection.heads.heads[k] for k in index]
        assert {spec.column for spec in specs} == {column}
        alone = train_heads(digits["X"][keep], digits["S"][keep], specs, epochs=3, batch_size=64, lr=3e-3)
        np.testing.assert_array_equal(alone.W, selection.heads.W[:, index])


def test_criteria_equal_the_criteria_module_on_the_saved_heads(selection, digits, tmp_path) -> None:
    selection.save(tmp_path / "run")
    for heads in (load_heads(tmp_path / "run" / "heads.pt"), load_portable(tmp_path / "run")):
        for column, name in enumerate(["s_a", "s_b", "y"]):
            rows = selection.val_rows[name]
            index = np.flatnonzero((selection.rows["label_set"] == name).to_numpy())
            logits = heads.decision_function(digits["X"][rows])[:, index]
            s = np.column_stack([digits["S"], digits["y"]])[rows, column]
            table = selection.rows[index]
            np.testing.assert_allclose(table["pu_auc"], criteria.pu_auc(logits, s), rtol=1e-12)
            np.testing.assert_allclose(table["lee_liu"], criteria.lee_liu(logits > 0, s), rtol=1e-12)
            interval = criteria.bootstrap_interval(criteria.pu_auc, logits, s, n=50, seed=3)
            np.testing.assert_allclose(table["pu_auc_low"], interval.low, rtol=1e-12)
            np.testing.assert_allclose(table["pu_auc_high"], interval.high, rtol=1e-12)
            assert (table["pu_auc_low"] <= table["pu_auc"]).all() and (
                table["pu_auc"] <= table["pu_auc_high"]
            ).all()
            if name == "y":  # pn heads: no unlabeled positives, no prior
                assert table["val_prior"].is_nan().all() and table["pu_accuracy"].is_nan().all()
                continue
            # every head of a label set is judged at the sweep's base prior (bce included)
            assert table["val_prior"].to_list() == pytest.approx([digits["prior"]] * len(index))
            pi = digits["prior"]
            np.testing.assert_allclose(table["implied_pn_auc"], (table["pu_auc"] - pi / 2) / (1 - pi))
            np.testing.assert_allclose(table["pu_accuracy"], criteria.pu_risk_accuracy(logits, s, pi))
            np.testing.assert_allclose(
                table["pu_balanced_accuracy"], criteria.pu_balanced_accuracy(logits, s, pi)
            )


@pytest.mark.parametrize("select", ["lee-liu", "pu-accuracy"])
def test_selection_picks_the_best_head_per_label_set(selection, digits, select) -> None:
    for result in (selection, validated(digits, select=select)):
        column = SELECTION_CRITERIA[result.select]
        chosen = result.selected()
        assert chosen.height == result.rows["selected"].sum()
        for name in ("s_a", "s_b", "y"):
            group = result.rows.filter(pl.col("label_set") == name)
            values = group[column].to_numpy()
            picked = chosen.filter(pl.col("label_set") == name)
            if np.isnan(values).all():  # pu-accuracy has no prior for the pn heads
                assert picked.height == 0
                continue
            assert picked.height == 1
            assert picked["head"][0] == group["head"][int(np.nanargmax(values))]  # first of ties


def test_save_writes_the_selected_heads_alone(selection, digits, tmp_path) -> None:
    out = tmp_path / "run"
    written = selection.save(out, labels="l.parquet")
    assert sorted(p.relative_to(out).as_posix() for p in written) == [
        "heads.json", "heads.pt", "heads.safetensors", "results.csv",
        "selected/heads.json", "selected/heads.pt", "selected/heads.safetensors",
    ]  # fmt: skip
    chosen = selection.selected()
    index = [selection.heads.names.index(name) for name in chosen["head"]]
    X = digits["X_test"]
    expected = selection.heads.decision_function(X)[:, index]
    for heads in (load_heads(out / "selected" / "heads.pt"), load_portable(out / "selected")):
        assert heads.names == chosen["head"].to_list()
        np.testing.assert_array_equal(heads.W, selection.heads.W[:, index])
        np.testing.assert_array_equal(heads.b, selection.heads.b[index])
        np.testing.assert_allclose(heads.decision_function(X), expected, rtol=1e-5, atol=1e-6)
        picked = heads.meta["selection"]
        assert picked["criterion"] == "pu-auc" and picked["column"] == "pu_auc"
        assert [h["pu_auc"] for h in picked["heads"]] == pytest.approx(chosen["pu_auc"].to_list())
        assert heads.meta["labels"] == "l.parquet"
    assert load_portable(out / "selected").meta["head_label_sets"] == chosen["label_set"].to_list()
    table = pl.read_csv(out / "results.csv")
    assert table["selected"].to_list() == selection.rows["selected"].to_list()

    run_sweep(digits["X"], digits["S"][:, :1], ["s_a"], priors=[0.2], epochs=1).save(out)
    assert not (out / "selected").exists()  # no selection in this run: the earlier one's heads go


def test_without_a_selection_selected_is_an_error(sweep) -> None:
    with pytest.raises(ParameterError, match="selected no head") as err:
        sweep.selected()
    assert err.value.params == ("select",)
    assert "pu_auc" not in sweep.rows.columns  # no hold-out, no criteria


@pytest.mark.parametrize(
    ("kwargs", "params"),
    [
        ({"val_fraction": 1.0}, ("val_fraction",)),
        ({"val_fraction": -0.1}, ("val_fraction",)),
        ({"val_fraction": 0.2, "select": "auc"}, ("select",)),
        ({"select": "pu-auc"}, ("select", "val_fraction")),
        ({"val_fraction": 0.2, "bootstrap": -1}, ("bootstrap",)),
    ],
)
def test_bad_validation_arguments_fail_before_training(digits, kwargs, params) -> None:
    with pytest.raises(ParameterError) as info:
        run_sweep(digits["X"], digits["S"][:, 0], ["s"], priors=[0.2], on_epoch=pytest.fail, **kwargs)
    assert info.value.params == params
