"""Registry: our small encoder, timm models, CIFAR stem, wildcards, local weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from impulses.encoders import create_encoder, list_encoders, register_encoder
from impulses.encoders.registry import registered
from impulses.errors import ImpulsesError, ParameterError


def test_smallcnn_maps_small_images_to_features() -> None:
    model = create_encoder("smallcnn", in_chans=1)
    n_params = sum(p.numel() for p in model.parameters())
    assert 100_000 < n_params < 1_000_000
    for side in (8, 28, 32):
        out = model(torch.randn(3, 1, side, side))
        assert out.shape == (3, model.num_features) == (3, 256)
    rgb = create_encoder("smallcnn")
    assert rgb(torch.randn(2, 3, 8, 8)).shape == (2, 256)


def test_timm_model_by_name_and_cifar_stem() -> None:
    plain = create_encoder("resnet18").eval()
    assert plain.num_features == 512
    assert plain(torch.randn(2, 3, 64, 64)).shape == (2, 512)  # classifier removed: pooled features
    assert not any(isinstance(m, nn.Linear) for m in plain.modules())

    stem = create_encoder("resnet18", cifar_stem=True).eval()
    conv = stem.conv1
    assert (conv.kernel_size, conv.stride, conv.padding, conv.in_channels, conv.out_channels) == (
        (3, 3), (1, 1), (1, 1), 3, 64,
    )  # fmt: skip
    assert isinstance(stem.maxpool, nn.Identity)
    x = torch.randn(1, 3, 32, 32)
    # three stride-2 stages after the stem: 32 -> 4 with the CIFAR stem, 32 -> 1 with the ImageNet stem
    assert stem.forward_features(x).shape[-2:] == (4, 4)
    assert plain.forward_features(x).shape[-2:] == (1, 1)
    with pytest.raises(ParameterError, match=r"^cifar_stem does not apply to .* no single conv1"):
        create_encoder("mobilenetv3_small_050", cifar_stem=True)


def test_list_encoders_with_wildcards() -> None:
    assert list_encoders("small*") == ["smallcnn", "smallcnn-pooled"]
    assert list_encoders("smallcnn-*") == ["smallcnn-pooled"]
    found = list_encoders("resnet1?")
    assert "resnet18" in found and "resnet50" not in found
    everything = list_encoders()
    assert everything[0] == "smallcnn" or "smallcnn" in everything
    assert "resnet50" in everything and len(everything) > 500


def test_register_encoder() -> None:
    name = "test-registry-linear"
    if registered(name) is None:

        @register_encoder(name, preset="cifar")
        def _factory(*, in_chans: int = 3, cifar_stem: bool = False) -> nn.Module:
            model = nn.Sequential(nn.Flatten(), nn.LazyLinear(5))
            model.num_features = 5
            return model

    assert name in list_encoders("test-registry-*")
    assert create_encoder(name)(torch.randn(2, 3, 4, 4)).shape == (2, 5)
    with pytest.raises(ValueError, match="already registered"):
        register_encoder(name)(lambda **_: nn.Identity())


def test_unknown_encoder_and_pretrained_without_weights() -> None:
    with pytest.raises(
        ParameterError, match=r"^encoder 'resnet18x' is not a known encoder.*similar: .*resnet18"
    ):
        create_encoder("resnet18x")
    with pytest.raises(
        ParameterError, match=r"^pretrained is not available for smallcnn: it has no published weights"
    ):
        create_encoder("smallcnn", pretrained=True)


def test_local_weights_load_strictly(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = create_encoder("smallcnn", in_chans=1)
    state = source.state_dict()
    torch.save(state, tmp_path / "w.pt")
    torch.manual_seed(1)
    loaded = create_encoder("smallcnn", in_chans=1, weights=tmp_path / "w.pt")
    x = torch.randn(2, 1, 8, 8)
    source.eval(), loaded.eval()
    assert torch.equal(source(x), loaded(x))
    torch.save({"state_dict": state}, tmp_path / "wrapped.pt")
    create_encoder("smallcnn", in_chans=1, weights=tmp_path / "wrapped.pt")

    with pytest.raises(
        ImpulsesError, match=r"w\.pt does not fit smallcnn \(wrong shape: features\.0\.0\.weight\)"
    ):
        create_encoder("smallcnn", in_chans=3, weights=tmp_path / "w.pt")
    bad = dict(state)
    del bad["features.1.1.weight"]
    bad["extra.weight"] = torch.zeros(1)
    torch.save(bad, tmp_path / "bad.pt")
    with pytest.raises(ImpulsesError, match=r"missing: features\.1\.1\.weight; unexpected: extra\.weight"):
        create_encoder("smallcnn", in_chans=1, weights=tmp_path / "bad.pt")
    with pytest.raises(ParameterError, match=r"^weights .*nope\.pt: no such file"):
        create_encoder("smallcnn", weights=tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ImpulsesError, match=r"junk\.pt: not a readable state dict"):
        create_encoder("smallcnn", weights=tmp_path / "junk.pt")


def test_timm_weights_drop_only_the_classifier(tmp_path: Path) -> None:
    """A timm/torchvision ResNet checkpoint carries fc.*, which the feature extractor lacks."""
    torch.manual_seed(0)
    source = create_encoder("resnet18", cifar_stem=True)
    state = source.state_dict()
    torch.save({**state, "fc.weight": torch.zeros(10, 512), "fc.bias": torch.zeros(10)}, tmp_path / "w.pt")
    loaded = create_encoder("resnet18", cifar_stem=True, weights=tmp_path / "w.pt")
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in state.items())
    with pytest.raises(ImpulsesError, match=r"does not fit resnet18 \(wrong shape: conv1\.weight\)"):
        create_encoder("resnet18", weights=tmp_path / "w.pt")  # ImageNet stem: 7x7 conv1


def test_smallcnn_pooled_quarters_the_first_maps() -> None:
    """The pooled variant halves the side after layer 1: same features, a quarter of the activations there."""
    plain, pooled = create_encoder("smallcnn", in_chans=1), create_encoder("smallcnn-pooled", in_chans=1)
    x = torch.randn(2, 1, 28, 28)
    assert plain(x).shape == pooled(x).shape == (2, 256)
    assert plain.features[1](plain.features[0](x)).shape[-1] == 28
    assert pooled.features[2](pooled.features[1](pooled.features[0](x))).shape[-1] == 14


def test_describe_encoders_marks_published_weights_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    import timm

    from impulses.encoders.registry import describe_encoders

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("describe_encoders must not use the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    ours = describe_encoders("smallcnn*")
    assert [(e["name"], e["source"], e["pretrained"]) for e in ours] == [
        ("smallcnn", "impulses", False),
        ("smallcnn-pooled", "impulses", False),
    ]
    found = {e["name"]: e for e in describe_encoders("resnet*")}
    assert set(found) == set(timm.list_models("resnet*"))
    published = {name.split(".")[0] for name in timm.list_pretrained("resnet*")}
    for name, entry in found.items():
        assert entry["source"] == "timm" and entry["pretrained"] == (name in published)
        assert entry["weights"] == [w for w in timm.list_pretrained(f"{name}.*")]
    assert found["resnet18"]["pretrained"] and "resnet18.tv_in1k" in found["resnet18"]["weights"]
    assert any(not e["pretrained"] and e["weights"] == [] for e in found.values())  # both kinds are listed
    assert describe_encoders("resnet18.tv*") == [
        {"name": "resnet18", "source": "timm", "pretrained": True, "weights": ["resnet18.tv_in1k"]}
    ]
    everything = describe_encoders()
    assert [e["source"] for e in everything[:2]] == ["impulses", "impulses"]
