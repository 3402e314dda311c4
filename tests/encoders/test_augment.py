"""SimCLR views (presets, seeding) and the deterministic test transform."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from scipy.stats import ks_2samp
from torchvision.transforms import v2

from impulses.encoders import augment
from impulses.errors import ImpulsesError, ParameterError


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
    with pytest.raises(ParameterError, match=r"^preset 'mnist' is not one of cifar, imagenet, small-gray"):
        augment.simclr_views("mnist")
    with pytest.raises(ImpulsesError, match="lacks a valid 'in_chans'"):
        augment.test_transform({"mean": [0.5], "std": [0.5]})
    with pytest.raises(ImpulsesError, match="mean/std need 3 values"):
        augment.test_transform({"in_chans": 3, "mean": [0.5], "std": [0.5]})


# -- batched views: the same distributions and operations as torchvision's per-image pipeline ----------
def test_crop_boxes_follow_random_resized_crop() -> None:
    """Area share and aspect ratio of the boxes: two-sample KS against RandomResizedCrop.get_params."""
    n = 4000
    ours = augment.draw_crop_boxes(n, 32, 24, (0.08, 1.0), torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    image = torch.zeros(3, 32, 24)
    theirs = torch.tensor(
        [v2.RandomResizedCrop.get_params(image, [0.08, 1.0], [3 / 4, 4 / 3]) for _ in range(n)],  # type: ignore[attr-defined]
        dtype=torch.float32,
    )
    for boxes in (ours, theirs):
        top, left, h, w = boxes.unbind(1)
        assert (top >= 0).all() and (left >= 0).all() and (top + h <= 32).all() and (left + w <= 24).all()
    area = [(b[:, 2] * b[:, 3] / (32 * 24)).numpy() for b in (ours, theirs)]
    aspect = [(b[:, 3] / b[:, 2]).numpy() for b in (ours, theirs)]
    centre = [(b[:, 1] + b[:, 3] / 2).numpy() for b in (ours, theirs)]
    for a, b in (area, aspect, centre):
        assert ks_2samp(a, b).statistic < 0.04
    # a small crop range on a tiny image: the fallback (no box fits) is the central crop
    fallback = augment.draw_crop_boxes(50, 4, 40, (0.9, 1.0), torch.Generator().manual_seed(1))
    assert {tuple(row) for row in fallback.tolist()} == {(0.0, 17.0, 4.0, 5.0)}


def test_view_parameters_have_the_presets_rates_and_ranges() -> None:
    views = augment.BatchViews(augment.PRESETS["imagenet"], 32)
    params = views.draw(20000, 32, 32, torch.Generator().manual_seed(0))
    for rate, expected in (
        (params.flip, 0.5),
        (params.jitter, 0.8),
        (params.gray, 0.2),
        (params.blur, 0.5),
        (params.solarize, 0.2),
    ):
        assert abs(rate.float().mean().item() - expected) < 0.015
    jitter = v2.ColorJitter(0.8, 0.8, 0.8, 0.2)  # strength 1.0, as the preset
    for column, (lo, hi) in enumerate([jitter.brightness, jitter.contrast, jitter.saturation, jitter.hue]):
        values = params.factors[:, column].numpy()
        uniform = np.random.default_rng(column).uniform(lo, hi, 20000)
        assert lo <= values.min() and values.max() <= hi and ks_2samp(values, uniform).statistic < 0.02
    assert (params.order.sort(dim=1).values == torch.arange(4)).all()  # permutations
    first = np.bincount(params.order[:, 0].numpy(), minlength=4) / 20000
    np.testing.assert_allclose(first, 0.25, atol=0.015)
    assert params.sigma.min() >= 0.1 and params.sigma.max() <= 2.0
    gray = augment.BatchViews(augment.PRESETS["small-gray"]).draw(
        1000, 8, 8, torch.Generator().manual_seed(0)
    )
    assert not gray.flip.any() and not gray.gray.any() and (gray.factors[:, 2] == 1).all()
    assert (gray.factors[:, 3] == 0).all()


def test_batched_operations_equal_torchvision_functionals() -> None:
    F_ = v2.functional
    x = torch.rand(6, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    f = torch.tensor([0.3, 0.7, 1.0, 1.2, 1.5, 1.8])
    hues = torch.tensor([-0.2, -0.1, 0.0, 0.05, 0.1, 0.2])
    for i in range(6):
        one = x[i : i + 1]
        torch.testing.assert_close(
            augment._brightness(one, f[i : i + 1])[0], F_.adjust_brightness(x[i], float(f[i]))
        )
        torch.testing.assert_close(
            augment._contrast(one, f[i : i + 1])[0], F_.adjust_contrast(x[i], float(f[i]))
        )
        torch.testing.assert_close(
            augment._saturation(one, f[i : i + 1])[0], F_.adjust_saturation(x[i], float(f[i]))
        )
        torch.testing.assert_close(
            augment._hue(one, hues[i : i + 1])[0], F_.adjust_hue(x[i], float(hues[i])), atol=1e-5, rtol=1e-5
        )
    sigma = torch.tensor([0.1, 0.5, 1.0, 1.5, 2.0, 0.7])
    blurred = augment._blur(x, sigma, 5)
    for i in range(6):
        torch.testing.assert_close(blurred[i], F_.gaussian_blur(x[i], [5, 5], [float(sigma[i])] * 2))
    # crops: bilinear resize of the integer box (the view of an 8 px box at 16 px), mirrored when flipped
    boxes = torch.tensor([[2.0, 3.0, 8.0, 8.0], [0.0, 0.0, 12.0, 12.0], [1.0, 4.0, 10.0, 6.0]])
    flip = torch.tensor([False, True, False])
    out = augment._crop_resize(x[:3], boxes, flip, 16)
    for i, (top, left, h, w) in enumerate(boxes.int().tolist()):
        crop = x[i : i + 1, :, top : top + h, left : left + w]
        expected = F.interpolate(crop, size=(16, 16), mode="bilinear", align_corners=False)[0]
        torch.testing.assert_close(out[i], expected.flip(-1) if flip[i] else expected)


def test_batched_views_match_the_per_image_pipeline_in_distribution() -> None:
    """Per-view channel means and contrasts of one photo-like image: KS against torchvision's pipeline."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:32, 0:32]
    pixels = np.stack([xx * 8, yy * 8, 255 - (xx + yy) * 4], axis=-1) + rng.integers(0, 20, (32, 32, 3))
    image = Image.fromarray(pixels.clip(0, 255).astype(np.uint8), "RGB")
    n = 1500
    per_image = augment.simclr_views("cifar")
    torch.manual_seed(0)
    reference = torch.stack([per_image(image)[0] for _ in range(n)])
    batch = torch.from_numpy(np.array(image)).unsqueeze(0).expand(n, -1, -1, -1)
    views = augment.batch_views("cifar")
    ours, _ = views(batch, torch.Generator().manual_seed(0))
    assert ours.shape == reference.shape == (n, 3, 32, 32)
    for stat in (lambda v: v.mean(dim=(2, 3)), lambda v: v.std(dim=(2, 3))):
        a, b = stat(ours), stat(reference)
        for c in range(3):
            assert ks_2samp(a[:, c].numpy(), b[:, c].numpy()).statistic < 0.07, c


def test_batched_views_are_reproducible_and_rows_are_independent_of_the_split() -> None:
    views = augment.batch_views("imagenet", image_size=16)
    images = torch.randint(
        0, 256, (4, 16, 16, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    a1, a2 = views(images, torch.Generator().manual_seed(3))
    b1, b2 = views(images, torch.Generator().manual_seed(3))
    assert torch.equal(a1, b1) and torch.equal(a2, b2) and not torch.equal(a1, a2)
    # a rank's share: its rows of the parameters drawn for the whole batch give the same views
    params = views.draw(8, 16, 16, torch.Generator().manual_seed(3))
    whole = views.apply(torch.cat([images, images]), params)
    rows = torch.tensor([1, 2, 5, 6])
    part = views.apply(torch.cat([images[1:3], images[1:3]]), params.take(rows))
    torch.testing.assert_close(part, whole[rows])
    torch.testing.assert_close(whole[:4], a1)
    # channels-first input gives the same views
    c1, _ = views(images.permute(0, 3, 1, 2), torch.Generator().manual_seed(3))
    torch.testing.assert_close(c1, a1)
    with pytest.raises(ParameterError, match=r"^images must have 3 channel"):
        views(torch.zeros(2, 8, 8, 2, dtype=torch.uint8), torch.Generator())
