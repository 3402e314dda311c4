"""``impulses predict``: probabilities, decisions, the encoder-mismatch refusal, and ``--data`` end to end on digits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from impulses.embed.store import EmbeddingStore, StoreSpec
from impulses.pu.calibration import decide
from impulses.pu.heads import load_heads
from impulses.pu.labels import write_label_set


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """digits embedded with smallcnn (the CLI's embed), a PU split of it, and two heads trained on it:
    an imbnnPU head with the logistic surrogate and a calibrated sigmoid one."""
    from impulses.cli import main

    root = tmp_path_factory.mktemp("predict")
    store, labels, heads = root / "digits.h5", root / "labels.csv", root / "heads"
    main(["embed", "--data", "digits", "--encoder", "smallcnn", "--out", str(store), "--device", "cpu", "-q"])
    main(["split", "--store", str(store), "--positive-classes", "0,1,2,3", "--label-frequency", "0.3",
          "--out", str(labels)])  # fmt: skip
    prior = float(pl.read_csv(labels).filter(pl.col("s") == 0)["y"].mean())
    base = ["train-head", "--train", str(store), "--labels", str(labels), "--prior", f"{prior:.4f}",
            "--epochs", "5", "--no-progress", "-q"]  # fmt: skip
    main([*base, "--surrogate", "logistic", "--out", str(heads / "logistic")])
    main([*base, "--calibrate", "--calibrate-fraction", "0.3", "--out", str(heads / "calibrated")])
    return {"store": store, "labels": labels, "logistic": heads / "logistic" / "heads.pt",
            "calibrated": heads / "calibrated" / "heads.pt", "root": root}  # fmt: skip


def test_train_head_records_the_encoder_surrogate_and_calibration(digits) -> None:
    store = EmbeddingStore.open(digits["store"])
    for key in ("logistic", "calibrated"):
        meta = load_heads(digits[key]).meta
        assert meta["store_encoder"]["encoder"] == store.meta["encoder"] == "smallcnn"
        assert meta["store_encoder"]["encoder_sha256"] == store.meta["encoder_sha256"]
        assert meta["store_encoder"]["transform"] == store.meta["transform"]
        assert meta["store_encoder"]["encoder_spec"] == "smallcnn"
    assert load_heads(digits["logistic"]).heads[0].surrogate == "logistic"
    calibrated = load_heads(digits["calibrated"])
    entry = calibrated.meta["calibration"][0]
    assert entry["method"] == "pu-platt" and entry["prior"] == calibrated.heads[0].prior
    rows = calibrated.meta["calibration_rows"]
    assert rows["held_out"] + rows["trained_on"] == len(pl.read_csv(digits["labels"]))
    assert rows["held_out"] == pytest.approx(0.3 * len(pl.read_csv(digits["labels"])), abs=3)


@pytest.mark.parametrize("which", ["logistic", "calibrated"])
def test_prevalence_and_thresholds_add_the_library_columns(cli, digits, tmp_path, which) -> None:
    heads = load_heads(digits[which])
    name = heads.names[0]
    X = EmbeddingStore.open(digits["store"]).to_numpy(np.float32)
    logits = heads.decision_function(X)
    probs = heads.predict_proba(X, prevalence=0.3)
    out = tmp_path / "scores.csv"
    for rule, expected in (
        ("bayes", probs >= 0.5),
        ("logit0", logits > 0),
        ("rate:0.25", decide(logits, "rate:0.25")),
    ):
        result = cli("predict", "--heads", digits[which], "--store", digits["store"], "--prevalence", "0.3",
                     "--threshold", rule, "--out", out, "--json")  # fmt: skip
        assert result.code == 0, result.stderr
        frame = pl.read_csv(out)
        assert frame.columns == ["id", name, f"{name}_probability", f"{name}_decision"]
        np.testing.assert_allclose(frame[name].to_numpy(), logits[:, 0], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(frame[f"{name}_probability"].to_numpy(), probs[:, 0], rtol=1e-5, atol=1e-6)
        assert frame[f"{name}_decision"].to_list() == expected[:, 0].astype(int).tolist()
        summary = json.loads(result.stdout)
        assert summary["positives"] == {name: int(expected.sum())} and summary["threshold"] == rule
    assert int(expected.sum()) == int(np.ceil(0.25 * len(X)))


def test_uncalibrated_sigmoid_heads_and_bad_options_are_refused(cli, digits, tmp_path) -> None:
    plain = tmp_path / "plain"
    result = cli("train-head", "--train", digits["store"], "--labels", digits["labels"], "--prior", "0.2",
                 "--epochs", "1", "--out", plain, "-q")  # fmt: skip
    assert result.code == 0, result.stderr
    out = tmp_path / "s.csv"
    cases = {
        ("--heads", plain / "heads.pt", "--store", digits["store"], "--prevalence", "0.4"):
            "whose logits are scores, not log-odds",
        ("--heads", digits["logistic"], "--store", digits["store"], "--threshold", "bayes"):
            "--prevalence is needed by --threshold bayes",
        ("--heads", digits["logistic"], "--store", digits["store"], "--threshold", "top"):
            "--threshold must be one of logit0, bayes, rate:Q",
        ("--heads", digits["logistic"], "--store", digits["store"], "--prevalence", "1.5"):
            "prevalence must be in (0, 1)",
        ("--heads", digits["logistic"]): "--store and --data are alternatives",
        ("--heads", digits["logistic"], "--store", digits["store"], "--data", "digits"):
            "--store and --data are alternatives",
    }  # fmt: skip
    for args, message in cases.items():
        result = cli("predict", *args, "--out", out)
        assert result.code == 2 and message in result.stderr, (args, result.stderr)
        assert result.stderr.count("\n") == 1
    assert not out.exists()


def test_a_store_of_another_encoder_is_refused_naming_both(cli, digits, tmp_path) -> None:
    source = EmbeddingStore.open(digits["store"])
    X, ids = source.to_numpy(np.float32), [str(i) for i in source.ids]
    spec = StoreSpec("resnet18", "digits", "f" * 64, dict(source.meta["transform"]))
    other = EmbeddingStore.write(tmp_path / "other.h5", X, ids, spec=spec).path
    out = tmp_path / "s.parquet"
    result = cli("predict", "--heads", digits["logistic"], "--store", other, "--out", out)
    assert result.code == 2 and not out.exists()
    assert result.stderr.startswith(f"error: --allow-other-encoder is needed to score {other}: it was embedded by "
                                    "resnet18 (weights sha256 ffffffffffff), but the heads were trained on a store "
                                    f"embedded by smallcnn (weights sha256 {source.meta['encoder_sha256'][:12]})")  # fmt: skip
    result = cli(
        "predict", "--heads", digits["logistic"], "--store", other, "--out", out, "--allow-other-encoder"
    )
    assert result.code == 0, result.stderr
    # train-head --test refuses the same store before training
    test_labels = write_label_set(tmp_path / "t.csv", ids, None, y=np.zeros(len(ids), dtype=int))
    args = ["train-head", "--train", digits["store"], "--labels", digits["labels"], "--prior", "0.2", "--epochs",
            "1", "--test", other, "--test-labels", test_labels, "-q"]  # fmt: skip
    result = cli(*args, "--out", tmp_path / "refused")
    assert result.code == 2 and "--allow-other-encoder is needed to score" in result.stderr
    assert not (tmp_path / "refused").exists()
    assert cli(*args, "--out", tmp_path / "allowed", "--allow-other-encoder").code == 0


def test_predict_data_embeds_like_the_training_store_and_scores_the_same(cli, digits, tmp_path) -> None:
    by_store, by_data = tmp_path / "store.parquet", tmp_path / "data.parquet"
    common = ("--heads", digits["logistic"], "--prevalence", "0.3", "--threshold", "logit0")
    assert cli("predict", *common, "--store", digits["store"], "--out", by_store).code == 0
    result = cli("predict", *common, "--data", "digits", "--out", by_data, "--json", "--device", "cpu")
    assert result.code == 0, result.stderr
    summary = json.loads(result.stdout)
    cache = tmp_path / "data.embeddings.h5"
    assert summary["store"] == str(cache) and summary["embedded"]["status"] == "written"
    expected, got = pl.read_parquet(by_store), pl.read_parquet(by_data)
    assert got["id"].to_list() == expected["id"].to_list()
    name = load_heads(digits["logistic"]).names[0]
    np.testing.assert_allclose(got[name].to_numpy(), expected[name].to_numpy(), rtol=1e-6, atol=1e-6)
    assert got[f"{name}_decision"].to_list() == expected[f"{name}_decision"].to_list()
    # a second run finds the cache up to date (resumable as embed is)
    result = cli("predict", *common, "--data", "digits", "--out", by_data, "--json", "--device", "cpu")
    assert json.loads(result.stdout)["embedded"]["status"] == "up-to-date"


def test_predict_data_refuses_heads_without_a_usable_encoder_record(cli, digits, tmp_path) -> None:
    heads = load_heads(digits["logistic"])
    from impulses.pu.heads import save_heads

    gone = dict(heads.meta["store_encoder"], encoder_spec=str(tmp_path / "gone" / "last.pt"))
    save_heads(tmp_path / "gone.pt", heads, store_encoder=gone)
    changed = dict(heads.meta["store_encoder"], encoder_sha256="0" * 64)
    save_heads(tmp_path / "changed.pt", heads, store_encoder=changed)
    save_heads(tmp_path / "none.pt", heads, store_encoder={})
    cases = {
        "gone.pt": f"{tmp_path / 'gone' / 'last.pt'}: no such encoder checkpoint",
        "changed.pt": "smallcnn: its weights (sha256 ",
        "none.pt": "the heads do not record the encoder of their training store",
    }
    for file, message in cases.items():
        result = cli("predict", "--heads", tmp_path / file, "--data", "digits", "--out", tmp_path / "o.csv")
        assert result.code == 2 and message in result.stderr, result.stderr
        assert not (tmp_path / "o.embeddings.h5").exists()
