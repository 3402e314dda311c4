"""Baselines trained end to end on raw images, without pretraining: an encoder plus a linear head.

The paper compares ImPULSeS with imbnnPU trained end to end from random initialisation (its
"imbnnPU" row) and with the supervised PN upper bound without pretraining. Both are the same loop:
a randomly initialised encoder of the same architecture, a linear head D→1, Adam, and one of the
objectives of :mod:`impulses.pu.losses` on the logits (the PU objectives' gradient is the reference
algorithm's update, so autograd through the encoder reproduces it).

Images are turned into tensors once (the encoder's deterministic test transform, no augmentation),
so an epoch is only forward/backward passes. Batches are stratified by default: each holds its share
of labeled positives, so every batch carries PU information.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from impulses.encoders import create_encoder
from impulses.errors import ImpulsesError
from impulses.pu.losses import get_loss


@dataclass
class EndToEndConfig:
    """Hyperparameters of an end-to-end run (the heads' paper defaults where they apply)."""

    encoder: str = "smallcnn"
    cifar_stem: bool = False
    loss: str = "imbnnpu"
    prior: float | None = None
    prior_prime: float = 0.5
    epochs: int = 20
    batch_size: int = 256
    lr: float = 3e-4
    seed: int = 0
    stratified: bool = True


class EncoderWithHead(nn.Module):
    """Images -> one logit per image."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.num_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One logit per image: the head on the encoder's features."""
        return self.head(self.encoder(x)).squeeze(1)


def images_to_tensor(
    source: Sequence[Any], rows: Sequence[int], transform: Callable[[Any], torch.Tensor]
) -> torch.Tensor:
    """The transformed images ``source[r][0]`` for ``rows``, stacked into one (N, C, H, W) tensor."""
    first = transform(source[rows[0]][0])
    out = torch.empty((len(rows), *first.shape), dtype=first.dtype)
    out[0] = first
    for i, row in enumerate(rows[1:], start=1):
        out[i] = transform(source[row][0])
    return out


def stratified_batches(labels: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """One epoch of shuffled batches, each holding its proportional share (at least one) of label-1 rows."""
    pos = rng.permutation(np.flatnonzero(labels == 1))
    neg = rng.permutation(np.flatnonzero(labels != 1))
    n_batches = max(1, math.ceil(len(labels) / batch_size))
    n_batches = min(n_batches, len(pos)) if len(pos) else n_batches
    return [
        rng.permutation(np.concatenate([p, u]))
        for p, u in zip(np.array_split(pos, n_batches), np.array_split(neg, n_batches), strict=True)
    ]


def train_end_to_end(
    images: torch.Tensor,
    labels: np.ndarray,
    config: EndToEndConfig,
    *,
    device: torch.device | str = "cpu",
    on_epoch: Callable[[int, float], None] | None = None,
) -> EncoderWithHead:
    """Train a fresh encoder + head on ``images`` with ``labels`` (s for PU losses, y for ``pn``).

    ``on_epoch(epoch, mean_objective)`` is called after every epoch (progress, curves).
    """
    spec = get_loss(config.loss)
    labels = np.asarray(labels).astype(np.int64).reshape(-1)
    if len(labels) != len(images):
        raise ImpulsesError(f"{len(images)} images but {len(labels)} labels")
    if not (labels == 1).any():
        raise ImpulsesError(f"end-to-end {config.loss}: no positive label among {len(labels)} rows")
    if spec.uses_prior and config.prior is None:
        raise ImpulsesError(f"end-to-end {config.loss} needs a prior")
    device = torch.device(device)
    torch.manual_seed(config.seed)
    encoder = create_encoder(config.encoder, cifar_stem=config.cifar_stem, in_chans=int(images.shape[1]))
    model = EncoderWithHead(encoder).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    kwargs: dict[str, Any] = {}
    if spec.uses_prior:
        kwargs = {"prior": config.prior}
        if config.loss == "imbnnpu":
            kwargs["prior_prime"] = config.prior_prime
    elif config.loss in ("wbce", "pn"):
        # the whole training set's |U|/|P| (or |N|/|P|), not the batch's: a fixed, comparable weighting
        n_pos = int((labels == 1).sum())
        kwargs = {"pos_weight": (len(labels) - n_pos) / n_pos}
    loss_fn = spec.fn
    rng = np.random.default_rng(config.seed)
    y_all = torch.from_numpy(labels)
    model.train()
    for epoch in range(1, config.epochs + 1):
        if config.stratified:
            batches = stratified_batches(labels, config.batch_size, rng)
        else:
            batches = np.array_split(
                rng.permutation(len(labels)), max(1, math.ceil(len(labels) / config.batch_size))
            )
        total, count = 0.0, 0
        for batch in batches:
            if len(batch) < 2:  # BatchNorm needs two rows
                continue
            index = torch.from_numpy(batch)
            x = images[index].to(device, non_blocking=True)
            y = y_all[index].to(device)
            objective = loss_fn(model(x), y, **kwargs)
            optimizer.zero_grad(set_to_none=True)
            objective.backward()
            optimizer.step()
            total += float(objective.detach())
            count += 1
        if on_epoch is not None:
            on_epoch(epoch, total / max(count, 1))
    return model.eval()


@torch.inference_mode()
def predict_logits(
    model: nn.Module, images: torch.Tensor, *, device: torch.device | str = "cpu", batch_size: int = 1024
) -> np.ndarray:
    """Logits of ``model`` on ``images`` in eval mode, batch by batch."""
    model.eval()
    out = [
        model(images[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(images), batch_size)
    ]
    return torch.cat(out).numpy()


def run_end_to_end(
    train_images: torch.Tensor,
    train_labels: np.ndarray,
    test_images: torch.Tensor,
    config: EndToEndConfig,
    *,
    device: torch.device | str = "cpu",
    on_epoch: Callable[[int, float], None] | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Train, then score the test images: (test logits, a record of the config and the seconds taken)."""
    start = time.perf_counter()
    model = train_end_to_end(train_images, train_labels, config, device=device, on_epoch=on_epoch)
    logits = predict_logits(model, test_images, device=device)
    return logits, {**asdict(config), "seconds": time.perf_counter() - start}
