"""`impulses pretrain` end to end on digits, and `impulses embed --encoder DIR/last.pt` on its result."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("impulses.data.sources", reason="impulses pretrain --data needs impulses.data.sources")

from impulses.encoders.checkpoint import load_checkpoint
from impulses.files import file_sha256

TRAIN = (
    "--data",
    "digits[0:160]",
    "--encoder",
    "smallcnn",
    "--batch-size",
    "32",
    "--lr",
    "1e-3",
    "--no-progress",
)


def test_pretrain_resume_and_embed(cli, tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = cli("pretrain", *TRAIN, "--epochs", "1", "--out", run, "--json")
    assert result.code == 0, result.stderr
    history = json.loads(result.stdout)["history"]
    assert [row["epoch"] for row in history] == [0, 1]
    checkpoint = load_checkpoint(run)
    assert checkpoint["config"]["data"] == "digits[0:160]" and checkpoint["config"]["batch_size"] == 32

    again = cli("pretrain", *TRAIN, "--epochs", "1", "--out", run)
    assert again.code == 2 and "--resume is needed to continue" in again.stderr

    # --resume takes every unset option from the checkpoint, --epochs extends the run
    resumed = cli("pretrain", "--out", run, "--resume", "--epochs", "2", "--no-progress", "--json")
    assert resumed.code == 0, resumed.stderr
    assert [row["epoch"] for row in json.loads(resumed.stdout)["history"]] == [0, 1, 2]
    assert load_checkpoint(run)["epoch"] == 2

    changed = cli("pretrain", "--out", run, "--resume", "--epochs", "3", "--lr", "0.1", "--no-progress")
    assert changed.code == 2 and "lr=0.1 (checkpoint: 0.001)" in changed.stderr

    store = tmp_path / "digits.h5"
    embedded = cli("embed", "--data", "digits[0:160]", "--encoder", run / "last.pt", "--out", store)
    assert embedded.code == 0, embedded.stderr
    from impulses.embed.store import EmbeddingStore

    opened = EmbeddingStore.open(store)
    assert len(opened) == 160 and opened.dim == 256
    assert opened.meta["encoder_sha256"] == file_sha256(run / "last.pt")


def test_user_errors(cli, tmp_path: Path) -> None:
    no_checkpoint = cli("pretrain", "--out", tmp_path / "new", "--resume")
    assert no_checkpoint.code == 2 and no_checkpoint.stderr.count("\n") == 1
    assert (
        str(tmp_path / "new" / "last.pt") in no_checkpoint.stderr and "no checkpoint" in no_checkpoint.stderr
    )
    missing = cli("pretrain", "--out", tmp_path / "a", "--encoder", "smallcnn")
    assert missing.code == 2 and "--data is required" in missing.stderr
    unknown = cli("pretrain", "--out", tmp_path / "b", "--data", "mnist")
    assert unknown.code == 2 and "'mnist' is not a known dataset spec" in unknown.stderr
    encoder = cli("pretrain", *TRAIN[:2], "--encoder", "resnet18x", "--out", tmp_path / "c", "--no-progress")
    assert encoder.code == 2 and "'resnet18x' is not a known encoder" in encoder.stderr
    loss = cli("pretrain", *TRAIN, "--loss", "infonce", "--out", tmp_path / "d")
    assert loss.code == 2 and "--loss 'infonce' is not one of debiased, ntxent" in loss.stderr
