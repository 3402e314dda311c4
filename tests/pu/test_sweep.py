"""run_sweep without the CLI: a sweep on scikit-learn digits, its metrics against sklearn, its files."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from sklearn.datasets import load_digits
from sklearn.metrics import accuracy_score, average_precision_score, f1_score, roc_auc_score

from impulses.errors import ImpulsesError, ParameterError
from impulses.pu.heads import load_heads
from impulses.pu.prior import auto_prior
from impulses.pu.sweep import DISTORTIONS, check_output_dir, head_grid, run_sweep


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
    assert sorted(p.name for p in written) == ["heads.pt", "history.csv", "results.csv"]
    assert sorted(p.name for p in out.iterdir()) == [
        "heads.pt",
        "history.csv",
        "results.csv",
    ]  # no temp files
    loaded = load_heads(out / "heads.pt")
    X = digits["X_test"]
    np.testing.assert_array_equal(loaded.decision_function(X), sweep.heads.decision_function(X))
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
