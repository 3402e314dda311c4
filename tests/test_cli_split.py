"""`impulses split` and `impulses estimate-prior` end to end on small stores, run in-process."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from impulses.catalog import FASHION_MNIST_CLASSES
from impulses.embed.store import EmbeddingStore
from impulses.pu.labels import read_label_set, read_test_labels

DIGIT_NAMES = [f"digit {i}" for i in range(10)]


def write_store(path, targets, *, class_names=None, features=None):
    targets = np.asarray(targets)
    if features is None:
        features = np.zeros((targets.size, 2), dtype=np.float32)
    ids = [f"{path.stem}/{i}" for i in range(targets.size)]
    EmbeddingStore.write(path, features, ids, targets=targets, class_names=class_names)
    return path


@pytest.fixture
def small_store(tmp_path):
    """10 classes x 30 rows, with class names."""
    targets = np.random.default_rng(0).permutation(np.repeat(np.arange(10), 30))
    return write_store(tmp_path / "train.h5", targets, class_names=DIGIT_NAMES)


# --------------------------------------------------------------------------------------------------
# split
# --------------------------------------------------------------------------------------------------
def test_split_by_class_names_writes_the_label_set(cli, small_store, tmp_path):
    out = tmp_path / "labels.csv"
    result = cli("split", "--store", small_store, "--positive-classes", "digit 3,7", "--label-frequency", "0.5",
                 "--out", out)  # fmt: skip
    assert result.code == 0, result.stderr
    frame = pl.read_csv(out)
    # 60 positives (classes 3, 7), 30 labeled; U = 30 P + 240 N -> π = 30/270.
    assert frame.height == 300 and frame["s"].sum() == 30 and frame["y"].sum() == 60
    store = EmbeddingStore.open(small_store)
    rows = store.rows_of(frame.filter(pl.col("s") == 1)["id"].to_list())
    assert set(store.targets[rows].tolist()) <= {3, 7}
    assert "0.1111" in result.stdout and "1:4" in result.stdout and "30 : 270" in result.stdout


def test_split_preset_reproduces_the_fashion_mnist_row_of_table_one(cli, tmp_path):
    rng = np.random.default_rng(1)
    train = write_store(tmp_path / "fm-train.h5", rng.permutation(np.repeat(np.arange(10), 6000)),
                        class_names=list(FASHION_MNIST_CLASSES))  # fmt: skip
    test = write_store(
        tmp_path / "fm-test.h5", np.repeat(np.arange(10), 1000), class_names=list(FASHION_MNIST_CLASSES)
    )
    out, test_out = tmp_path / "labels.parquet", tmp_path / "test.parquet"
    result = cli("split", "--store", train, "--preset", "fashion-mnist-imbalanced", "--out", out,
                 "--test", test, "--test-out", test_out, "--json")  # fmt: skip
    assert result.code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["n_labeled"], summary["n_unlabeled"]) == (720, 38880)
    assert (summary["n_positive"], summary["n_negative"]) == (3600, 36000)
    assert round(summary["prior"], 4) == 0.0741 and summary["positive_classes"] == [0, 2, 4, 6]
    frame = pl.read_parquet(out)
    assert frame.height == 39600 and frame["s"].sum() == 720
    assert ((frame["s"] == 0) & (frame["y"] == 1)).sum() == 2880
    test_frame = pl.read_parquet(test_out)
    assert test_frame.height == 10000 and test_frame["y"].sum() == 4000  # the full test set, 40% positive
    assert read_test_labels(test_out).y.sum() == 4000 and read_label_set(out).names == ["s"]


def test_split_k_label_sets_and_json(cli, small_store, tmp_path):
    out = tmp_path / "labels.parquet"
    result = cli("split", "--store", small_store, "--positive-classes", "0,1", "--n-label-sets", "3",
                 "--n-positive", "40", "--seed", "5", "--out", out, "--json")  # fmt: skip
    assert result.code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["label_sets"] == ["s_0", "s_1", "s_2"]
    assert summary["n_labeled"] == 8 and summary["n_dropped_positive"] == 20
    frame = pl.read_parquet(out)
    assert frame.columns == ["id", "y", "s_0", "s_1", "s_2"] and frame.height == 280
    assert [frame[c].sum() for c in ("s_0", "s_1", "s_2")] == [8, 8, 8]
    # The file is a valid label set for the rest of the toolkit: three label sets over the same rows.
    labels = read_label_set(out)
    assert labels.names == ["s_0", "s_1", "s_2"] and labels.s.sum(axis=0).tolist() == [8, 8, 8]
    assert labels.column("2").tolist() == frame["s_2"].to_list()
    assert (
        EmbeddingStore.open(small_store).targets[labels.rows_in(EmbeddingStore.open(small_store))] < 2
    ).sum() == 40


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--positive-classes", "digit 11"], "--positive-classes unknown class 'digit 11'"),
        (["--positive-classes", "12"], "class index 12 is out of range"),
        (
            ["--positive-classes", "1", "--label-frequency", "0"],
            r"--label-frequency must be in (0, 1], got 0.0",
        ),
        (
            ["--positive-classes", "1", "--label-frequency", "1.5"],
            r"--label-frequency must be in (0, 1], got 1.5",
        ),
        (["--positive-classes", "1", "--n-positive", "31"], "--n-positive 31 is more than the 30 positives"),
        (["--preset", "cifar10-imbalanced"], "--preset cifar10-imbalanced is for CIFAR-10"),
        (["--preset", "mnist"], "--preset 'mnist' is not a preset"),
        (["--preset", "cifar10-imbalanced", "--positive-classes", "1"], "exactly one of --positive-classes"),
        ([], "exactly one of --positive-classes and --preset"),
        (["--positive-classes", "1", "--test", "x.h5"], "--test and --test-out go together"),
    ],
)
def test_split_errors_are_one_line(cli, small_store, tmp_path, args, message):
    out = tmp_path / "labels.parquet"
    result = cli("split", "--store", small_store, "--out", out, *args)
    assert result.code == 2
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert not out.exists()


def test_split_refuses_a_store_without_targets(cli, tmp_path):
    store = write_store(tmp_path / "folder.h5", np.full(20, -1))
    result = cli("split", "--store", store, "--positive-classes", "0", "--out", tmp_path / "l.csv")
    assert result.code == 2 and "folder.h5 has no class targets" in result.stderr


def test_split_names_a_missing_store(cli, tmp_path):
    result = cli(
        "split", "--store", tmp_path / "none.h5", "--positive-classes", "0", "--out", tmp_path / "l.csv"
    )
    assert result.code == 2 and "none.h5: no such embedding store" in result.stderr


# --------------------------------------------------------------------------------------------------
# estimate-prior
# --------------------------------------------------------------------------------------------------
@pytest.fixture
def gaussian_store(tmp_path):
    """Class 1 (1,000 rows) ~ N(+1.5, I), classes 0 and 2 (2,000 each) ~ N(-1.5, I), in 10-d."""
    rng = np.random.default_rng(0)
    targets = rng.permutation(np.repeat([0, 1, 2], [2000, 1000, 2000]))
    features = np.where((targets == 1)[:, None], 1.5, -1.5) + rng.normal(size=(targets.size, 10))
    return write_store(tmp_path / "gauss.h5", targets, features=features.astype(np.float32))


def test_estimate_prior_is_close_to_the_true_prior(cli, gaussian_store, tmp_path):
    labels = tmp_path / "labels.parquet"
    made = cli("split", "--store", gaussian_store, "--positive-classes", "1", "--label-frequency", "0.3",
               "--out", labels)  # fmt: skip
    assert made.code == 0, made.stderr
    result = cli("estimate-prior", "--train", gaussian_store, "--labels", labels, "--json")
    assert result.code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["true_prior"] == pytest.approx(700 / 4700)
    bbe = summary["estimates"]["bbe"]
    assert abs(bbe["prior"] - 700 / 4700) <= 0.03 and bbe["lower"] <= 700 / 4700 <= bbe["upper"]
    assert 0.0 <= summary["estimates"]["elkan-noto"]["prior"] <= 1.0
    tedn = summary["estimates"]["tedn"]  # the estimator --prior auto uses is shown by default
    assert abs(tedn["prior"] - 700 / 4700) <= 0.03
    table = cli("estimate-prior", "--train", gaussian_store, "--labels", labels, "--method", "bbe")
    assert (
        table.code == 0 and "BBE" in table.stdout and "Elkan" not in table.stdout and "0.1489" in table.stdout
    )
    unknown = cli("estimate-prior", "--train", gaussian_store, "--labels", labels, "--method", "mpe")
    assert unknown.code == 2 and unknown.stderr.startswith("error: --method ['mpe'] not known")
    assert unknown.stderr.count("\n") == 1


def test_estimate_prior_label_set_choice_and_errors(cli, gaussian_store, tmp_path):
    labels = tmp_path / "labels.csv"
    assert cli("split", "--store", gaussian_store, "--positive-classes", "1", "--n-label-sets", "2",
               "--out", labels).code == 0  # fmt: skip
    unchosen = cli("estimate-prior", "--train", gaussian_store, "--labels", labels)
    assert unchosen.code == 2 and "holds label sets s_0, s_1: choose one with --label-set" in unchosen.stderr
    chosen = cli(
        "estimate-prior", "--train", gaussian_store, "--labels", labels, "--label-set", "1", "--json"
    )
    assert chosen.code == 0, chosen.stderr
    missing = cli("estimate-prior", "--train", gaussian_store, "--labels", labels, "--label-set", "7")
    assert missing.code == 2 and "no label set '7' (has s_0, s_1)" in missing.stderr
    foreign = tmp_path / "foreign.csv"
    pl.DataFrame({"id": ["gauss/0", "elsewhere/1"], "s": [1, 0]}).write_csv(foreign)
    unknown = cli("estimate-prior", "--train", gaussian_store, "--labels", foreign)
    assert unknown.code == 2 and "'elsewhere/1'" in unknown.stderr


def test_split_refuses_to_overwrite_its_inputs_or_one_output_with_another(cli, small_store, tmp_path):
    test = write_store(tmp_path / "test.h5", np.repeat(np.arange(10), 3), class_names=DIGIT_NAMES)
    out = tmp_path / "labels.parquet"
    before = {p: p.read_bytes() for p in (small_store, test)}
    cases = [
        (["--out", out, "--test", test, "--test-out", out], "--out and --test-out name the same file"),
        (["--out", small_store], "--out and --store name the same file"),
        (["--out", out, "--test", test, "--test-out", test], "--test-out and --test name the same file"),
    ]
    for args, message in cases:
        result = cli("split", "--store", small_store, "--positive-classes", "1", *args)
        assert result.code == 2 and message in result.stderr, (args, result.stderr)
        assert result.stderr.count("\n") == 1
    assert not out.exists() and {p: p.read_bytes() for p in before} == before


def test_estimate_prior_folds_below_two_is_refused(cli, gaussian_store, tmp_path):
    labels = tmp_path / "labels.csv"
    assert cli("split", "--store", gaussian_store, "--positive-classes", "1", "--out", labels).code == 0
    for folds in ("0", "1", "-5"):
        result = cli("estimate-prior", "--train", gaussian_store, "--labels", labels, "--folds", folds)
        assert result.code == 2 and "'--folds'" in result.stderr and result.stderr.count("\n") == 1
