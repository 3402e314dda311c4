"""Weighted kNN monitor against a brute-force re-implementation and on separable data."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from impulses.encoders.knn import extract_features, knn_predict, knn_top1


def brute_force(query: np.ndarray, bank: np.ndarray, labels: np.ndarray, k: int, t: float, classes: int):
    predictions = []
    for q in query:
        sims = bank @ q
        order = np.argsort(-sims, kind="stable")[:k]
        votes = np.zeros(classes)
        for j in order:
            votes[labels[j]] += np.exp(sims[j] / t)
        predictions.append(int(np.argmax(votes)))
    return np.array(predictions)


def test_matches_brute_force() -> None:
    g = torch.Generator().manual_seed(0)
    bank = F.normalize(torch.randn(200, 8, generator=g, dtype=torch.float64), dim=1)
    labels = torch.randint(0, 4, (200,), generator=g)
    query = F.normalize(torch.randn(50, 8, generator=g, dtype=torch.float64), dim=1)
    for k, t in ((1, 0.1), (7, 0.1), (25, 0.5)):
        got = knn_predict(query, bank, labels, 4, k=k, temperature=t, chunk=16)
        expected = brute_force(query.numpy(), bank.numpy(), labels.numpy(), k, t, 4)
        np.testing.assert_array_equal(got.numpy(), expected)


def test_separable_clusters_and_k_larger_than_bank() -> None:
    centres = torch.eye(3)
    g = torch.Generator().manual_seed(1)
    bank = F.normalize(centres.repeat_interleave(10, 0) + 0.05 * torch.randn(30, 3, generator=g), dim=1)
    labels = torch.arange(3).repeat_interleave(10)
    query = F.normalize(centres + 0.05 * torch.randn(3, 3, generator=g), dim=1)
    assert knn_top1(query, torch.arange(3), bank, labels, k=5) == 1.0
    assert knn_top1(query, torch.tensor([1, 2, 0]), bank, labels, k=5) == 0.0
    assert knn_top1(query, torch.arange(3), bank, labels, k=500) == 1.0  # k is capped at the bank size


def test_extract_features_normalises_and_restores_mode() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.Dropout(0.5))
    model.train()
    batches = [(torch.randn(5, 1, 2, 2), torch.arange(5)), (torch.randn(2, 1, 2, 2), torch.arange(2))]
    features, targets = extract_features(model, batches, torch.device("cpu"))
    assert features.shape == (7, 3) and targets.tolist() == [0, 1, 2, 3, 4, 0, 1]
    torch.testing.assert_close(features.norm(dim=1), torch.ones(7))
    again, _ = extract_features(model, batches, torch.device("cpu"))
    assert torch.equal(features, again)  # eval mode inside: dropout off
    assert model.training
