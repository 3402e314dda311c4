"""``load_encoder``: a frozen encoder plus what ``impulses embed`` needs to run it (name, hash, transform).

The spec is either an encoder name (ours or timm's) or an ``impulses pretrain`` checkpoint (``DIR`` or
``DIR/last.pt``). The sha256 identifies the weights for the store fingerprint: the checkpoint's or
weights file's bytes, else the state dict's bytes. A randomly initialised encoder is built under a
fixed seed, so its hash (and its embeddings) are the same in every run. A timm model is only
built with random weights when asked (``random_init=True``): a timm name is nearly always meant
with its published weights, and embeddings of a random ViT would pass for them silently.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from impulses.encoders.augment import test_transform_config
from impulses.encoders.checkpoint import (
    CHECKPOINT_NAME,
    checkpoint_path,
    load_checkpoint,
    state_dict_sha256,
)
from impulses.encoders.registry import create_encoder, registered
from impulses.errors import ImpulsesError, ParameterError
from impulses.files import file_sha256

RANDOM_INIT_SEED = 0


@dataclass(frozen=True)
class LoadedEncoder:
    """A frozen encoder (eval mode, no grad) and the facts a store records about it.

    ``weights`` says where its weights came from: ``random`` (initialised under a fixed seed),
    ``pretrained`` (timm's published weights), ``file`` (a local state dict) or ``checkpoint``
    (an ``impulses pretrain`` run).
    """

    model: nn.Module
    name: str
    sha256: str
    preset: str
    transform: dict = field(default_factory=dict)
    weights: str = "random"


def _looks_like_path(spec: str) -> bool:
    """A checkpoint spec: has a path separator or a .pt/.pth suffix, or names a file or a run directory."""
    if os.sep in spec or "/" in spec or spec.endswith((".pt", ".pth")):
        return True
    path = Path(spec)
    return path.is_file() or (path / CHECKPOINT_NAME).is_file()


def _freeze(model: nn.Module) -> nn.Module:
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


def default_preset(name: str, *, cifar_stem: bool) -> str:
    """The preset an encoder loaded by name expects: ours say; timm: ``cifar`` with the CIFAR stem."""
    entry = registered(name)
    if entry is not None:
        return entry.preset
    return "cifar" if cifar_stem else "imagenet"


def load_encoder(
    spec: str | os.PathLike[str],
    *,
    cifar_stem: bool = False,
    pretrained: bool = False,
    weights: str | os.PathLike[str] | None = None,
    random_init: bool = False,
) -> LoadedEncoder:
    """Build (name) or restore (checkpoint) an encoder, frozen and in eval mode, on the CPU.

    Args:
        spec: A registered or timm encoder name, or a checkpoint (``DIR`` or ``DIR/last.pt``).
        cifar_stem: 3x3 stride-1 first convolution, no max-pool (ResNets, for 8-32 px images).
        pretrained: timm's published weights (from the local cache when offline).
        weights: A local state dict to load strictly.
        random_init: Allow a timm model with random initial weights (no ``pretrained``/``weights``).

    Returns:
        The frozen model with its name, weights hash, preset, test transform and weight origin.

    Raises:
        ParameterError: A timm name without ``pretrained``, ``weights`` or ``random_init``, or
            options a checkpoint does not take.
        ImpulsesError: Unknown names, unreadable files, unavailable published weights.
    """
    spec = str(spec)
    if _looks_like_path(spec):
        return _from_checkpoint(spec, cifar_stem=cifar_stem, pretrained=pretrained, weights=weights)
    if registered(spec) is None and not (pretrained or weights is not None or random_init):
        _refuse_random_timm(spec)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_INIT_SEED)
        model = create_encoder(spec, cifar_stem=cifar_stem, pretrained=pretrained, weights=weights)
    sha = file_sha256(weights) if weights is not None else state_dict_sha256(model.state_dict())
    preset = default_preset(spec, cifar_stem=cifar_stem)
    transform = test_transform_config(preset, in_chans=int(getattr(model, "in_chans", 3)))
    cfg = getattr(model, "pretrained_cfg", None)
    if (
        cfg and not cifar_stem and preset == "imagenet"
    ):  # timm knows the resolution/normalisation it was made for
        transform.update(
            image_size=int(cfg.get("input_size", (3, 224, 224))[-1]),
            mean=list(cfg.get("mean", transform["mean"])),
            std=list(cfg.get("std", transform["std"])),
            crop_pct=float(cfg.get("crop_pct", 1.0)) if pretrained or weights else 1.0,
            interpolation=cfg.get("interpolation", "bilinear") or "bilinear",
        )
    origin = "file" if weights is not None else "pretrained" if pretrained else "random"
    return LoadedEncoder(_freeze(model), spec, sha, preset, transform, origin)


def _refuse_random_timm(name: str) -> None:
    """A timm name asked for without weights: refuse (after checking the name exists)."""
    import timm

    if not timm.is_model(name):
        create_encoder(name)  # raises the unknown-encoder error, with suggestions
    raise ParameterError(
        ("random_init", "pretrained"),
        f"are both off: {name} is a timm model without a weights file, so it would embed with random "
        "weights; ask for those explicitly, or for its published weights",
    )


def _from_checkpoint(
    spec: str, *, cifar_stem: bool, pretrained: bool, weights: str | Path | None
) -> LoadedEncoder:
    path = checkpoint_path(spec)
    if pretrained or weights is not None:
        raise ParameterError(
            "pretrained" if pretrained else "weights",
            f"does not apply to {path}: a pretraining checkpoint carries its weights",
        )
    checkpoint = load_checkpoint(path)
    info = checkpoint["encoder"]
    try:
        name, stem, in_chans = str(info["name"]), bool(info["cifar_stem"]), int(info["in_chans"])
    except (KeyError, TypeError, ValueError):
        raise ImpulsesError(f"{path}: checkpoint's 'encoder' entry lacks name/cifar_stem/in_chans") from None
    if cifar_stem and not stem:
        raise ParameterError("cifar_stem", f"is on, but the {name} of {path} was trained without it")
    with torch.random.fork_rng(devices=[]):
        model = create_encoder(name, cifar_stem=stem, in_chans=in_chans)
    try:
        model.load_state_dict(checkpoint["encoder_state"], strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise ImpulsesError(f"{path}: encoder_state does not fit {name} ({first})") from None
    return LoadedEncoder(
        _freeze(model),
        name,
        file_sha256(path),
        str(checkpoint["preset"]),
        dict(checkpoint["transform"]),
        "checkpoint",
    )
