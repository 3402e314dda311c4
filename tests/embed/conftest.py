"""Shared fixtures of the embedding-cache tests: a tiny deterministic encoder, its transform, image folders."""

from __future__ import annotations

import pytest
import torch
from torch import nn

TRANSFORM = {"image_size": 8, "in_chans": 3, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}


class TinyEncoder(nn.Module):
    """conv-BN-ReLU, global average pool: (B, 3, H, W) -> (B, 6), fixed weights from a seed."""

    num_features = 6

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv2d(3, 6, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(6)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=gen))
            self.bn.running_mean.copy_(torch.randn(6, generator=gen) * 0.1)
            self.bn.running_var.copy_(torch.rand(6, generator=gen) + 0.5)
            self.bn.weight.copy_(torch.rand(6, generator=gen) + 0.5)
            self.bn.bias.copy_(torch.randn(6, generator=gen) * 0.1)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x))).mean(dim=(2, 3))


@pytest.fixture
def tiny_encoder() -> TinyEncoder:
    return TinyEncoder()


@pytest.fixture
def transform():
    from impulses.embed.extract import ConfigTransform

    return ConfigTransform(TRANSFORM)
