"""load_encoder: by name (deterministic random init, presets, transforms) and by checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from impulses.encoders import LoadedEncoder, load_encoder
from impulses.encoders.checkpoint import state_dict_sha256
from impulses.errors import ImpulsesError, ParameterError
from impulses.files import file_sha256


def test_by_name_is_frozen_and_reproducible() -> None:
    torch.manual_seed(99)
    before = torch.rand(1)
    torch.manual_seed(99)
    a = load_encoder("smallcnn")
    assert torch.equal(torch.rand(1), before)  # the fixed-seed init does not touch the caller's RNG
    b = load_encoder("smallcnn")
    assert isinstance(a, LoadedEncoder)
    assert a.sha256 == b.sha256 == state_dict_sha256(a.model.state_dict())
    assert not a.model.training and not any(p.requires_grad for p in a.model.parameters())
    assert (a.name, a.preset) == ("smallcnn", "small-gray")
    assert a.transform["in_chans"] == 3  # loaded by name: an RGB smallcnn


def test_timm_presets_and_transforms() -> None:
    cifar = load_encoder("resnet18", cifar_stem=True, random_init=True)
    assert cifar.preset == "cifar" and cifar.transform["image_size"] == 32
    imagenet = load_encoder("resnet18", random_init=True)
    assert imagenet.preset == "imagenet" and imagenet.transform["image_size"] == 224
    assert imagenet.transform["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert cifar.sha256 != imagenet.sha256


def test_weights_file_hash(tmp_path: Path) -> None:
    torch.save(load_encoder("smallcnn").model.state_dict(), tmp_path / "w.pt")
    loaded = load_encoder("smallcnn", weights=tmp_path / "w.pt")
    assert loaded.sha256 == file_sha256(tmp_path / "w.pt")


def test_bad_checkpoint_specs(tmp_path: Path) -> None:
    with pytest.raises(ImpulsesError, match=r"runs/none/last\.pt: no such checkpoint file"):
        load_encoder(str(tmp_path / "runs" / "none" / "last.pt"))
    (tmp_path / "x.pt").write_bytes(b"junk")
    with pytest.raises(ImpulsesError, match=r"x\.pt: not a readable checkpoint"):
        load_encoder(tmp_path / "x.pt")


def _fake_run(tmp_path: Path) -> Path:
    """A checkpoint as `impulses pretrain` writes it, for a smallcnn on 1-channel 8 px images."""
    from impulses.encoders import create_encoder
    from impulses.encoders.augment import test_transform_config
    from impulses.encoders.checkpoint import save_checkpoint

    torch.manual_seed(5)
    model = create_encoder("smallcnn", in_chans=1)
    save_checkpoint(
        tmp_path / "run" / "last.pt",
        {
            "encoder": {"name": "smallcnn", "cifar_stem": False, "in_chans": 1, "num_features": 256},
            "preset": "small-gray",
            "transform": test_transform_config("small-gray", image_size=8),
            "encoder_state": model.state_dict(),
            "epoch": 1,
            "config": {},
        },
    )
    return tmp_path / "run"


def test_checkpoint_conflicts_and_mismatches(tmp_path: Path) -> None:
    run = _fake_run(tmp_path)
    loaded = load_encoder(run)
    assert loaded.transform["in_chans"] == 1 and loaded.model(torch.randn(2, 1, 8, 8)).shape == (2, 256)
    with pytest.raises(
        ImpulsesError, match=r"^cifar_stem is on, but the smallcnn of .*last\.pt was trained without it"
    ):
        load_encoder(run, cifar_stem=True)
    with pytest.raises(
        ImpulsesError,
        match=r"^weights does not apply to .*last\.pt: a pretraining checkpoint carries its weights",
    ):
        load_encoder(run, weights=run / "last.pt")
    checkpoint = torch.load(run / "last.pt", weights_only=True)
    checkpoint["encoder"]["in_chans"] = 3  # the stored weights are for 1 channel
    torch.save(checkpoint, tmp_path / "broken.pt")
    with pytest.raises(ImpulsesError, match=r"broken\.pt: encoder_state does not fit smallcnn"):
        load_encoder(tmp_path / "broken.pt")


def _empty_hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    import huggingface_hub.constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return cache


def test_pretrained_offline_without_cached_weights_fails_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    from impulses.encoders import registry

    _empty_hub_cache(tmp_path, monkeypatch)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(
        ParameterError, match=r"^pretrained test_vit: .*not in the local cache and HF_HUB_OFFLINE"
    ):
        load_encoder("test_vit", pretrained=True)
    assert time.perf_counter() - start < 2.0
    # no HF_HUB_OFFLINE, but the hub does not answer: the same quick refusal, naming the host
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(registry, "_reachable", lambda host, timeout: False)
    with pytest.raises(ParameterError, match=r"not in the local cache and huggingface\.co cannot be reached"):
        load_encoder("test_vit", pretrained=True)


def test_pretrained_weights_in_the_local_cache_load_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import timm
    from safetensors.torch import save_file

    cache = _empty_hub_cache(tmp_path, monkeypatch)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.manual_seed(5)
    published = timm.create_model("test_vit").state_dict()  # with its classifier, as published
    repo = cache / "models--timm--test_vit.r160_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    (repo / "snapshots" / ("0" * 40)).mkdir(parents=True)
    save_file(published, str(repo / "snapshots" / ("0" * 40) / "model.safetensors"))
    loaded = load_encoder("test_vit", pretrained=True)
    assert loaded.weights == "pretrained"
    own = loaded.model.state_dict()
    assert "head.weight" not in own  # the feature extractor has no classifier
    assert all(torch.equal(own[key], published[key]) for key in own)


def test_weight_origin_is_recorded() -> None:
    assert load_encoder("smallcnn").weights == "random"
    assert load_encoder("test_vit", random_init=True).weights == "random"
