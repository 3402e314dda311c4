"""``impulses train-head`` / ``predict`` / ``info`` end to end on a real PU task built from scikit-learn's digits.

The task mirrors the paper's imbalanced CIFAR-10 split: positives are the digits 0-3, downsampled to
1 positive per 10 negatives, and 20% of them are labeled (c = 0.2), so π = p(y=1 | s=0) ≈ 0.074.
The test set is held out and keeps every class (≈ 40% positives, like CIFAR-10's test set).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from sklearn.datasets import load_digits

from impulses.embed.store import EmbeddingStore
from impulses.pu.labels import write_label_set


@dataclass
class DigitsTask:
    train: Path
    test: Path
    labels: Path
    test_labels: Path
    prior: float
    root: Path


@pytest.fixture(scope="module")
def task(tmp_path_factory: pytest.TempPathFactory) -> DigitsTask:
    root = tmp_path_factory.mktemp("digits")
    digits = load_digits()
    X, target = digits.data.astype(np.float32), digits.target
    ids = np.array([f"digits/{i}" for i in range(len(X))], dtype=object)
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(X))
    test, train = np.sort(perm[:540]), np.sort(perm[540:])
    EmbeddingStore.write(root / "train.h5", X[train], ids[train], targets=target[train])
    EmbeddingStore.write(root / "test.h5", X[test], ids[test], targets=target[test])
    positive = np.isin(target, [0, 1, 2, 3])
    train_pos, train_neg = train[positive[train]], train[~positive[train]]
    kept = np.sort(np.concatenate([rng.choice(train_pos, len(train_neg) // 10, replace=False), train_neg]))
    y = positive[kept].astype(int)
    s = np.zeros(len(kept), dtype=int)
    s[rng.choice(np.flatnonzero(y == 1), round(0.2 * y.sum()), replace=False)] = 1
    write_label_set(root / "labels.parquet", ids[kept], s, y=y)
    write_label_set(root / "test.parquet", ids[test], None, y=positive[test].astype(int))
    return DigitsTask(
        root / "train.h5", root / "test.h5", root / "labels.parquet", root / "test.parquet",
        float(y[s == 0].mean()), root,
    )  # fmt: skip


def common(task: DigitsTask, out: Path) -> list[object]:
    return ["train-head", "--train", task.train, "--labels", task.labels, "--out", out]


def test_imbnnpu_at_the_true_prior_beats_bce_on_f1(cli, task: DigitsTask, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = cli(
        *common(task, out), "--prior", task.prior, "--loss", "imbnnpu", "--loss", "bce", "--seeds", "2",
        "--test", task.test, "--test-labels", task.test_labels, "--json",
    )  # fmt: skip
    assert result.code == 0, result.stderr
    rows = json.loads(result.stdout)  # stdout holds the JSON and nothing else
    assert [r["loss"] for r in rows] == ["imbnnpu", "imbnnpu", "bce", "bce"]
    f1 = {loss: np.mean([r["f1"] for r in rows if r["loss"] == loss]) for loss in ("imbnnpu", "bce")}
    assert f1["imbnnpu"] > 0.5 and f1["imbnnpu"] > f1["bce"] + 0.3, f1
    assert all(r["eval_on"] == "test" and r["epochs"] == 100 for r in rows)
    assert rows[0]["prior"] == pytest.approx(task.prior) and rows[2]["prior"] is None

    table = pl.read_csv(out / "results.csv")
    for column in (
        "loss",
        "prior",
        "distortion",
        "seed",
        "label_set",
        "epochs",
        "accuracy",
        "f1",
        "auc",
        "ap",
        "seconds",
    ):
        assert column in table.columns
    assert table.height == 4 and table["f1"].to_list() == pytest.approx([r["f1"] for r in rows])
    payload = torch.load(out / "heads.pt", weights_only=True)
    assert (
        payload["W"].shape == (64, 4) and payload["store_dim"] == 64 and payload["feature_dtype"] == "float16"
    )
    assert [h["name"] for h in payload["heads"]] == [r["head"] for r in rows]


def test_predict_writes_one_logit_column_per_head(cli, task: DigitsTask, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert cli(*common(task, out), "--prior", task.prior, "--epochs", "3", "--seeds", "2").code == 0
    scores_path = tmp_path / "scores.parquet"
    result = cli("predict", "--heads", out / "heads.pt", "--store", task.test, "--out", scores_path)
    assert result.code == 0, result.stderr
    scores = pl.read_parquet(scores_path)
    store = EmbeddingStore.open(task.test)
    payload = torch.load(out / "heads.pt", weights_only=True)
    names = [h["name"] for h in payload["heads"]]
    assert scores.columns == ["id", *names]
    assert scores["id"].to_list() == list(store.ids)
    expected = store.read() @ payload["W"].numpy() + payload["b"].numpy()
    np.testing.assert_allclose(scores.select(names).to_numpy(), expected, rtol=1e-5, atol=1e-5)


def test_sweep_grid_distortions_history_and_table(cli, task: DigitsTask, tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    result = cli(
        *common(task, out), "--prior", task.prior, "--prior-range", "0.1:0.3:3", "--distortion", "0.5,1,2",
        "--loss", "imbnnpu", "--loss", "wbce", "--loss", "pn", "--epochs", "4", "--eval-every", "2", "--threads", "1",
        "--test", task.test, "--test-labels", task.test_labels, "--stratified",
    )  # fmt: skip
    assert result.code == 0, result.stderr
    table = pl.read_csv(out / "results.csv")
    assert table.filter(pl.col("loss") == "imbnnpu").height == 4 * 3  # priors x distortions
    assert (
        table.filter(pl.col("loss") == "wbce").height == 1
        and table.filter(pl.col("loss") == "pn").height == 1
    )
    assert table.filter(pl.col("loss") == "pn")["label_set"].to_list() == ["y"]
    assert (table["skipped_batches"] == 0).all()  # stratified batches always hold a labeled positive
    history = pl.read_csv(out / "history.csv")
    assert sorted(set(history["epoch"].to_list())) == [1, 2, 3, 4]
    assert history.filter(pl.col("epoch") == 4).height == table.height
    assert history.filter(pl.col("epoch") == 2)["auc"].null_count() == 0
    assert "imbnnpu_pi0.1_x0.5_seed0_s" in result.stdout  # the rich table
    assert torch.load(out / "heads.pt", weights_only=True)["training"]["threads"] == 1


def test_without_a_test_set_metrics_use_y_or_are_null(cli, task: DigitsTask, tmp_path: Path) -> None:
    with_y = cli(*common(task, tmp_path / "a"), "--prior", task.prior, "--epochs", "2", "--json")
    assert with_y.code == 0, with_y.stderr
    row = json.loads(with_y.stdout)[0]
    assert row["eval_on"] == "train (y)" and 0 <= row["auc"] <= 1
    no_y = tmp_path / "no_y.parquet"
    pl.read_parquet(task.labels).drop("y").write_parquet(no_y)
    result = cli("train-head", "--train", task.train, "--labels", no_y, "--prior", task.prior, "--epochs", "2",
                 "--out", tmp_path / "b", "--json")  # fmt: skip
    assert result.code == 0, result.stderr
    row = json.loads(result.stdout)[0]  # strict JSON: NaN is written as null
    assert row["eval_on"] == "none" and row["f1"] is None and row["auc"] is None


def test_info_on_a_label_set(cli, task: DigitsTask) -> None:
    result = cli("info", task.labels, "--json")
    assert result.code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["s"]["prior"] == pytest.approx(task.prior)
    assert summary["s"]["label_frequency"] == pytest.approx(0.2, abs=0.01)


def test_fused_and_torch_kernels_train_the_same_heads(cli, task: DigitsTask, tmp_path: Path) -> None:
    """``--kernel`` picks the CPU step; both train the same heads (to float32 rounding) and say which."""
    payloads = {}
    for kernel in ("fused", "torch"):
        out = tmp_path / kernel
        result = cli(
            *common(task, out), "--prior", task.prior, "--loss", "imbnnpu", "--loss", "nnpu", "--seeds", "2",
            "--epochs", "20", "--kernel", kernel,
        )  # fmt: skip
        assert result.code == 0, result.stderr
        payloads[kernel] = torch.load(out / "heads.pt", weights_only=True)
        assert payloads[kernel]["training"]["kernel"] == kernel
    np.testing.assert_allclose(payloads["fused"]["W"].numpy(), payloads["torch"]["W"].numpy(), atol=1e-4)
    np.testing.assert_allclose(payloads["fused"]["b"].numpy(), payloads["torch"]["b"].numpy(), atol=1e-4)


def bad_inputs(task: DigitsTask, tmp: Path) -> dict[str, tuple[list[object], str]]:
    """name -> (arguments, expected piece of the one-line error)."""
    root = task.root
    unknown = write_label_set(tmp / "unknown.csv", ["digits/0", "nope/1"], np.array([1, 0]))
    no_pos = write_label_set(tmp / "nopos.csv", ["digits/0", "digits/1"], np.array([0, 0]))
    other_dim = EmbeddingStore.write(tmp / "dim8.h5", np.zeros((3, 8), np.float32), ["a", "b", "c"]).path
    heads_dir = tmp / "h"
    return {
        "missing store": (["train-head", "--train", tmp / "nope.h5", "--labels", task.labels, "--prior", "0.1",
                           "--out", tmp / "o"], "no such embedding store"),
        "missing labels": (["train-head", "--train", task.train, "--labels", tmp / "nope.parquet", "--prior", "0.1",
                            "--out", tmp / "o"], "no such label file"),
        "unknown id": (["train-head", "--train", task.train, "--labels", unknown, "--prior", "0.1", "--out", tmp / "o"],
                       "'nope/1'"),
        "prior above 1": (["train-head", "--train", task.train, "--labels", task.labels, "--prior", "1.5",
                           "--out", tmp / "o"], "--prior 1.5 is not in (0, 1)"),
        "prior zero": (["train-head", "--train", task.train, "--labels", task.labels, "--prior", "0",
                        "--out", tmp / "o"], "not in (0, 1)"),
        "distorted prior": (["train-head", "--train", task.train, "--labels", task.labels, "--prior", "0.2",
                             "--distortion", "1,10", "--out", tmp / "o"], "10 x prior 0.2 = 2, not in (0, 1)"),
        "no labeled positive": (["train-head", "--train", task.train, "--labels", no_pos, "--prior", "0.1",
                                 "--out", tmp / "o"], "no labeled positive"),
        "pn without y": (["train-head", "--train", task.train, "--labels", unknown, "--loss", "pn",
                          "--out", tmp / "o"], "no 'y' column"),
        "unknown loss": (["train-head", "--train", task.train, "--labels", task.labels, "--loss", "hinge",
                          "--out", tmp / "o"], "unknown loss 'hinge'"),
        "unknown kernel": (["train-head", "--train", task.train, "--labels", task.labels, "--prior", "0.1",
                            "--kernel", "gpu", "--out", tmp / "o"], "kernel must be one of auto, fused, torch"),
        "test without labels": (["train-head", "--train", task.train, "--labels", task.labels, "--prior", "0.1",
                                 "--test", task.test, "--out", tmp / "o"], "--test and --test-labels go together"),
        "dimension mismatch": (["predict", "--heads", heads_dir / "heads.pt", "--store", other_dim,
                                "--out", tmp / "s.parquet"], "has dim 8, but the heads"),
        "missing heads": (["predict", "--heads", tmp / "none.pt", "--store", root / "test.h5",
                           "--out", tmp / "s.parquet"], "no such heads file"),
    }  # fmt: skip


def test_bad_input_exits_2_with_one_line(cli, task: DigitsTask, tmp_path: Path) -> None:
    assert cli(*common(task, tmp_path / "h"), "--prior", "0.1", "--epochs", "1").code == 0
    for name, (args, message) in bad_inputs(task, tmp_path).items():
        result = cli(*args)
        assert result.code == 2, (name, result.stdout, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (name, result.stderr)
        assert message in lines[0], (name, lines[0])
        assert "Traceback" not in result.stderr


def test_prior_auto_uses_the_auto_prior_estimate(cli, task: DigitsTask, tmp_path: Path) -> None:
    """``--prior auto`` trains at auto_prior's estimate (computed independently here) and says so on stderr."""
    from impulses.pu.labels import read_label_set
    from impulses.pu.prior import METHOD_LABELS, auto_prior

    result = cli(*common(task, tmp_path / "run"), "--prior", "auto", "--epochs", "2", "--json")
    assert result.code == 0, result.stderr
    label_file = read_label_set(task.labels)
    store = EmbeddingStore.open(task.train)
    expected = auto_prior(store.read(label_file.rows_in(store)), label_file.s[:, 0])
    rows = json.loads(result.stdout)
    assert rows[0]["prior"] == pytest.approx(expected.prior)
    assert "--prior auto" in result.stderr and f"{METHOD_LABELS[expected.method]} estimate" in result.stderr


def test_plot_writes_the_paper_figures(cli, task: DigitsTask, tmp_path: Path) -> None:
    figures = tmp_path / "figures"
    result = cli(
        *common(task, tmp_path / "run"), "--prior", task.prior, "--distortion", "0.5,1,2", "--loss", "imbnnpu",
        "--loss", "bce", "--epochs", "3", "--test", task.test, "--test-labels", task.test_labels, "--plot", figures,
    )  # fmt: skip
    assert result.code == 0, result.stderr
    for name in ("auc_over_epochs.png", "tsne.png"):
        assert (figures / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    history = pl.read_csv(tmp_path / "run" / "history.csv")  # --plot records every epoch
    assert sorted(set(history["epoch"].to_list())) == [1, 2, 3]


def test_plot_without_a_test_set_is_refused(cli, task: DigitsTask, tmp_path: Path) -> None:
    result = cli(*common(task, tmp_path / "run"), "--prior", task.prior, "--plot", tmp_path / "figures")
    assert result.code == 2 and "--plot" in result.stderr and "--test" in result.stderr
    assert not (tmp_path / "run").exists()


def test_predict_json_reports_what_it_wrote(cli, task: DigitsTask, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert cli(*common(task, out), "--prior", task.prior, "--epochs", "2", "--seeds", "2", "-q").code == 0
    scores_path = tmp_path / "scores.csv"
    result = cli("predict", "--heads", out / "heads.pt", "--store", task.test, "--out", scores_path, "--json")
    assert result.code == 0, result.stderr
    summary = json.loads(result.stdout)
    names = [h["name"] for h in torch.load(out / "heads.pt", weights_only=True)["heads"]]
    assert summary["rows"] == len(EmbeddingStore.open(task.test)) == pl.read_csv(scores_path).height
    assert summary["head_names"] == names and summary["out"] == str(scores_path)


def test_progress_and_quiet(cli, task: DigitsTask, tmp_path: Path) -> None:
    """The bar and the informational line go to stderr; --no-progress drops the bar, -q both."""
    args = [*common(task, tmp_path / "run"), "--prior", task.prior, "--epochs", "2"]
    shown = cli(*args)
    assert shown.code == 0 and "training on" in shown.stderr and "epochs" in shown.stderr
    no_bar = cli(*args, "--no-progress")
    assert no_bar.code == 0 and no_bar.stderr.strip().splitlines() == [
        line for line in shown.stderr.strip().splitlines() if line.startswith("training on")
    ]
    quiet = cli(*args, "--quiet", "--json")
    assert quiet.code == 0 and quiet.stderr == "" and len(json.loads(quiet.stdout)) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--batch-size", "0"], "error: --batch-size must be an integer of at least 1, got 0"),
        (["--epochs", "0"], "error: --epochs must be an integer of at least 1, got 0"),
        (["--eval-every", "-1"], "error: --eval-every must be 0 or more, got -1"),
        (["--lr", "-1"], "error: --lr must be > 0, got -1"),
        (["--kernel", "gpu"], "error: --kernel must be one of auto, fused, torch"),
    ],
)
def test_library_errors_name_the_flag_before_training(cli, task, tmp_path, args, message) -> None:
    """ParameterErrors raised by the sweep name the flag, come alone (no progress line) and write nothing."""
    out = tmp_path / "run"
    result = cli(*common(task, out), "--prior", task.prior, *args)
    assert result.code == 2 and result.stderr.startswith(message), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not out.exists()


def test_unusable_out_is_refused_before_training(cli, task: DigitsTask, tmp_path: Path) -> None:
    existing = tmp_path / "file.txt"
    existing.write_text("keep me")
    before = {p: p.read_bytes() for p in (task.train, task.labels, existing)}
    cases = {
        task.train: "--out and --train name the same file",
        task.labels: "--out and --labels name the same file",
        existing: f"--out {existing} is a file, not a folder",
        existing / "sub": "is a file, not a folder",
    }
    for out, message in cases.items():
        result = cli("train-head", "--train", task.train, "--labels", task.labels, "--prior", task.prior,
                     "--out", out)  # fmt: skip
        assert result.code == 2 and message in result.stderr, (out, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1
    assert {p: p.read_bytes() for p in before} == before


def test_second_run_without_history_removes_the_stale_one(cli, task: DigitsTask, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = [*common(task, out), "--prior", task.prior, "--epochs", "2", "-q"]
    assert cli(*args, "--test", task.test, "--test-labels", task.test_labels, "--eval-every", "1").code == 0
    assert (out / "history.csv").exists()
    assert cli(*args).code == 0
    assert not (out / "history.csv").exists() and (out / "results.csv").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only folder")
def test_read_only_out_folder_is_refused_before_training(cli, task: DigitsTask, tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        result = cli(*common(task, locked / "run"), "--prior", task.prior)
    finally:
        locked.chmod(0o700)
    assert result.code == 2 and "is not writable" in result.stderr and "--out" in result.stderr


def test_max_memory_reads_the_label_sets_rows_from_the_store(cli, task: DigitsTask, tmp_path: Path) -> None:
    """``--max-memory`` trains from the store; a budget that holds the rows gives the in-memory heads."""
    payloads = {}
    for name, extra in (("memory", []), ("store", ["--max-memory", "1G"])):
        out = tmp_path / name
        result = cli(*common(task, out), "--prior", task.prior, "--epochs", "5", *extra)
        assert result.code == 0, result.stderr
        payloads[name] = torch.load(out / "heads.pt", weights_only=True)
    assert payloads["store"]["training"]["max_memory"] == 1 << 30
    np.testing.assert_array_equal(payloads["store"]["W"].numpy(), payloads["memory"]["W"].numpy())
    result = cli(*common(task, tmp_path / "tiny"), "--prior", task.prior, "--max-memory", "1K")
    assert result.code == 2 and "--max-memory is 1,024 bytes, too small" in result.stderr


def test_val_fraction_and_select_mark_and_save_the_chosen_heads(
    cli, task: DigitsTask, tmp_path: Path
) -> None:
    from impulses.pu.export import load_portable
    from impulses.pu.heads import load_heads

    out = tmp_path / "run"
    result = cli(
        *common(task, out), "--prior", task.prior, "--distortion", "0.5,1,2", "--loss", "imbnnpu",
        "--loss", "nnpu", "--epochs", "20", "--val-fraction", "0.3", "--val-seed", "1", "--select", "pu-auc",
        "--test", task.test, "--test-labels", task.test_labels,
    )  # fmt: skip
    assert result.code == 0, result.stderr
    assert "selected by pu-auc" in result.stdout and " *" in result.stdout
    table = pl.read_csv(out / "results.csv")
    assert set(table["val_fraction"]) == {0.3} and set(table["val_seed"]) == {1}
    assert table["selected"].sum() == 1  # one label set: one head
    best = table.sort("pu_auc", descending=True, maintain_order=True)["head"][0]
    assert table.filter(pl.col("selected"))["head"].to_list() == [best]
    heads = load_heads(out / "selected" / "heads.pt")
    assert heads.names == [best] and heads.meta["selection"]["criterion"] == "pu-auc"
    assert load_portable(out / "selected").names == [best]
    assert load_portable(out).names == table["head"].to_list()  # heads.safetensors beside heads.pt


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--select", "pu-auc"], "error: --select and --val-fraction go together"),
        (["--val-fraction", "1"], "error: --val-fraction must be in [0, 1)"),
        (["--val-fraction", "0.2", "--select", "auc"], "error: --select must be one of pu-auc, lee-liu"),
    ],
)
def test_validation_flags_are_checked_before_reading(cli, task, tmp_path, args, message) -> None:
    out = tmp_path / "run"
    result = cli("train-head", "--train", tmp_path / "missing.h5", "--labels", task.labels, "--out", out,
                 "--prior", task.prior, *args)  # fmt: skip
    assert result.code == 2 and result.stderr.startswith(message), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not out.exists()


def test_a_cpu_run_of_the_numba_kernels_never_imports_torch(task: DigitsTask, tmp_path: Path) -> None:
    """Importing torch takes about as long as training one head; a one-head CPU run does not need it."""
    import subprocess
    import sys

    out = tmp_path / "run"
    args = [str(a) for a in [*common(task, out), "--prior", task.prior, "--epochs", 3, "--test", task.test]]
    args += ["--test-labels", str(task.test_labels), "--device", "cpu", "--json", "--no-progress"]
    code = (
        "import sys\n"
        "from impulses.cli import main\n"
        f"sys.argv = ['impulses', *{args!r}]\n"
        "try:\n    main()\nexcept SystemExit as done:\n    assert not done.code, done.code\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    # scoring a store with those heads does not import torch either
    scores = tmp_path / "scores.parquet"
    predict = ["predict", "--heads", str(out / "heads.pt"), "--store", str(task.test), "--out", str(scores)]
    predicted = subprocess.run(
        [sys.executable, "-c", code.replace(repr(args), repr(predict))], capture_output=True, text=True
    )
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    assert pl.read_parquet(scores).height == 540
    # what it wrote is what torch.save would have: torch reads it, weights only
    payload = torch.load(out / "heads.pt", weights_only=True)
    result = json.loads(done.stdout)
    assert payload["W"].shape == (64, 1) and payload["heads"][0]["loss"] == "imbnnpu"
    # and the same heads as a run of the torch kernel's process, to float32 rounding
    torch_run = tmp_path / "torch-run"
    env = {**os.environ}
    subprocess.run(
        [sys.executable, "-m", "impulses", *[a if a != str(out) else str(torch_run) for a in args], "--kernel", "torch"],
        capture_output=True, text=True, check=True, env=env,
    )  # fmt: skip
    reference = torch.load(torch_run / "heads.pt", weights_only=True)
    np.testing.assert_allclose(payload["W"].numpy(), reference["W"].numpy(), rtol=1e-4, atol=1e-5)
    assert result[0]["epochs"] == 3 and 0 <= result[0]["auc"] <= 1
