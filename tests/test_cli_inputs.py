"""Every input, good or bad, fed to the command line (issue 12).

The table below holds one case per bad input found by trying to break the CLI, and the ones that
already held: each must exit 2 with one ``error:`` line naming the file or option at fault, no
traceback, and leave every file as it was (the folders are snapshotted before and after). The tests
after it check the good inputs: --skip-nonfinite, label files whose names look like glob patterns,
imported features, the encoder list, file modes and stale files.

The stores are tiny: scikit-learn's digits embedded once per module by ``smallcnn``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import polars as pl
import pytest

from impulses.embed.extract import embed_dataset
from impulses.embed.store import EmbeddingStore
from impulses.pu.heads import load_heads
from impulses.pu.labels import write_label_set
from impulses.pu.splits import split_store
from impulses.pu.sweep import run_sweep
from tests.conftest import write_image

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
BAD_IDS = ("digits/all/5", "digits/all/100")  # the rows of nan.h5 holding NaN and Inf


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A digits store, its PU label set, a test label set, trained heads, and broken copies of each."""
    root = tmp_path_factory.mktemp("inputs")
    store = embed_dataset("digits", "smallcnn", root / "digits.h5", progress=False).path
    with EmbeddingStore.open(store) as opened:
        split = split_store(opened, positive_classes="0", seed=0, test_store=opened)
        X = opened.read()
        write_label_set(split.split.labels, root / "labels.csv")
        write_label_set(split.test_labels, root / "test.csv")
        labels = split.split.labels
        sweep = run_sweep(X, labels["s"].to_numpy()[:, None], ["s"], priors=[0.08], epochs=1, kernel="torch")
        sweep.save(root / "heads")
        np.savez(root / "features.npz", embeddings=X, ids=opened.ids.astype(str), targets=opened.targets)
    for name in ("run1.csv", "l1.csv"):  # what a glob pattern would match instead of the file named
        shutil.copy(root / "labels.csv", root / name)
    labels.select("id", "y").write_csv(root / "[é]?.csv")  # exists, but holds no label column
    unknown = pl.when(pl.int_range(pl.len()) < 5).then(pl.lit("nope") + pl.col("id")).otherwise(pl.col("id"))
    labels.with_columns(id=unknown).write_csv(root / "unknown.csv")  # 5 ids the store does not hold

    nan_positives = pl.col("id").is_in(list(BAD_IDS)).cast(pl.Int8)  # labeled: only the rows nan.h5 spoils
    labels.select("id").with_columns(s=nan_positives).write_csv(root / "nan-positives.csv")
    shutil.copy(store, root / "nan.h5")
    with h5py.File(root / "nan.h5", "r+") as f:
        f["embeddings"][5, 3] = np.nan
        f["embeddings"][100, 0] = np.inf
    shutil.copy(store, root / "dup.h5")
    with h5py.File(root / "dup.h5", "r+") as f:
        f["ids"][1] = f["ids"][0]

    write_image(root / "mixed/a/1.png", 0, size=(10, 12))
    write_image(root / "mixed/b/2.png", 1, size=(20, 16))
    pl.DataFrame({"file": ["mixed/a/1.png"]}).write_csv(root / "nopath.csv")
    pl.DataFrame({"path": ["mixed/a/1.png", "mixed/a/gone.png"]}).write_csv(root / "gone.csv")
    (root / "afile").write_text("not a folder")
    (root / "adir.csv").mkdir()
    (root / "adir.h5").mkdir()
    (root / "ro").mkdir()
    (root / "ro").chmod(0o555)
    (root / "features.txt").write_text("1 2 3")
    yield root
    (root / "ro").chmod(0o755)


def snapshot(*folders: Path) -> dict[str, tuple[int, int, str]]:
    """Every file and folder under ``folders``: mode, size and content hash."""
    state = {}
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            info = path.lstat()
            digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
            state[str(path)] = (info.st_mode, info.st_size, digest)
    return state


@dataclass
class Case:
    """A command line (``{b}``: the module's folder of inputs, ``{w}``: an empty folder for outputs) and
    the texts its one error line must contain."""

    id: str
    args: list[str]
    expect: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    marks: tuple[pytest.MarkDecorator, ...] = ()


TRAIN = ["train-head", "--labels", "{b}/labels.csv", "--prior", "0.08", "--out", "{w}/run"]
HEAD = ["train-head", "--train", "{b}/digits.h5", "--labels", "{b}/labels.csv", "--prior", "0.08"]
PRIOR = ["estimate-prior", "--train", "{b}/digits.h5"]
SPLIT = ["split", "--positive-classes", "0"]
PREDICT = ["predict", "--heads", "{b}/heads/heads.pt"]
EMBED = ["embed", "--encoder", "smallcnn", "--no-progress"]
VIT = ["embed", "--data", "digits[0:4]", "--encoder", "vit_tiny_patch16_224", "--no-progress"]
PRETRAIN = [
    "pretrain",
    "--data",
    "digits[0:32]",
    "--encoder",
    "smallcnn",
    "--epochs",
    "1",
    "--batch-size",
    "8",
    "--knn-holdout",
    "0",
    "--no-progress",
]
READ_ONLY = pytest.mark.skipif(IS_ROOT, reason="root writes into read-only folders")

CASES = [
    # 1. NaN/Inf embeddings: every command that reads the rows names the store and the first bad ids
    Case(
        "nan-train-head", [*TRAIN, "--train", "{b}/nan.h5"], ("nan.h5", repr(BAD_IDS[0]), "--skip-nonfinite")
    ),
    Case(
        "nan-train-head-test",
        [*HEAD, "--out", "{w}/run", "--test", "{b}/nan.h5", "--test-labels", "{b}/test.csv"],
        ("nan.h5", repr(BAD_IDS[0])),
    ),
    Case(
        "nan-predict", [*PREDICT, "--store", "{b}/nan.h5", "--out", "{w}/s.csv"], ("nan.h5", repr(BAD_IDS[0]))
    ),
    Case(
        "nan-estimate-prior",
        ["estimate-prior", "--train", "{b}/nan.h5", "--labels", "{b}/labels.csv"],
        ("nan.h5", repr(BAD_IDS[0])),
    ),
    Case("nan-split", [*SPLIT, "--store", "{b}/nan.h5", "--out", "{w}/l.csv"], ("nan.h5", repr(BAD_IDS[0]))),
    Case(
        "nan-split-test",
        [
            *SPLIT,
            "--store",
            "{b}/digits.h5",
            "--out",
            "{w}/l.csv",
            "--test",
            "{b}/nan.h5",
            "--test-out",
            "{w}/t.csv",
        ],
        ("nan.h5", repr(BAD_IDS[0])),
    ),
    Case(
        "nan-skipped-no-positive-left",
        [*PRIOR[:2], "{b}/nan.h5", "--labels", "{b}/nan-positives.csv", "--skip-nonfinite"],
        ("nan-positives.csv", "no labeled positive left"),
    ),
    Case(
        "nan-skipped-unknown-class",
        [
            "split",
            "--store",
            "{b}/nan.h5",
            "--positive-classes",
            "42",
            "--out",
            "{w}/l.csv",
            "--skip-nonfinite",
        ],
        ("42",),
    ),
    Case("nan-info-check", ["info", "{b}/nan.h5", "--check"], ("nan.h5", repr(BAD_IDS[0]))),
    # 2. a label path is a path, never a glob pattern
    Case(
        "labels-brackets",
        [*HEAD[:3], "--labels", "{b}/run[1].csv", "--out", "{w}/run"],
        ("run[1].csv: no such label file",),
    ),
    Case("labels-question-mark", [*PRIOR, "--labels", "{b}/l?.csv"], ("l?.csv: no such label file",)),
    Case("labels-non-ascii-literal", [*PRIOR, "--labels", "{b}/[é]?.csv"], ("[é]?.csv: no label column",)),
    # 3. what used to end in a traceback
    Case(
        "embed-mixed-sizes",
        [*EMBED, "--data", "imagefolder:{b}/mixed", "--workers", "0", "--out", "{w}/m.h5"],
        ("--image-size", "differ in size"),
    ),
    Case(
        "vit-image-size",
        [*VIT, "--random-init", "--image-size", "64", "--out", "{w}/v.h5"],
        ("--image-size",),
    ),
    Case("train-head-out-is-file", [*HEAD, "--out", "{b}/afile"], ("--out", "afile")),
    Case("train-head-out-is-labels", [*HEAD, "--out", "{b}/labels.csv"], ("--out and --labels",)),
    Case("train-head-out-is-train", [*HEAD, "--out", "{b}/digits.h5"], ("--out and --train",)),
    Case(
        "predict-out-is-folder",
        [*PREDICT, "--store", "{b}/digits.h5", "--out", "{b}/adir.csv"],
        ("adir.csv",),
    ),
    Case("split-out-is-folder", [*SPLIT, "--store", "{b}/digits.h5", "--out", "{b}/adir.csv"], ("adir.csv",)),
    Case("embed-out-is-folder", [*EMBED, "--data", "digits[0:8]", "--out", "{b}/adir.h5"], ("adir.h5",)),
    Case("import-out-is-folder", ["import", "{b}/features.npz", "--out", "{b}/adir.h5"], ("adir.h5",)),
    Case(
        "split-read-only",
        [*SPLIT, "--store", "{b}/digits.h5", "--out", "{b}/ro/l.csv"],
        ("ro/l.csv",),
        marks=(READ_ONLY,),
    ),
    Case("train-head-read-only", [*HEAD, "--out", "{b}/ro/run"], ("--out", "ro"), marks=(READ_ONLY,)),
    Case(
        "predict-read-only",
        [*PREDICT, "--store", "{b}/digits.h5", "--out", "{b}/ro/s.csv"],
        ("ro/s.csv",),
        marks=(READ_ONLY,),
    ),
    Case("pretrain-read-only", [*PRETRAIN, "--out", "{b}/ro/run"], ("ro/run",), marks=(READ_ONLY,)),
    Case(
        "embed-read-only",
        [*EMBED, "--data", "digits[0:8]", "--out", "{b}/ro/x.h5"],
        ("ro",),
        marks=(READ_ONLY,),
    ),
    Case(
        "import-read-only",
        ["import", "{b}/features.npz", "--out", "{b}/ro/f.h5"],
        ("ro",),
        marks=(READ_ONLY,),
    ),
    # an output below a file: what a read-only folder is to root, which writes anywhere
    Case(
        "split-out-below-file", [*SPLIT, "--store", "{b}/digits.h5", "--out", "{b}/afile/l.csv"], ("afile",)
    ),
    Case("train-head-out-below-file", [*HEAD, "--out", "{b}/afile/run"], ("--out", "afile")),
    Case(
        "predict-out-below-file",
        [*PREDICT, "--store", "{b}/digits.h5", "--out", "{b}/afile/s.csv"],
        ("afile",),
    ),
    Case("pretrain-out-below-file", [*PRETRAIN, "--out", "{b}/afile/run"], ("afile",)),
    Case("embed-out-below-file", [*EMBED, "--data", "digits[0:8]", "--out", "{b}/afile/x.h5"], ("afile",)),
    Case("import-out-below-file", ["import", "{b}/features.npz", "--out", "{b}/afile/f.h5"], ("afile",)),
    # 4. two outputs in one file
    Case(
        "split-out-is-test-out",
        [
            *SPLIT,
            "--store",
            "{b}/digits.h5",
            "--out",
            "{w}/x.csv",
            "--test",
            "{b}/digits.h5",
            "--test-out",
            "{w}/x.csv",
        ],
        ("--out and --test-out",),
    ),
    # 5. duplicate ids in a store
    Case("dup-info", ["info", "{b}/dup.h5"], ("dup.h5", "duplicate ids")),
    Case("dup-split", [*SPLIT, "--store", "{b}/dup.h5", "--out", "{w}/l.csv"], ("dup.h5", "duplicate ids")),
    Case("dup-train-head", [*TRAIN, "--train", "{b}/dup.h5"], ("dup.h5", "duplicate ids")),
    Case(
        "dup-predict", [*PREDICT, "--store", "{b}/dup.h5", "--out", "{w}/s.csv"], ("dup.h5", "duplicate ids")
    ),
    # 8. values outside their range
    *(
        Case(f"folds-{n}", [*PRIOR, "--labels", "{b}/labels.csv", "--folds", n], ("--folds",))
        for n in ("0", "1", "-5")
    ),
    Case("eval-every-negative", [*HEAD, "--out", "{w}/run", "--eval-every", "-1"], ("--eval-every",)),
    Case("epochs-zero", [*HEAD, "--out", "{w}/run", "--epochs", "0"], ("--epochs",)),
    Case("seeds-zero", [*HEAD, "--out", "{w}/run", "--seeds", "0"], ("--seeds",)),
    # 9. messages: user text as typed, the right option blamed, usage errors on one line
    Case(
        "prior-range-markup",
        [*HEAD, "--out", "{w}/run", "--prior-range", "a:b:c"],
        ("--prior-range 'a:b:c'",),
    ),
    Case(
        "prior-range-bounds", [*HEAD, "--out", "{w}/run", "--prior-range", "0:1:5"], ("--prior-range 0:1:5",)
    ),
    Case("prior-out-of-range", [*HEAD, "--out", "{w}/run", "--prior", "1.5"], ("--prior 1.5",)),
    Case("path-with-emoji-code", [*PRIOR, "--labels", "{b}/[bold]:smile:.csv"], ("[bold]:smile:.csv",)),
    Case("batch-size-zero", [*HEAD, "--out", "{w}/run", "--batch-size", "0"], ("--batch-size",)),
    Case("lr-negative", [*HEAD, "--out", "{w}/run", "--lr", "-1"], ("--lr",)),
    Case("pretrain-batch-size-zero", [*PRETRAIN, "--batch-size", "0", "--out", "{w}/p"], ("--batch-size",)),
    Case("pretrain-resume-no-checkpoint", ["pretrain", "--out", "{w}/p", "--resume"], ("last.pt",)),
    Case("unknown-option", [*HEAD, "--out", "{w}/run", "--foo"], ("--foo",)),
    Case("epochs-not-a-number", [*HEAD, "--out", "{w}/run", "--epochs", "abc"], ("'--epochs'",)),
    Case("unknown-command", ["train-heads"], ("train-heads",)),
    # 11. timm weights: random weights asked for, missing published weights found at once
    Case("timm-without-weights", [*VIT, "--out", "{w}/v.h5"], ("--random-init", "vit_tiny_patch16_224")),
    Case(
        "timm-pretrained-offline",
        [*VIT, "--pretrained", "--out", "{w}/v.h5"],
        ("--pretrained", "HF_HUB_OFFLINE"),
        env={"HF_HUB_OFFLINE": "1", "HF_HOME": "{w}/hf"},
    ),
    # 12, 13. manifests and WebDataset shards
    Case("manifest-missing", [*EMBED, "--data", "manifest:{b}/none.csv", "--out", "{w}/m.h5"], ("none.csv",)),
    Case(
        "manifest-no-path-column",
        [*EMBED, "--data", "manifest:{b}/nopath.csv", "--out", "{w}/m.h5"],
        ("nopath.csv", "path"),
    ),
    Case(
        "manifest-missing-image",
        [*EMBED, "--data", "manifest:{b}/gone.csv", "--out", "{w}/m.h5"],
        ("gone.csv", "gone.png"),
    ),
    Case(
        "webdataset-missing-shards",
        [*EMBED, "--data", "webdataset:{b}/shards/{{000..001}}.tar", "--out", "{w}/w.h5"],
        ("000.tar",),
    ),
    Case(
        "webdataset-bad-braces",
        [*EMBED, "--data", "webdataset:{b}/shards/{{000..}}.tar", "--out", "{w}/w.h5"],
        ("webdataset:",),
    ),
    # 14. imported features
    Case("import-missing", ["import", "{b}/none.npy", "--out", "{w}/f.h5"], ("none.npy",)),
    Case("import-wrong-suffix", ["import", "{b}/features.txt", "--out", "{w}/f.h5"], ("features.txt",)),
    Case("import-out-is-features", ["import", "{b}/features.npz", "--out", "{b}/features.npz"], ("--out",)),
    Case(
        "import-out-exists",
        ["import", "{b}/features.npz", "--out", "{b}/digits.h5"],
        ("digits.h5", "--overwrite"),
    ),
    Case(
        "import-bad-dtype",
        ["import", "{b}/features.npz", "--out", "{w}/f.h5", "--dtype", "float8"],
        ("--dtype",),
    ),
    Case(
        "import-missing-column",
        ["import", "{b}/features.npz", "--out", "{w}/f.h5", "--embedding-column", "Z"],
        ("features.npz", "'Z'"),
    ),
    # the ones that already held
    Case("train-missing", [*TRAIN, "--train", "{w}/none.h5"], ("none.h5",)),
    Case("labels-missing", [*HEAD[:3], "--labels", "{w}/none.csv", "--out", "{w}/run"], ("none.csv",)),
    Case("labels-unknown-ids", [*PRIOR, "--labels", "{b}/unknown.csv"], ("unknown.csv", "'nopedigits/all/")),
    Case("labels-not-a-table", [*PRIOR, "--labels", "{b}/afile"], ("afile",)),
    Case("label-set-unknown", [*HEAD, "--out", "{w}/run", "--label-set", "zz"], ("labels.csv", "'zz'")),
    Case("loss-unknown", [*HEAD, "--out", "{w}/run", "--loss", "nope"], ("--loss", "nope")),
    Case(
        "heads-missing",
        ["predict", "--heads", "{w}/h.pt", "--store", "{b}/digits.h5", "--out", "{w}/s.csv"],
        ("h.pt",),
    ),
    Case(
        "predict-out-suffix", [*PREDICT, "--store", "{b}/digits.h5", "--out", "{w}/s.txt"], ("--out", "s.txt")
    ),
    Case("info-missing", ["info", "{w}/none.h5"], ("none.h5",)),
    Case(
        "split-unknown-class",
        [*SPLIT[:1], "--store", "{b}/digits.h5", "--positive-classes", "42", "--out", "{w}/l.csv"],
        ("42",),
    ),
    Case(
        "split-unknown-preset",
        ["split", "--store", "{b}/digits.h5", "--preset", "nope", "--out", "{w}/l.csv"],
        ("nope",),
    ),
    Case("data-unknown", [*EMBED, "--data", "nosuch", "--out", "{w}/x.h5"], ("nosuch",)),
    Case(
        "encoder-unknown",
        ["embed", "--data", "digits", "--encoder", "nosuch_net", "--out", "{w}/x.h5"],
        ("nosuch_net",),
    ),
]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=c.marks) for c in CASES])
def test_bad_input_is_one_error_line_and_writes_nothing(
    cli, base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: Case
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    for key, value in case.env.items():
        monkeypatch.setenv(key, value.format(b=base, w=work))
    before = snapshot(base, work)
    result = cli(*(arg.format(b=base, w=work) for arg in case.args))
    assert snapshot(base, work) == before, "a file was created or changed"
    assert result.code == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for text in case.expect:
        assert text.format(b=base, w=work) in lines[0], (text, lines[0])


# --------------------------------------------------------------------------------------------------
# --skip-nonfinite: the rows holding NaN/Inf are left out, with a warning naming how many
# --------------------------------------------------------------------------------------------------
def warned(result) -> str:
    assert result.code == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if "NaN or Inf" in line]
    assert len(lines) >= 1 and lines[0].startswith("warning: ") and "2 of " in lines[0], result.stderr
    assert repr(BAD_IDS[0]) in lines[0] and "--skip-nonfinite" in lines[0]
    return result.stderr


def test_train_head_and_estimate_prior_leave_nonfinite_rows_out(cli, base: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = cli(
        "train-head",
        "--train",
        base / "nan.h5",
        "--labels",
        base / "labels.csv",
        "--prior",
        "0.08",
        "--epochs",
        "1",
        "--kernel",
        "torch",
        "--test",
        base / "nan.h5",
        "--test-labels",
        base / "test.csv",
        "--out",
        out,
        "--skip-nonfinite",
        "--json",
    )
    assert warned(result).count("warning: ") >= 2  # the training rows and the test rows
    heads = load_heads(out / "heads.pt")
    assert np.isfinite(np.asarray(heads.W)).all() and np.isfinite(np.asarray(heads.b)).all()
    assert json.loads(result.stdout)[0]["auc"] > 0.5
    prior = cli(
        "estimate-prior",
        "--train",
        base / "nan.h5",
        "--labels",
        base / "labels.csv",
        "--skip-nonfinite",
        "--json",
    )
    warned(prior)
    report = json.loads(prior.stdout)
    n_labels = pl.read_csv(base / "labels.csv").height
    assert report["n_labeled"] + report["n_unlabeled"] == n_labels - 2


def test_predict_scores_nonfinite_rows_nan_and_the_others_as_usual(cli, base: Path, tmp_path: Path) -> None:
    heads = base / "heads" / "heads.pt"
    clean = cli("predict", "--heads", heads, "--store", base / "digits.h5", "--out", tmp_path / "clean.csv")
    assert clean.code == 0, clean.stderr
    skipped = cli(
        "predict",
        "--heads",
        heads,
        "--store",
        base / "nan.h5",
        "--out",
        tmp_path / "nan.csv",
        "--skip-nonfinite",
    )
    warned(skipped)
    a, b = pl.read_csv(tmp_path / "clean.csv"), pl.read_csv(tmp_path / "nan.csv")
    assert a["id"].to_list() == b["id"].to_list()
    bad = b["id"].is_in(list(BAD_IDS)).to_numpy()
    scores_a, scores_b = a.to_numpy()[:, 1:].astype(float), b.to_numpy()[:, 1:].astype(float)
    assert np.isnan(scores_b[bad]).all() and bad.sum() == 2
    np.testing.assert_array_equal(scores_a[~bad], scores_b[~bad])


def test_split_leaves_nonfinite_rows_out_of_the_label_sets(cli, base: Path, tmp_path: Path) -> None:
    result = cli(
        "split",
        "--store",
        base / "nan.h5",
        "--positive-classes",
        "0",
        "--out",
        tmp_path / "l.csv",
        "--test",
        base / "nan.h5",
        "--test-out",
        tmp_path / "t.csv",
        "--skip-nonfinite",
    )
    warned(result)
    for name in ("l.csv", "t.csv"):
        ids = pl.read_csv(tmp_path / name)["id"].to_list()
        assert len(ids) == 1797 - 2 and not set(BAD_IDS) & set(ids)


def test_info_check_counts_nonfinite_rows(cli, base: Path) -> None:
    result = cli("info", base / "nan.h5", "--check", "--skip-nonfinite", "--json")
    assert result.code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["nonfinite_rows"] == 2 and summary["nonfinite_ids"] == list(BAD_IDS)
    clean = json.loads(cli("info", base / "digits.h5", "--check", "--skip-nonfinite", "--json").stdout)
    assert clean["finite"].startswith("yes") and "nonfinite_rows" not in clean


# --------------------------------------------------------------------------------------------------
# good inputs: literal label paths, imported features, the encoder list
# --------------------------------------------------------------------------------------------------
def test_label_paths_with_glob_characters_read_the_literal_file(cli, base: Path, tmp_path: Path) -> None:
    """``[1]`` and ``?`` in a name are characters: a file so named is read, and only it."""
    frame = pl.read_csv(base / "labels.csv")
    literal = tmp_path / "run[1] é?.csv"
    frame.head(600).write_csv(literal)  # a different label set than run1.csv's (which a glob would read)
    result = cli("estimate-prior", "--train", base / "digits.h5", "--labels", literal, "--json")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["n_labeled"] + report["n_unlabeled"] == 600


def test_imported_features_train_heads(cli, base: Path, tmp_path: Path) -> None:
    """import -> split -> train-head on the digits features: the same rows as the embedded store."""
    store = tmp_path / "imported.h5"
    result = cli("import", base / "features.npz", "--out", store, "--json")
    assert result.code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["rows"], summary["dim"], summary["classes"]) == (1797, 256, 10)
    with EmbeddingStore.open(store) as imported, EmbeddingStore.open(base / "digits.h5") as embedded:
        assert imported.ids.tolist() == embedded.ids.tolist()
        np.testing.assert_array_equal(imported.read(), embedded.read())
        assert imported.meta["encoder"] == "imported"
    labels = tmp_path / "labels.csv"
    assert cli("split", "--store", store, "--positive-classes", "0", "--out", labels).code == 0
    trained = cli(
        "train-head",
        "--train",
        store,
        "--labels",
        labels,
        "--prior",
        "0.08",
        "--epochs",
        "1",
        "--kernel",
        "torch",
        "--out",
        tmp_path / "run",
        "--json",
    )
    assert trained.code == 0, trained.stderr
    assert json.loads(trained.stdout)[0]["eval_on"].startswith("train")


def test_encoders_lists_ours_and_timms(cli) -> None:
    ours = json.loads(cli("encoders", "small*", "--json").stdout)
    assert [e["name"] for e in ours] == ["smallcnn", "smallcnn-pooled"]
    assert all(e["source"] == "impulses" and not e["pretrained"] for e in ours)
    resnets = json.loads(cli("encoders", "resnet18*", "--json").stdout)
    assert {"resnet18", "resnet18d"} <= {e["name"] for e in resnets}
    assert "resnet18.a1_in1k" in next(e for e in resnets if e["name"] == "resnet18")["weights"]
    published = json.loads(cli("encoders", "vit_tiny*", "--pretrained-only", "--json").stdout)
    assert published and all(e["pretrained"] and e["weights"] for e in published)
    table = cli("encoders", "resnet18")
    assert table.code == 0 and "resnet18.a1_in1k" in table.stdout
    assert "no encoder matches 'zzz*'" in cli("encoders", "zzz*").stdout


# --------------------------------------------------------------------------------------------------
# files written: the umask's modes, no stale history
# --------------------------------------------------------------------------------------------------
@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_written_files_follow_the_umask(cli, base: Path, tmp_path: Path, umask_022: None) -> None:
    split = cli(
        "split",
        "--store",
        base / "digits.h5",
        "--positive-classes",
        "0",
        "--out",
        tmp_path / "l.parquet",
        "--test",
        base / "digits.h5",
        "--test-out",
        tmp_path / "t.csv",
    )
    assert split.code == 0, split.stderr
    test_labels = tmp_path / "small-test.csv"
    pl.read_csv(tmp_path / "t.csv").head(120).write_csv(test_labels)
    plots = tmp_path / "plots"
    trained = cli(
        "train-head",
        "--train",
        base / "digits.h5",
        "--labels",
        tmp_path / "l.parquet",
        "--prior",
        "0.08",
        "--epochs",
        "2",
        "--kernel",
        "torch",
        "--test",
        base / "digits.h5",
        "--test-labels",
        test_labels,
        "--plot",
        plots,
        "--out",
        tmp_path / "run",
        "-q",
    )
    assert trained.code == 0, trained.stderr
    pretrained = cli(
        "pretrain",
        "--data",
        "digits[0:64]",
        "--encoder",
        "smallcnn",
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--knn-holdout",
        "0",
        "--out",
        tmp_path / "enc",
        "-q",
    )
    assert pretrained.code == 0, pretrained.stderr
    files = [
        tmp_path / "l.parquet",
        tmp_path / "t.csv",
        *sorted(plots.glob("*.png")),
        *sorted((tmp_path / "run").iterdir()),
        tmp_path / "enc" / "last.pt",
        tmp_path / "enc" / "history.csv",
    ]
    assert len(list(plots.glob("*.png"))) == 2
    assert {str(p.relative_to(tmp_path)): oct(mode(p)) for p in files} == {
        str(p.relative_to(tmp_path)): oct(0o644) for p in files
    }


def test_a_rerun_without_history_removes_the_stale_one(cli, base: Path, tmp_path: Path) -> None:
    run = [
        "train-head",
        "--train",
        base / "digits.h5",
        "--labels",
        base / "labels.csv",
        "--prior",
        "0.08",
        "--epochs",
        "2",
        "--kernel",
        "torch",
        "--out",
        tmp_path / "run",
        "-q",
    ]
    first = cli(*run, "--test", base / "digits.h5", "--test-labels", base / "test.csv", "--eval-every", "1")
    assert first.code == 0, first.stderr
    assert pl.read_csv(tmp_path / "run" / "history.csv").height > 0
    second = cli(*run)
    assert second.code == 0, second.stderr
    assert not (tmp_path / "run" / "history.csv").exists()
    assert (tmp_path / "run" / "results.csv").exists()
