"""Checkpoint writing/reading, hashes and RNG state round trips."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from impulses.encoders.checkpoint import (
    checkpoint_path,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
    state_dict_sha256,
)
from impulses.errors import ImpulsesError


def _minimal() -> dict:
    return {
        "encoder": {"name": "smallcnn", "cifar_stem": False, "in_chans": 1, "num_features": 256},
        "preset": "small-gray",
        "transform": {"image_size": 8},
        "encoder_state": {"w": torch.arange(3.0)},
        "epoch": 2,
        "config": {"lr": 1e-3},
        "rng": rng_state(),
    }


def test_round_trip_is_atomic_and_weights_only(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "run" / "last.pt", _minimal())
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["last.pt"]  # no temporary file left behind
    loaded = load_checkpoint(tmp_path / "run")  # a directory means DIR/last.pt
    assert loaded["format"] == "impulses.pretrain" and loaded["format_version"] == 1
    assert torch.equal(loaded["encoder_state"]["w"], torch.arange(3.0))
    assert checkpoint_path(tmp_path / "run") == tmp_path / "run" / "last.pt"
    torch.load(tmp_path / "run" / "last.pt", weights_only=True)  # nothing beyond tensors and containers


def test_bad_checkpoints_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(ImpulsesError, match=r"missing\.pt: no such checkpoint file"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(ImpulsesError, match=r"junk\.pt: not a readable checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(ImpulsesError, match=r"other\.pt: not an `impulses pretrain` checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    torch.save({"format": "impulses.pretrain", "format_version": 99}, tmp_path / "future.pt")
    with pytest.raises(ImpulsesError, match=r"future\.pt: checkpoint format_version 99 is not supported"):
        load_checkpoint(tmp_path / "future.pt")
    torch.save({"format": "impulses.pretrain", "format_version": 1, "encoder": {}}, tmp_path / "partial.pt")
    with pytest.raises(ImpulsesError, match=r"partial\.pt: checkpoint lacks preset, transform"):
        load_checkpoint(tmp_path / "partial.pt")


def test_hashes(tmp_path: Path) -> None:
    a = {"w": torch.ones(2, 2), "b": torch.zeros(2, dtype=torch.bfloat16), "n": torch.tensor(3)}
    same = {"n": torch.tensor(3), "b": torch.zeros(2, dtype=torch.bfloat16), "w": torch.ones(2, 2)}
    assert state_dict_sha256(a) == state_dict_sha256(same)  # key order does not matter
    assert state_dict_sha256(a) != state_dict_sha256({**a, "w": torch.ones(4)})  # shape matters
    changed = {
        **a,
        "w": torch.ones(2, 2).index_put_((torch.tensor([0]), torch.tensor([1])), torch.tensor(1.5)),
    }
    assert state_dict_sha256(a) != state_dict_sha256(changed)


def test_rng_state_round_trip() -> None:
    state = rng_state()
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
