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

Two implementations draw from the same distributions:

- :class:`BatchViews` (what pretraining runs): the two views of a whole batch of uint8 images at
  the working resolution at once, as tensor operations on the training device, every random
  parameter drawn per sample from an explicit ``torch.Generator`` (pretraining seeds it by
  (run seed, epoch, batch), so a resumed run sees exactly the augmentations of an uninterrupted one,
  whatever the number of workers or processes). Crops and flips are torchvision's integer crop
  boxes followed by a bilinear resize written as two batched matrix products (for crops of an image
  already at the working resolution that is an upsampling, which needs no antialiasing), colour
  jitter applies brightness, contrast, saturation and hue in a random order per sample as
  torchvision does. Chosen over ``kornia.augmentation``
  because it draws from an explicit generator (kornia draws from the global RNG, which seeding per
  batch would have to fork) and matches torchvision's crop boxes and jitter order; on the CPU it
  was about 1.7x faster than kornia's equivalent pipeline in a single-thread measurement (256
  images at 32 px) and on par in a heavily loaded run. ``benchmarks/bench_pretrain.py`` measures both.
- :class:`SimCLRViews`: torchvision's per-image PIL pipeline (``views(image, seed=s)``), the
  reference the batched views are tested against.

The test transform (resize, centre crop, channels, normalise; no augmentation) is described by a
JSON-able config so that ``impulses embed`` and the store fingerprint can record it; its geometric
part is :func:`impulses.data.decoded.decode_image`, the same step that decodes images once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms import v2

from impulses.data.decoded import convert_mode, decode_image
from impulses.errors import ImpulsesError, ParameterError

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class AugmentationPreset:
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


PRESETS: dict[str, AugmentationPreset] = {
    "cifar": AugmentationPreset("cifar", 32, 3, CIFAR_MEAN, CIFAR_STD, jitter_strength=0.5),
    "imagenet": AugmentationPreset(
        "imagenet", 224, 3, IMAGENET_MEAN, IMAGENET_STD, jitter_strength=1.0, blur_p=0.5, solarize_p=0.2
    ),
    "small-gray": AugmentationPreset(
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


def get_augmentation_preset(name: str) -> AugmentationPreset:
    """The preset called ``name``.

    Raises:
        ParameterError: an unknown name (the message lists the known ones).
    """
    try:
        return PRESETS[name]
    except KeyError:
        raise ParameterError("preset", f"{name!r} is not one of {', '.join(PRESETS)}") from None


class SimCLRViews:
    """``views(image, seed=None) -> (view1, view2)``: two independent random augmentations as float tensors."""

    def __init__(self, preset: AugmentationPreset, image_size: int | None = None) -> None:
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
        """Two independent augmented views of ``image`` (reproducible when ``seed`` is given)."""
        image = convert_mode(image, self.preset.in_chans)
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


GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale
RATIO = (3 / 4, 4 / 3)  # RandomResizedCrop's aspect-ratio range
CROP_ATTEMPTS = 10  # RandomResizedCrop's tries before its centre-crop fallback


@dataclass
class ViewParams:
    """Per-sample random parameters of a batch of views (CPU tensors, one row per view).

    ``boxes`` (n, 4) integer crop boxes (top, left, height, width) in source pixels; ``flip``,
    ``jitter``, ``gray``, ``blur``, ``solarize`` (n,) bool; ``factors`` (n, 4) brightness, contrast,
    saturation and hue; ``order`` (n, 4) the order of those four; ``sigma`` (n,) the blur's sigma.
    """

    boxes: torch.Tensor
    flip: torch.Tensor
    jitter: torch.Tensor
    factors: torch.Tensor
    order: torch.Tensor
    gray: torch.Tensor
    blur: torch.Tensor
    sigma: torch.Tensor
    solarize: torch.Tensor

    def __len__(self) -> int:
        return int(self.flip.shape[0])

    def take(self, rows: torch.Tensor | slice) -> ViewParams:
        """The parameters of ``rows`` only (a rank's share of a global batch)."""
        return ViewParams(**{f.name: getattr(self, f.name)[rows] for f in fields(self)})


def draw_crop_boxes(
    n: int,
    height: int,
    width: int,
    scale: tuple[float, float],
    generator: torch.Generator,
    ratio: tuple[float, float] = RATIO,
) -> torch.Tensor:
    """``(n, 4)`` crop boxes (top, left, height, width) by torchvision's RandomResizedCrop.get_params.

    Up to 10 tries per sample of an area share uniform in ``scale`` and a log-uniform aspect ratio; the
    first box that fits wins, and a sample with none falls back to the central crop of clamped ratio.
    """
    area = float(height * width)
    log_ratio = torch.log(torch.tensor(ratio, dtype=torch.float64))
    target = area * (scale[0] + (scale[1] - scale[0]) * torch.rand(n, CROP_ATTEMPTS, generator=generator))
    aspect = torch.exp(
        log_ratio[0] + (log_ratio[1] - log_ratio[0]) * torch.rand(n, CROP_ATTEMPTS, generator=generator)
    )
    w = torch.round(torch.sqrt(target.double() * aspect))
    h = torch.round(torch.sqrt(target.double() / aspect))
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.double().argmax(dim=1, keepdim=True)
    w, h = w.gather(1, first).squeeze(1), h.gather(1, first).squeeze(1)
    u = torch.rand(n, 2, generator=generator, dtype=torch.float64)
    top = torch.floor(u[:, 0] * (height - h + 1))
    left = torch.floor(u[:, 1] * (width - w + 1))
    none = ~fits.any(dim=1)
    if none.any():
        in_ratio = width / height
        if in_ratio < ratio[0]:
            fw, fh = width, round(width / ratio[0])
        elif in_ratio > ratio[1]:
            fw, fh = round(height * ratio[1]), height
        else:
            fw, fh = width, height
        w[none], h[none] = float(fw), float(fh)
        top[none], left[none] = float((height - fh) // 2), float((width - fw) // 2)
    return torch.stack([top, left, h, w], dim=1).float()


def _rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """(n, 3, H, W) RGB in [0, 1] -> HSV in [0, 1] (torchvision's tensor formula)."""
    r, g, b = x.unbind(dim=1)
    maxc, minc = x.amax(dim=1), x.amin(dim=1)
    equal = maxc == minc
    cr = maxc - minc
    ones = torch.ones_like(maxc)
    s = cr / torch.where(equal, ones, maxc)
    divisor = torch.where(equal, ones, cr)
    rc, gc, bc = (maxc - r) / divisor, (maxc - g) / divisor, (maxc - b) / divisor
    hr = (maxc == r) * (bc - gc)
    hg = ((maxc == g) & (maxc != r)) * (2.0 + rc - bc)
    hb = ((maxc != g) & (maxc != r)) * (4.0 + gc - rc)
    h = torch.fmod((hr + hg + hb) / 6.0 + 1.0, 1.0)
    return torch.stack((h, s, maxc), dim=1)


def _hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """(n, 3, H, W) HSV in [0, 1] -> RGB: channel c = v - v s clamp(min(k, 4 - k), 0, 1), k = (n_c + 6h) mod 6."""
    h, s, v = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    n = torch.tensor([5.0, 3.0, 1.0], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    k = torch.remainder(n + 6.0 * h, 6.0)
    return v - v * s * torch.minimum(k, 4.0 - k).clamp(0.0, 1.0)


def _gray(x: torch.Tensor) -> torch.Tensor:
    """(n, C, H, W) -> (n, 1, H, W) luma (the image itself when it has one channel)."""
    if x.shape[1] == 1:
        return x
    w = torch.tensor(GRAY_WEIGHTS, device=x.device, dtype=x.dtype)
    return torch.einsum("nchw,c->nhw", x, w).unsqueeze(1)


def _per_sample(values: torch.Tensor) -> torch.Tensor:
    return values.view(-1, 1, 1, 1)


def _brightness(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return (x * _per_sample(f)).clamp_(0.0, 1.0)


def _contrast(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Blend with the mean luma (the luma of the channel means: the same number, 1/HW of the work)."""
    means = x.mean(dim=(2, 3))
    if x.shape[1] == 3:
        means = means @ torch.tensor(GRAY_WEIGHTS, device=x.device, dtype=x.dtype)
    f = _per_sample(f)
    return (f * x + (1.0 - f) * _per_sample(means)).clamp_(0.0, 1.0)


def _saturation(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    f = _per_sample(f)
    return (f * x + (1.0 - f) * _gray(x)).clamp_(0.0, 1.0)


def _hue(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    hsv = _rgb_to_hsv(x)
    hsv[:, 0] = torch.remainder(hsv[:, 0] + f.view(-1, 1, 1), 1.0)
    return _hsv_to_rgb(hsv)


_JITTER_OPS = (_brightness, _contrast, _saturation, _hue)


def _blur(x: torch.Tensor, sigma: torch.Tensor, kernel: int) -> torch.Tensor:
    """Per-sample Gaussian blur (odd ``kernel``, reflect padding), separable, as one grouped convolution."""
    n, c, height, width = x.shape
    half = (kernel - 1) / 2
    grid = torch.linspace(-half, half, kernel, device=x.device, dtype=x.dtype)
    weights = torch.exp(-0.5 * (grid.view(1, -1) / sigma.view(-1, 1)) ** 2)
    weights = (weights / weights.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # (n*c, k)
    pad = kernel // 2
    flat = x.reshape(1, n * c, height, width)
    flat = F.conv2d(
        F.pad(flat, (pad, pad, 0, 0), mode="reflect"), weights.view(n * c, 1, 1, kernel), groups=n * c
    )
    flat = F.conv2d(
        F.pad(flat, (0, 0, pad, pad), mode="reflect"), weights.view(n * c, 1, kernel, 1), groups=n * c
    )
    return flat.view(n, c, height, width)


class BatchViews:
    """SimCLR views of a whole batch at once: ``views(images, generator) -> (view1, view2)``.

    ``images`` are uint8 ``(B, H, W, C)`` (as decoded arrays hold them) or ``(B, C, H, W)`` on any
    device; the views are normalised float32 ``(B, C, S, S)`` on the same device. Each view of each
    image gets its own random parameters (:meth:`draw`), drawn on the CPU from ``generator``, so the
    result does not depend on the device's random number generator.
    """

    def __init__(self, preset: AugmentationPreset, image_size: int | None = None) -> None:
        self.preset = preset
        self.image_size = image_size if image_size is not None else preset.image_size

    def _jitter_range(self) -> tuple[tuple[float, float], tuple[float, float]]:
        s = self.preset.jitter_strength
        return (max(0.0, 1 - 0.8 * s), 1 + 0.8 * s), (-0.2 * s, 0.2 * s)

    def draw(self, n: int, height: int, width: int, generator: torch.Generator) -> ViewParams:
        """Random parameters for ``n`` views of ``height`` x ``width`` images (the presets' distributions)."""
        p = self.preset

        def coin(prob: float) -> torch.Tensor:
            return torch.rand(n, generator=generator) < prob

        boxes = draw_crop_boxes(n, height, width, p.crop_scale, generator)
        flip = coin(p.flip_p)
        jitter = coin(p.jitter_p) if p.jitter_strength > 0 else torch.zeros(n, dtype=torch.bool)
        (f_lo, f_hi), (h_lo, h_hi) = self._jitter_range()
        u = torch.rand(n, 4, generator=generator)
        factors = torch.cat([f_lo + (f_hi - f_lo) * u[:, :3], h_lo + (h_hi - h_lo) * u[:, 3:]], dim=1)
        if not p.color or p.in_chans == 1:
            factors[:, 2], factors[:, 3] = 1.0, 0.0  # brightness and contrast only
        order = torch.rand(n, 4, generator=generator).argsort(dim=1)
        gray = coin(p.grayscale_p) if p.in_chans == 3 else torch.zeros(n, dtype=torch.bool)
        blur = coin(p.blur_p)
        sigma = 0.1 + 1.9 * torch.rand(n, generator=generator)
        solarize = coin(p.solarize_p)
        return ViewParams(boxes, flip, jitter, factors, order, gray, blur, sigma, solarize)

    def apply(self, images: torch.Tensor, params: ViewParams) -> torch.Tensor:
        """Row i of the result is ``images[i]`` augmented with row i of ``params``."""
        x = _as_nchw(images, self.preset.in_chans)
        n, channels, height, _ = x.shape
        if len(params) != n:
            raise ParameterError("params", f"has {len(params)} rows for {n} images")
        size = self.image_size or height
        device = x.device
        x = _to_unit(x)
        x = _crop_resize(x, params.boxes.to(device), params.flip.to(device), size)
        jitter = params.jitter.to(device)
        if bool(jitter.any()):
            factors, order = params.factors.to(device), params.order.to(device)
            for position in range(4):
                for op_index, op in enumerate(_JITTER_OPS):
                    if channels == 1 and op_index >= 2:
                        continue
                    rows = (jitter & (order[:, position] == op_index)).nonzero().squeeze(1)
                    if rows.numel():
                        x[rows] = op(x[rows], factors[rows, op_index])
        if channels == 3 and bool(params.gray.any()):
            rows = params.gray.to(device).nonzero().squeeze(1)
            x[rows] = _gray(x[rows]).expand(-1, 3, -1, -1)
        if bool(params.blur.any()):
            rows = params.blur.to(device).nonzero().squeeze(1)
            x[rows] = _blur(x[rows], params.sigma.to(device)[rows], blur_kernel(size))
        if bool(params.solarize.any()):
            sel = _per_sample(params.solarize.to(device)) & (x >= 128 / 255)
            x = torch.where(sel, 1.0 - x, x)
        return _normalize(x, self.preset.mean, self.preset.std)

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Two independent augmented views of each image of the batch, drawn from ``generator``."""
        x = _as_nchw(images, self.preset.in_chans)
        params = self.draw(2 * x.shape[0], x.shape[2], x.shape[3], generator)
        return self.apply(torch.cat([x, x]), params).chunk(2)


def _to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 -> float32 in [0, 1] (torchvision's to_dtype, so the test transform's numbers are matched)."""
    return v2.functional.to_dtype(images, torch.float32, scale=True)


def _normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    return v2.functional.normalize(x, list(mean), list(std))


def normalize_images(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 ``(B, H, W, C)`` or ``(B, C, H, W)`` -> float32 ``(B, C, H, W)``: [0, 1], then (x - mean) / std.

    On decoded images this is exactly what the test transform gives (its last two steps).
    """
    return _normalize(_to_unit(_as_nchw(images, len(mean)).contiguous()), mean, std)


def blur_kernel(size: int) -> int:
    """The Gaussian blur's odd kernel size for ``size`` px views: about 10% of the side, at least 3."""
    return max(3, int(0.1 * size) // 2 * 2 + 1)


def _as_nchw(images: torch.Tensor, in_chans: int) -> torch.Tensor:
    """uint8 ``(B, H, W, C)`` or ``(B, C, H, W)`` -> ``(B, C, H, W)`` (a view; channels must match)."""
    if images.ndim != 4:
        raise ParameterError(
            "images", f"must be a (B, H, W, C) or (B, C, H, W) batch, got shape {tuple(images.shape)}"
        )
    if images.shape[1] == in_chans and images.shape[3] != in_chans:
        return images
    if images.shape[3] == in_chans:
        return images.permute(0, 3, 1, 2)
    raise ParameterError("images", f"must have {in_chans} channel(s), got shape {tuple(images.shape)}")


def _resize_weights(
    start: torch.Tensor, length: torch.Tensor, extent: int, size: int, flip: torch.Tensor | None = None
) -> torch.Tensor:
    """``(n, size, extent)`` bilinear weights of a resize of source span [start, start + length) to ``size``.

    Output pixel u samples start + (u + 0.5) * length / size - 0.5 (pixel centres at integers, as
    torchvision's and PIL's resize), clamped to the span: samples never leak across the crop's edge.
    """
    u = torch.arange(size, device=start.device, dtype=torch.float32)
    pos = start.view(-1, 1) + (u.view(1, -1) + 0.5) * (length / size).view(-1, 1) - 0.5
    if flip is not None:
        pos = torch.where(flip.view(-1, 1), pos.flip(1), pos)
    pos = torch.minimum(torch.maximum(pos, start.view(-1, 1)), (start + length - 1).view(-1, 1))
    grid = torch.arange(extent, device=start.device, dtype=torch.float32)
    return (1.0 - (pos.unsqueeze(2) - grid.view(1, 1, -1)).abs()).clamp_(min=0.0)


def _crop_resize(x: torch.Tensor, boxes: torch.Tensor, flip: torch.Tensor, size: int) -> torch.Tensor:
    """Crop each image to its box, resize to ``size`` (bilinear), mirror if flipped: ``Ry @ x @ Rx^T``.

    The same result as torchvision's crop + resize (upsampling: no antialiasing involved), as two
    batched matrix products, which are faster than ``grid_sample`` on a CPU and run anywhere.
    """
    _, _, height, width = x.shape
    top, left, h, w = boxes.unbind(dim=1)
    rows = _resize_weights(top, h, height, size).to(x.dtype)
    cols = _resize_weights(left, w, width, size, flip).to(x.dtype)
    return rows.unsqueeze(1) @ x @ cols.transpose(1, 2).unsqueeze(1)


def batch_views(preset: str, *, image_size: int | None = None) -> BatchViews:
    """Batched two-view SimCLR augmentation for ``preset`` (``image_size`` overrides the preset's size)."""
    return BatchViews(get_augmentation_preset(preset), image_size)


def simclr_views(preset: str, *, image_size: int | None = None) -> SimCLRViews:
    """Two-view SimCLR augmentation for ``preset`` (``image_size`` overrides the preset's size)."""
    return SimCLRViews(get_augmentation_preset(preset), image_size)


def test_transform_config(preset: str, *, image_size: int | None = None, in_chans: int | None = None) -> dict:
    """JSON-able description of ``preset``'s test transform (what :func:`test_transform` builds).

    Keys: ``preset``, ``image_size`` (None keeps the native size), ``in_chans``, ``mean``, ``std``,
    ``crop_pct`` (resize the short side to image_size / crop_pct, then centre-crop image_size),
    ``interpolation``. ``in_chans`` defaults to the preset's.
    """
    p = get_augmentation_preset(preset)
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
        self.image_size = config.get("image_size") or None
        self.crop_pct = float(config.get("crop_pct", 1.0))
        self.interpolation = str(config.get("interpolation", "bilinear"))
        self.pipeline = v2.Compose(
            [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
        )

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """The image as a normalized test-time tensor (resize, center crop, channels)."""
        decoded = decode_image(
            image,
            image_size=self.image_size,
            channels=self.in_chans,
            crop_pct=self.crop_pct,
            interpolation=self.interpolation,
        )
        return self.pipeline(decoded)


def test_transform(config: dict) -> TestTransform:
    """Deterministic PIL -> normalised float tensor (C, H, W) transform described by ``config``."""
    return TestTransform(config)


# Not tests: keep pytest from collecting these when a test module imports them by name.
test_transform.__test__ = False  # type: ignore[attr-defined]
test_transform_config.__test__ = False  # type: ignore[attr-defined]
