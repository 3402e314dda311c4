"""The kNN monitor: weighted k-nearest-neighbour top-1 accuracy of frozen, L2-normalised features.

As in the instance-discrimination / DCL reference code: cosine similarities to a labelled bank, the
k most similar vote for their class with weight exp(similarity / temperature), the class with the
largest total wins. It tracks representation quality during pretraining without training anything.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn


@torch.no_grad()
def extract_features(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    *,
    amp: bool = False,
    channels_last: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised float32 features (N, D) and targets (N,) of ``(images, targets)`` batches, on ``device``."""
    was_training = model.training
    model.eval()
    features, targets = [], []
    try:
        for images, target in batches:
            images = images.to(device, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                out = model(images)
            features.append(F.normalize(out.float(), dim=1))
            targets.append(target.to(device))
    finally:
        model.train(was_training)
    return torch.cat(features), torch.cat(targets)


def knn_predict(
    query: torch.Tensor,
    bank: torch.Tensor,
    bank_targets: torch.Tensor,
    num_classes: int,
    *,
    k: int = 20,
    temperature: float = 0.1,
    chunk: int = 1024,
) -> torch.Tensor:
    """Predicted class per query row by similarity-weighted voting of its ``k`` nearest bank rows."""
    k = min(k, bank.shape[0])
    predictions = []
    for start in range(0, query.shape[0], chunk):
        sim = query[start : start + chunk] @ bank.T
        top_sim, top_idx = sim.topk(k, dim=1)
        weights = (top_sim / temperature).exp()
        votes = torch.zeros(sim.shape[0], num_classes, device=sim.device, dtype=weights.dtype)
        votes.scatter_add_(1, bank_targets[top_idx], weights)
        predictions.append(votes.argmax(dim=1))
    return torch.cat(predictions)


def knn_top1(
    query: torch.Tensor,
    query_targets: torch.Tensor,
    bank: torch.Tensor,
    bank_targets: torch.Tensor,
    *,
    k: int = 20,
    temperature: float = 0.1,
) -> float:
    """Top-1 accuracy in [0, 1] of :func:`knn_predict` on labelled queries."""
    num_classes = int(max(bank_targets.max(), query_targets.max())) + 1
    predicted = knn_predict(query, bank, bank_targets, num_classes, k=k, temperature=temperature)
    return float((predicted == query_targets).float().mean())
