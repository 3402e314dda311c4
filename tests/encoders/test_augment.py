"""SimCLR views (presets, seeding) and the deterministic test transform."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from impulses.encoders import augment
from impulses.errors import ImpulsesError


def _gray(side: int = 8, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (side, side), dtype=np.uint8), "L")


def _rgb(side: int = 40, seed: int = 0) -> Image.Image:
    return Image.fromarray(
        np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8), "RGB"
    )


def test_presets_follow_the_simclr_paper() -> None:
    cifar, imagenet, gray = (augment.PRESETS[n] for n in ("cifar", "imagenet", "small-gray"))
    assert (cifar.image_size, cifar.jitter_strength, cifar.blur_p, cifar.jitter_p, cifar.grayscale_p) == (
        32, 0.5, 0.0, 0.8, 0.2,
    )  # fmt: skip
    assert (imagenet.image_size, imagenet.jitter_strength, imagenet.blur_p) == (224, 1.0, 0.5)
    assert gray.in_chans == 1 and gray.image_size is None


def test_view_shapes_per_preset() -> None:
    v1, v2 = augment.simclr_views("cifar")(_rgb(40))
    assert v1.shape == v2.shape == (3, 32, 32) and v1.dtype == torch.float32
    v1, _ = augment.simclr_views("cifar")(_gray(28))  # grayscale input for an RGB preset: 3 channels
    assert v1.shape == (3, 32, 32)
    v1, _ = augment.simclr_views("imagenet", image_size=64)(_rgb(80))
    assert v1.shape == (3, 64, 64)
    v1, _ = augment.simclr_views("small-gray")(_gray(8))  # native size
    assert v1.shape == (1, 8, 8)
    v1, _ = augment.simclr_views("small-gray")(_rgb(28))
    assert v1.shape == (1, 28, 28)


def test_seeded_views_are_reproducible_and_leave_the_global_rng_alone() -> None:
    views = augment.simclr_views("cifar")
    image = _rgb(32)
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a1, a2 = views(image, seed=5)
    assert torch.equal(torch.rand(3), expected_next)  # the call restored the global generator
    b1, b2 = views(image, seed=5)
    c1, _ = views(image, seed=6)
    assert torch.equal(a1, b1) and torch.equal(a2, b2)
    assert not torch.equal(a1, a2)  # the two views differ
    assert not torch.equal(a1, c1)  # another seed, other views


def test_views_are_random_crops_of_the_image() -> None:
    # a constant image stays constant under crops/flips; jitter may only move it uniformly
    image = Image.new("L", (8, 8), 200)
    v1, v2 = augment.simclr_views("small-gray")(image, seed=0)
    for v in (v1, v2):
        assert torch.allclose(v, v.flatten()[0].expand_as(v), atol=1e-6)


def test_test_transform_normalises_deterministically() -> None:
    config = augment.test_transform_config("cifar")
    assert config["image_size"] == 32 and config["in_chans"] == 3
    transform = augment.test_transform(config)
    image = Image.new("RGB", (32, 32), (255, 128, 0))
    out = transform(image)
    expected = [
        (c / 255 - m) / s for c, m, s in zip((255, 128, 0), config["mean"], config["std"], strict=True)
    ]
    torch.testing.assert_close(out[:, 5, 7], torch.tensor(expected), rtol=1e-5, atol=1e-5)
    assert torch.equal(transform(image), out)


def test_test_transform_resizes_and_converts_channels() -> None:
    rgb_config = augment.test_transform_config("small-gray", image_size=16, in_chans=3)
    assert rgb_config["in_chans"] == 3 and len(rgb_config["mean"]) == 3
    out = augment.test_transform(rgb_config)(_gray(8))
    assert out.shape == (3, 16, 16)
    assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])  # gray replicated into RGB
    native = augment.test_transform(augment.test_transform_config("small-gray"))(_gray(8))
    assert native.shape == (1, 8, 8)
    pixels = np.asarray(_gray(8), dtype=np.float32) / 255
    torch.testing.assert_close(native[0], torch.from_numpy((pixels - 0.5) / 0.5))
    # a non-square image: short side to the size, then a centre crop
    wide = augment.test_transform(augment.test_transform_config("cifar"))(_rgb(10).resize((64, 40)))
    assert wide.shape == (3, 32, 32)


def test_bad_preset_and_config() -> None:
    with pytest.raises(ImpulsesError, match="--preset 'mnist' is not one of cifar, imagenet, small-gray"):
        augment.simclr_views("mnist")
    with pytest.raises(ImpulsesError, match="lacks a valid 'in_chans'"):
        augment.test_transform({"mean": [0.5], "std": [0.5]})
    with pytest.raises(ImpulsesError, match="mean/std need 3 values"):
        augment.test_transform({"in_chans": 3, "mean": [0.5], "std": [0.5]})
