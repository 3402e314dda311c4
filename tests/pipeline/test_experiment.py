"""The experiment protocol on digits with tiny settings: outputs, tables against the runs, resume."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from impulses.embed.store import EmbeddingStore
from impulses.pipeline.experiment import (
    DEMO,
    IMAGENETTE,
    RAW_PIXELS,
    SWEEP,
    ExperimentResult,
    _ImageTensors,
    _Subset,
    _summary,
    _under_root,
    run_experiment,
)

TINY = replace(
    DEMO,
    n_label_sets=2,
    pretrain_epochs=1,
    head_epochs=3,
    e2e_epochs=1,
    distortions=(0.5, 1.0, 2.0, 20.0),  # 20·π > 1: left out, not an error
    tsne_points=100,
    device="cpu",
)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[ExperimentResult, Path, list[str]]:
    out = tmp_path_factory.mktemp("experiment")
    messages: list[str] = []
    result = run_experiment(TINY, out, progress=False, log=messages.append)
    return result, out, messages


def test_split_and_label_files_follow_the_config(run) -> None:
    result, out, _ = run
    labels = pl.read_parquet(out / "labels.parquet")
    test = pl.read_parquet(out / "test-labels.parquet")
    assert labels.columns == ["id", "y", "s_0", "s_1"]
    assert int(labels["y"].sum()) == TINY.n_positive == result.split["n_positive"]
    assert all(int(labels[c].sum()) == round(TINY.label_frequency * TINY.n_positive) for c in ("s_0", "s_1"))
    assert len(test) == 540  # 30% of 1,797 digits, stratified
    assert not set(test["id"]) & set(labels["id"])  # the test images are held out of training
    unlabeled = labels.filter(pl.col("s_0") == 0)
    assert result.split["prior"] == pytest.approx(unlabeled["y"].mean())
    assert json.loads((out / "config.json").read_text())["n_label_sets"] == 2


def test_every_method_is_run_on_every_label_set(run) -> None:
    result, _, _ = run
    runs = result.runs
    per_set = runs.group_by("method").agg(pl.col("label_set").n_unique().alias("sets"), pl.len().alias("n"))
    counts = {row["method"]: (row["sets"], row["n"]) for row in per_set.iter_rows(named=True)}
    assert counts["ImPULSeS"] == counts["nnPU"] == counts["wBCE"] == counts["BCE"] == (2, 2)
    # PN trains on y: one linear head (no label set) and one end-to-end run per label set
    assert counts["PN (upper bound)"] == (3, 3)  # label sets None (the linear head), 0 and 1
    pn = runs.filter((pl.col("method") == "PN (upper bound)") & pl.col("pretrained"))
    assert pn.height == 1 and pn["label_set"].to_list() == [None]
    assert counts["imbnnPU"] == (2, 2)  # end to end, without pretraining
    # the sweep: b = 0.5 and 2 (b = 1 is the ImPULSeS head itself, 20·π >= 1 is skipped)
    sweep = runs.filter(pl.col("method") == SWEEP)
    assert sorted(set(sweep["distortion"].to_list())) == [0.5, 2.0]
    prior = result.split["prior"]
    assert sweep.filter(pl.col("distortion") == 2.0)["prior"].to_list() == pytest.approx([2 * prior] * 2)
    assert runs.filter(pl.col("pretrained").not_())["method"].unique().sort().to_list() == [
        "PN (upper bound)",
        "imbnnPU",
    ]
    for metric in ("accuracy", "f1", "auc", "ap"):
        assert runs[metric].is_between(0, 1).all()


def test_summary_is_the_mean_and_std_of_the_runs(run) -> None:
    result, _, _ = run
    runs = result.runs.filter(pl.col("method") == "ImPULSeS")
    row = result.summary.filter(pl.col("method") == "ImPULSeS").row(0, named=True)
    assert row["auc_mean"] == pytest.approx(np.mean(runs["auc"].to_numpy()))
    assert row["auc_std"] == pytest.approx(np.std(runs["auc"].to_numpy(), ddof=1))
    assert row["runs"] == 2
    assert SWEEP not in result.summary["method"].to_list()
    assert result.distortion["distortion"].to_list() == [0.5, 1.0, 2.0]  # b = 1 is ImPULSeS


def test_summary_keeps_first_seen_order() -> None:
    runs = pl.DataFrame(
        {"method": ["b", "a", "b", "a"], "auc": [0.5, 0.7, 0.7, 0.9], "accuracy": [0.0] * 4, "f1": [0.0] * 4,
         "ap": [0.0] * 4}
    )  # fmt: skip
    summary = _summary(runs, ["method"])
    assert summary["method"].to_list() == ["b", "a"]
    assert summary["auc_mean"].to_list() == pytest.approx([0.6, 0.8])


def test_files_and_figures_are_written(run) -> None:
    result, out, _ = run
    for name in ("runs", "summary", "report", "plot_auc", "plot_tsne", "checkpoint"):
        assert result.files[name].exists(), name
    assert result.files["plot_auc"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (out / "report.md").read_text()
    assert "| ImPULSeS | True |" in report and "Prior misspecification" in report
    assert pl.read_csv(out / "runs.csv").height == result.runs.height
    with EmbeddingStore.open(out / "train.h5") as store:  # digits: one store for train and test rows
        assert len(store) == 1797 and store.meta["encoder"] == "smallcnn"


def test_published_results_hold_the_files_and_the_exact_command(run, tmp_path) -> None:
    import json

    from impulses.pipeline.report import publish_results

    result, out, _ = run
    docs = publish_results(result, TINY, tmp_path / "docs", wall_seconds=1.5, argv=["bench.py", "--a", "b c"])
    names = {p.name for p in docs.iterdir()}
    assert {
        "report.md",
        "runs.csv",
        "summary.csv",
        "distortion.csv",
        "pretrain_history.csv",
        "run.json",
    } <= names
    assert (docs / "runs.csv").read_bytes() == (out / "runs.csv").read_bytes()
    meta = json.loads((docs / "run.json").read_text())
    assert meta["command"] == "python bench.py --a 'b c'" and meta["wall_seconds"] == 1.5
    assert meta["config"]["name"] == TINY.name and meta["split"] == result.split


def test_rerun_reuses_the_pretrained_encoder_and_the_store(run) -> None:
    result, out, _ = run
    checkpoint = out / "encoder" / "last.pt"
    store = out / "train.h5"
    stamps = checkpoint.stat().st_mtime_ns, store.stat().st_mtime_ns
    messages: list[str] = []
    again = run_experiment(TINY, out, plots=False, progress=False, log=messages.append)
    assert any("reusing it" in m for m in messages)
    assert (checkpoint.stat().st_mtime_ns, store.stat().st_mtime_ns) == stamps
    # same features, labels and seeds: the heads' results are identical
    first = result.runs.filter(pl.col("pretrained")).sort(["method", "label_set", "distortion"])
    second = again.runs.filter(pl.col("pretrained")).sort(["method", "label_set", "distortion"])
    np.testing.assert_allclose(first["auc"].to_numpy(), second["auc"].to_numpy())


def test_end_to_end_baselines_are_reused_only_with_the_same_key(run) -> None:
    result, out, _ = run
    cache = out / "end_to_end.json"
    saved = json.loads(cache.read_text())
    assert len(saved["rows"]) == 2 * TINY.n_label_sets  # imbnnPU and PN per label set
    # other head settings: the baselines do not depend on them and are reused as they were
    messages: list[str] = []
    again = run_experiment(
        replace(TINY, head_epochs=4), out, plots=False, progress=False, log=messages.append
    )
    assert any("reused 4 finished runs" in m for m in messages)
    first = result.runs.filter(~pl.col("pretrained")).sort(["method", "label_set"])
    second = again.runs.filter(~pl.col("pretrained")).sort(["method", "label_set"])
    assert first.select(["method", "label_set", "auc", "f1", "seconds"]).equals(
        second.select(["method", "label_set", "auc", "f1", "seconds"])
    )
    # a cache made with other baseline settings (or labels) is not used
    saved["key"]["e2e_lr"] = 1.0
    cache.write_text(json.dumps(saved))
    messages.clear()
    run_experiment(TINY, out, plots=False, progress=False, log=messages.append)
    assert not any("reused" in m and "finished runs" in m for m in messages)
    assert json.loads(cache.read_text())["key"]["e2e_lr"] == TINY.e2e_lr


# the same protocol on images decoded once at a working resolution, with the raw-pixel floor
DECODED = replace(TINY, image_size=8, preset="cifar", raw_pixel_head=True, distortions=(1.0,))


@pytest.fixture(scope="module")
def decoded_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[ExperimentResult, Path, list[str]]:
    out = tmp_path_factory.mktemp("decoded")
    messages: list[str] = []
    result = run_experiment(DECODED, out, plots=False, progress=False, log=messages.append)
    return result, out, messages


def test_images_are_decoded_once_at_the_working_resolution(decoded_run) -> None:
    _, out, messages = decoded_run
    decoded = np.load(out / "decoded-train-8px" / "images.npy", mmap_mode="r")
    assert decoded.shape == (1797, 8, 8, 3) and decoded.dtype == np.uint8
    assert sum("decoding 1,797 images" in m for m in messages) == 1
    with EmbeddingStore.open(out / "train.h5") as store:
        assert len(store) == 1797 and store.meta["transform"]["image_size"] == 8
    messages.clear()
    run_experiment(DECODED, out, plots=False, progress=False, log=messages.append)
    assert not any("decoding" in m for m in messages)  # a rerun reads the decoded arrays


def test_raw_pixel_head_is_one_imbnnpu_head_per_label_set(decoded_run) -> None:
    result, out, _ = decoded_run
    raw = result.runs.filter(pl.col("method") == RAW_PIXELS).sort("label_set")
    assert raw["label_set"].to_list() == [0, 1]
    assert not raw["pretrained"].any() and raw["loss"].to_list() == ["imbnnpu"] * 2
    assert raw["prior"].to_list() == pytest.approx([result.split["prior"]] * 2)
    assert raw["auc"].is_between(0, 1).all()
    assert RAW_PIXELS in result.summary["method"].to_list()
    report = (out / "report.md").read_text()
    assert f"| {RAW_PIXELS} | False |" in report
    assert "end-to-end baselines, all 4 runs" in report and "raw-pixel heads, all 2 runs" in report
    key = json.loads((out / "raw_pixels.json").read_text())["key"]
    assert key["image_size"] == 8 and key["head_epochs"] == DECODED.head_epochs
    assert json.loads((out / "end_to_end.json").read_text())["key"]["image_size"] == 8


def test_raw_pixel_heads_are_reused_only_with_the_same_key(decoded_run) -> None:
    result, out, _ = decoded_run
    messages: list[str] = []
    again = run_experiment(DECODED, out, plots=False, progress=False, log=messages.append)
    assert any("raw-pixel heads: reused 2" in m for m in messages)
    same = again.runs.filter(pl.col("method") == RAW_PIXELS).sort("label_set")["auc"].to_list()
    assert same == result.runs.filter(pl.col("method") == RAW_PIXELS).sort("label_set")["auc"].to_list()
    messages.clear()
    run_experiment(replace(DECODED, head_epochs=4), out, plots=False, progress=False, log=messages.append)
    assert any("raw-pixel heads: 2 heads on 192 pixel features x 4 epochs" in m for m in messages)


def test_raw_pixels_are_the_decoded_images_normalised(decoded_run) -> None:
    from impulses.data.decoded import DecodedSource, open_decoded
    from impulses.data.sources import open_source
    from impulses.encoders.augment import CIFAR_MEAN, CIFAR_STD

    _, out, _ = decoded_run
    decoded = open_decoded(out / "decoded-train-8px")
    source = DecodedSource(open_source("digits"), decoded)
    rows = np.array([3, 0, 17])
    images = _ImageTensors(source, rows, source, rows[:1], out / "encoder" / "last.pt")
    expected = (np.asarray(decoded.images[rows], dtype=np.float32) / 255 - CIFAR_MEAN) / CIFAR_STD
    np.testing.assert_allclose(images.train.numpy(), expected.transpose(0, 3, 1, 2), atol=1e-5)
    assert images.test.shape == (1, 3, 8, 8)


def test_imagefolder_specs_resolve_under_the_data_root(tmp_path: Path) -> None:
    assert _under_root("imagefolder:train", str(tmp_path)) == f"imagefolder:{tmp_path / 'train'}"
    assert _under_root("imagefolder:/abs/val", str(tmp_path)) == "imagefolder:/abs/val"
    assert _under_root("imagefolder:train", None) == "imagefolder:train"
    assert _under_root("fashion-mnist:test", str(tmp_path)) == "fashion-mnist:test"


def test_subset_digest_names_the_source_and_the_rows() -> None:
    from impulses.data.sources import open_source

    digits = open_source("digits")
    assert _Subset(digits, [1, 2]).digest == _Subset(digits, np.array([1, 2])).digest
    assert _Subset(digits, [1, 2]).digest != _Subset(digits, [2, 1]).digest
    assert _Subset(digits, [1, 2]).sample_id(1) == digits.sample_id(2)


def test_imagenette_config_matches_its_documented_split() -> None:
    assert IMAGENETTE.positive_classes == (2, 3, 6, 7) and IMAGENETTE.n_positive == 573
    labeled = round(IMAGENETTE.label_frequency * IMAGENETTE.n_positive)
    assert labeled == 115
    # π among the unlabeled: 458 unlabeled positives among 458 + 5,726 negatives
    assert (573 - labeled) / (573 - labeled + 5726) == pytest.approx(0.0741, abs=5e-5)
