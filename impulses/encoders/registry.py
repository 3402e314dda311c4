"""Encoder registry: our own small encoders by name, every timm model by name, one ``create_encoder``.

Modelled on timm's registry: ``@register_encoder("name")`` adds a factory, ``create_encoder`` builds a
module mapping images (B, C, H, W) to features (B, num_features) and exposing ``num_features``, and
``list_encoders`` lists names with shell-style wildcards. Names not registered here go to
``timm.create_model(name, num_classes=0)`` (the classifier removed, so the output is the pooled feature).
"""

from __future__ import annotations

import difflib
import fnmatch
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from impulses.errors import ParameterError

EncoderFactory = Callable[..., nn.Module]


@dataclass(frozen=True)
class RegisteredEncoder:
    """A factory of ours plus the augmentation preset its inputs are meant for."""

    name: str
    factory: EncoderFactory
    preset: str


_REGISTRY: dict[str, RegisteredEncoder] = {}


def register_encoder(name: str, *, preset: str = "cifar") -> Callable[[EncoderFactory], EncoderFactory]:
    """Decorator registering ``factory(*, in_chans=3, cifar_stem=False) -> nn.Module`` under ``name``.

    ``preset`` is the augmentation preset (see :mod:`impulses.encoders.augment`) the encoder expects
    when it is loaded by name, without a pretraining checkpoint that records one.
    """

    def decorate(factory: EncoderFactory) -> EncoderFactory:
        if name in _REGISTRY:
            raise ValueError(f"encoder {name!r} is already registered")
        _REGISTRY[name] = RegisteredEncoder(name, factory, preset)
        return factory

    return decorate


def registered(name: str) -> RegisteredEncoder | None:
    """Our registry entry for ``name``, or None when the name is (possibly) a timm model."""
    _load_builtin()
    return _REGISTRY.get(name)


def list_encoders(pattern: str = "*") -> list[str]:
    """Names matching ``pattern`` (fnmatch wildcards): ours first, then timm's, each sorted."""
    import timm

    _load_builtin()
    ours = sorted(name for name in _REGISTRY if fnmatch.fnmatchcase(name, pattern))
    return ours + [name for name in timm.list_models(pattern) if name not in _REGISTRY]


def create_encoder(
    name: str,
    *,
    cifar_stem: bool = False,
    pretrained: bool = False,
    weights: str | Path | None = None,
    in_chans: int = 3,
) -> nn.Module:
    """A feature extractor ``images (B, in_chans, H, W) -> (B, num_features)``.

    ``cifar_stem`` swaps a ResNet's 7x7 stride-2 ``conv1`` for a 3x3 stride-1 convolution and drops the
    max-pool, so 8-32 px images keep their resolution. ``pretrained`` asks timm for its published
    weights: from the local cache when they are there, else downloaded; offline (``HF_HUB_OFFLINE``
    set, or the host unreachable) a missing download fails at once. ``weights`` loads a local state
    dict strictly (after the stem change), see :func:`load_weights`.

    Raises:
        ParameterError: An unknown name, published weights that cannot be had, an option or a
            weights file the model cannot take (the parameter is named).
    """
    entry = registered(name)
    if entry is not None:
        if pretrained:
            raise ParameterError(
                "pretrained",
                f"is not available for {name}: it has no published weights (give a weights file)",
            )
        model = entry.factory(in_chans=in_chans, cifar_stem=cifar_stem)
    else:
        model = _create_timm(name, pretrained=pretrained, in_chans=in_chans)
        if cifar_stem:
            apply_cifar_stem(model, name)
    if not hasattr(model, "num_features"):
        raise ParameterError("encoder", f"{name}: the model does not expose num_features")
    if weights is not None:
        load_weights(model, weights, name=name)
    return model


def _create_timm(name: str, *, pretrained: bool, in_chans: int) -> nn.Module:
    import timm

    if not timm.is_model(name):
        close = difflib.get_close_matches(name, list_encoders(), n=5, cutoff=0.75)
        hint = f" (similar: {', '.join(close)})" if close else " (see `list_encoders('*pattern*')`)"
        raise ParameterError("encoder", f"{name!r} is not a known encoder{hint}")
    overlay = None
    if pretrained:
        cached = cached_weights(name)
        if cached is not None:  # load the cached file itself: no network round trip, no retries
            overlay = {"file": cached}
        else:
            reason = offline_reason(name)
            if reason:
                raise ParameterError(
                    "pretrained",
                    f"{name}: its published weights are not in the local cache and {reason}; "
                    "download them where there is network access, or give a local weights file",
                )
    try:
        return timm.create_model(
            name, pretrained=pretrained, num_classes=0, in_chans=in_chans, pretrained_cfg_overlay=overlay
        )
    except (OSError, RuntimeError, ValueError) as err:
        if pretrained:
            raise ParameterError(
                "pretrained",
                f"{name}: could not get its published weights ({err}); "
                "download them where there is network access, or give a local weights file",
            ) from None
        raise


def _pretrained_cfg(name: str) -> Any:
    from timm.models import get_pretrained_cfg

    try:
        return get_pretrained_cfg(name)
    except (RuntimeError, ValueError):
        return None


def cached_weights(name: str) -> str | None:
    """The local file holding timm's published weights for ``name``, when it is already cached.

    Looks where timm would download them: the Hugging Face hub cache (``model.safetensors`` or
    ``pytorch_model.bin``, or the configured file name) and timm's URL cache.
    """
    cfg = _pretrained_cfg(name)
    if cfg is None:
        return None
    if cfg.file and Path(cfg.file).is_file():
        return str(cfg.file)
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        repo, _, revision = cfg.hf_hub_id.partition("@")
        names = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]
        for filename in names:
            found = try_to_load_from_cache(repo, filename, revision=revision or None)
            if isinstance(found, str):
                return found
    if cfg.url:
        from timm.models._hub import get_cache_dir

        local = Path(get_cache_dir()) / os.path.basename(cfg.url.split("?")[0])
        if local.is_file():
            return str(local)
    return None


def _truthy(value: str | None) -> bool:
    return (value or "").strip().upper() in ("1", "ON", "YES", "TRUE")


def offline_reason(name: str, *, timeout: float = 1.5) -> str:
    """Why ``name``'s published weights cannot be downloaded now ("" when they can be tried).

    ``HF_HUB_OFFLINE`` set means offline; otherwise the download host must accept a connection
    within ``timeout`` seconds (checked in a thread, so a hanging name lookup cannot stall us).
    """
    if _truthy(os.environ.get("HF_HUB_OFFLINE")):
        return "HF_HUB_OFFLINE is set"
    cfg = _pretrained_cfg(name)
    if cfg is None:
        return ""
    if cfg.hf_hub_id:
        from urllib.parse import urlparse

        host = (
            urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co").hostname or "huggingface.co"
        )
    elif cfg.url:
        from urllib.parse import urlparse

        host = urlparse(cfg.url).hostname or ""
    else:
        return ""
    return "" if _reachable(host, timeout) else f"{host} cannot be reached"


def _reachable(host: str, timeout: float) -> bool:
    """True when a TCP connection to ``host``:443 opens within ``timeout`` seconds."""
    ok: list[bool] = []

    def connect() -> None:
        try:
            socket.create_connection((host, 443), timeout=timeout).close()
            ok.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(ok)


def apply_cifar_stem(model: nn.Module, name: str = "model") -> nn.Module:
    """Replace ``conv1`` by a 3x3 stride-1 pad-1 convolution and ``maxpool`` by Identity (in place)."""
    conv = getattr(model, "conv1", None)
    if not isinstance(conv, nn.Conv2d) or not hasattr(model, "maxpool"):
        raise ParameterError(
            "cifar_stem",
            f"does not apply to {name}: it has no single conv1 + maxpool stem (use a ResNet such as resnet18)",
        )
    model.conv1 = nn.Conv2d(
        conv.in_channels, conv.out_channels, kernel_size=3, stride=1, padding=1, bias=False
    )
    model.maxpool = nn.Identity()
    return model


def load_weights(model: nn.Module, weights: str | Path, *, name: str = "model") -> None:
    """Load a local state dict into ``model`` strictly; any mismatch is a one-line ParameterError.

    Accepted: a plain state dict, a dict holding one under ``state_dict``/``model``/``encoder_state``
    (the last is an ``impulses pretrain`` checkpoint), or a ``.safetensors`` file. Keys of the
    model's classifier (timm's ``pretrained_cfg["classifier"]``, e.g. ``fc``), which the feature
    extractor does not have, are dropped; every other key must match in name and shape.
    """
    path = Path(weights)
    if not path.is_file():
        raise ParameterError("weights", f"{path}: no such file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several unrelated types for unreadable files
        raise ParameterError(
            "weights", f"{path}: not a readable state dict ({type(err).__name__}: {err})"
        ) from None
    for key in ("encoder_state", "state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ParameterError("weights", f"{path}: not a state dict of tensors")
    classifier = getattr(model, "pretrained_cfg", {}).get("classifier")
    if classifier:
        prefixes = (classifier,) if isinstance(classifier, str) else tuple(classifier)
        state = {k: v for k, v in state.items() if not any(k.startswith(p + ".") for p in prefixes)}
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong_shape = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong_shape:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape)):
            if keys:
                more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
                parts.append(f"{label}: {', '.join(keys[:3])}{more}")
        raise ParameterError("weights", f"{path} does not fit {name} ({'; '.join(parts)})")
    model.load_state_dict(state, strict=True)


def _load_builtin() -> None:
    """Import the modules whose decorators register our own encoders."""
    from impulses.encoders import small  # noqa: F401


def describe_encoders(pattern: str = "*") -> list[dict[str, Any]]:
    """Every encoder matching ``pattern`` (fnmatch wildcards), ours first, each as a dict (``impulses encoders``).

    Keys: ``name``; ``source`` (``"impulses"`` or ``"timm"``); ``pretrained`` (whether published
    weights exist: timm's pretrained tags, never ours); ``weights`` (the tagged names to pass with
    ``pretrained=True``, e.g. ``resnet18.a1_in1k``). A pattern with a tag (``resnet18.tv*``) lists
    the architectures with a matching tag. Reads timm's registry only: no network.

    Intended CLI: ``impulses encoders [PATTERN] [--pretrained-only] [--json]``.

    Args:
        pattern: Shell-style wildcards over encoder names (case-sensitive, as timm's).

    Returns:
        One dict per encoder, ours sorted by name, then timm's sorted by name.
    """
    import timm

    _load_builtin()
    ours = [
        {"name": name, "source": "impulses", "pretrained": False, "weights": []}
        for name in sorted(_REGISTRY)
        if fnmatch.fnmatchcase(name, pattern)
    ]
    tagged: dict[str, list[str]] = {}
    for name in timm.list_models(pattern, pretrained=True):
        tagged.setdefault(name.split(".", 1)[0], []).append(name)
    archs = set(timm.list_models(pattern)) | set(tagged)
    theirs = [
        {"name": arch, "source": "timm", "pretrained": arch in tagged, "weights": tagged.get(arch, [])}
        for arch in sorted(archs - set(_REGISTRY))
    ]
    return ours + theirs
