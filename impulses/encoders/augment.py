"""SimCLR augmentations (two random views per image) and the matching test transform, from one place.

Presets (:data:`PRESETS`):

- ``cifar``: 32 px, random resized crop (0.08-1), flip, colour jitter strength 0.5 with p=0.8,
  grayscale p=0.2, no blur, no solarization, as in the SimCLR paper's CIFAR-10 experiments.
- ``imagenet``: 224 px, the same with jitter strength 1.0, Gaussian blur p=0.5 (kernel 10% of the
  image side, sigma 0.1-2.0) and solarization p=0.2 (BYOL's addition).
- ``small-gray``: small grayscale images (digits 8x8, Fashion-MNIST 28x28), one channel, the native
  size unless one is given; milder crops (0.5-1: an 8 px digit does not survive a 0.08 crop), no flip
  (digits are not mirror-symmetric), brightness/contrast jitter only (strength 0.5, p=0.8). Tuned on
  digits for 12 epochs: crops 0.3-1 / 0.2-1 or jitter strength 0.8-1.0 ended 1-5 kNN points lower,
  no jitter 4 points lower.

Views are seedable: ``views(image, seed=s)`` draws every random choice from a generator seeded with
``s`` (the pretraining loop passes a seed derived from (run seed, epoch, index), so a resumed run
sees exactly the augmentations of an uninterrupted one, whatever the number of DataLoader workers).
The test transform (resize, centre crop, channels, normalise; no augmentation) is described by a
JSON-able config so that ``impulses embed`` and the store fingerprint can record it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image
from torchvision.transforms import InterpolationMode, v2

from impulses.errors import ImpulsesError

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preset:
    """Everything that defines a preset's SimCLR views and its test transform."""

    name: str
    image_size: int | None  # None: keep the source's native size
    in_chans: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_scale: tuple[float, float] = (0.08, 1.0)
    flip_p: float = 0.5
    jitter_strength: float = 0.5
    jitter_p: float = 0.8
    color: bool = True  # saturation and hue jitter (meaningless on one channel)
    grayscale_p: float = 0.2
    blur_p: float = 0.0
    solarize_p: float = 0.0


PRESETS: dict[str, Preset] = {
    "cifar": Preset("cifar", 32, 3, CIFAR_MEAN, CIFAR_STD, jitter_strength=0.5),
    "imagenet": Preset(
        "imagenet", 224, 3, IMAGENET_MEAN, IMAGENET_STD, jitter_strength=1.0, blur_p=0.5, solarize_p=0.2
    ),
    "small-gray": Preset(
        "small-gray",
        None,
        1,
        (0.5,),
        (0.5,),
        crop_scale=(0.5, 1.0),
        flip_p=0.0,
        jitter_strength=0.5,
        color=False,
        grayscale_p=0.0,
    ),
}


def get_preset(name: str) -> Preset:
    """The preset called ``name``; an unknown name is a user error that lists the known ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ImpulsesError(f"--preset {name!r} is not one of {', '.join(PRESETS)}") from None


def _convert_mode(image: Image.Image, in_chans: int) -> Image.Image:
    """Grayscale to RGB when the encoder wants 3 channels, colour to L when it wants 1."""
    mode = "RGB" if in_chans == 3 else "L"
    if in_chans not in (1, 3):
        raise ImpulsesError(
            f"in_chans={in_chans}: only 1 (grayscale) or 3 (RGB) channel inputs are supported"
        )
    return image if image.mode == mode else image.convert(mode)


class SimCLRViews:
    """``views(image, seed=None) -> (view1, view2)``: two independent random augmentations as float tensors."""

    def __init__(self, preset: Preset, image_size: int | None = None) -> None:
        self.preset = preset
        self.image_size = image_size if image_size is not None else preset.image_size
        self._pipelines: dict[tuple[int, int], v2.Compose] = {}

    def _pipeline(self, size: tuple[int, int]) -> v2.Compose:
        pipeline = self._pipelines.get(size)
        if pipeline is None:
            pipeline = self._pipelines[size] = self._build(size)
        return pipeline

    def _build(self, size: tuple[int, int]) -> v2.Compose:
        p = self.preset
        s = p.jitter_strength
        steps: list[Any] = [v2.RandomResizedCrop(size, scale=p.crop_scale, antialias=True)]
        if p.flip_p > 0:
            steps.append(v2.RandomHorizontalFlip(p.flip_p))
        if p.jitter_p > 0 and s > 0:
            jitter = (
                v2.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s)
                if p.color
                else v2.ColorJitter(0.8 * s, 0.8 * s)
            )
            steps.append(v2.RandomApply([jitter], p=p.jitter_p))
        if p.grayscale_p > 0 and p.in_chans == 3:
            steps.append(v2.RandomGrayscale(p.grayscale_p))
        if p.blur_p > 0:
            kernel = max(3, int(0.1 * min(size)) // 2 * 2 + 1)  # odd, ~10% of the side as in SimCLR
            steps.append(v2.RandomApply([v2.GaussianBlur(kernel, sigma=(0.1, 2.0))], p=p.blur_p))
        if p.solarize_p > 0:
            steps.append(v2.RandomSolarize(threshold=128, p=p.solarize_p))
        steps += [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(p.mean, p.std)]
        return v2.Compose(steps)

    def __call__(self, image: Image.Image, *, seed: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        image = _convert_mode(image, self.preset.in_chans)
        size = (self.image_size, self.image_size) if self.image_size else (image.height, image.width)
        pipeline = self._pipeline(size)
        if seed is None:
            return pipeline(image), pipeline(image)
        # torchvision draws from the global CPU generator: seed it for this call only, then restore it.
        # (The generator directly: torch.random.fork_rng + torch.manual_seed cost ~100x more.)
        generator = torch.default_generator
        saved = generator.get_state()
        generator.manual_seed(seed)
        try:
            return pipeline(image), pipeline(image)
        finally:
            generator.set_state(saved)


def simclr_views(preset: str, *, image_size: int | None = None) -> SimCLRViews:
    """Two-view SimCLR augmentation for ``preset`` (``image_size`` overrides the preset's size)."""
    return SimCLRViews(get_preset(preset), image_size)


def test_transform_config(preset: str, *, image_size: int | None = None, in_chans: int | None = None) -> dict:
    """JSON-able description of ``preset``'s test transform (what :func:`test_transform` builds).

    Keys: ``preset``, ``image_size`` (None keeps the native size), ``in_chans``, ``mean``, ``std``,
    ``crop_pct`` (resize the short side to image_size / crop_pct, then centre-crop image_size),
    ``interpolation``. ``in_chans`` defaults to the preset's.
    """
    p = get_preset(preset)
    in_chans = p.in_chans if in_chans is None else in_chans
    mean, std = p.mean, p.std
    if in_chans != len(mean):  # e.g. an RGB encoder on small grayscale images: replicate / average
        mean = tuple([sum(mean) / len(mean)] * in_chans)
        std = tuple([sum(std) / len(std)] * in_chans)
    return {
        "preset": p.name,
        "image_size": image_size if image_size is not None else p.image_size,
        "in_chans": in_chans,
        "mean": list(mean),
        "std": list(std),
        "crop_pct": 1.0,
        "interpolation": "bilinear",
    }


class TestTransform:
    """PIL image -> normalised float tensor (C, H, W): resize, centre crop, channels; no augmentation.

    A plain object (not a closure), so it pickles into DataLoader worker processes.
    """

    __test__ = False

    def __init__(self, config: dict) -> None:
        try:
            self.in_chans = int(config["in_chans"])
            mean, std = list(config["mean"]), list(config["std"])
        except (KeyError, TypeError, ValueError) as err:
            raise ImpulsesError(f"transform config {config!r} lacks a valid {err}") from None
        if len(mean) != self.in_chans or len(std) != self.in_chans:
            raise ImpulsesError(f"transform config: mean/std need {self.in_chans} values, got {mean} / {std}")
        self.config = dict(config)
        size = config.get("image_size")
        steps: list[Any] = []
        if size:
            crop_pct = float(config.get("crop_pct", 1.0))
            interpolation = InterpolationMode(config.get("interpolation", "bilinear"))
            steps += [
                v2.Resize(round(size / crop_pct), interpolation=interpolation, antialias=True),
                v2.CenterCrop(size),
            ]
        steps += [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
        self.pipeline = v2.Compose(steps)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return self.pipeline(_convert_mode(image, self.in_chans))


def test_transform(config: dict) -> TestTransform:
    """Deterministic PIL -> normalised float tensor (C, H, W) transform described by ``config``."""
    return TestTransform(config)


# Not tests: keep pytest from collecting these when a test module imports them by name.
test_transform.__test__ = False  # type: ignore[attr-defined]
test_transform_config.__test__ = False  # type: ignore[attr-defined]
