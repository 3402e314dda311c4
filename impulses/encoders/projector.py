"""The projection head used only during contrastive pretraining and discarded afterwards."""

from __future__ import annotations

from torch import nn


class Projector(nn.Sequential):
    """``Linear(D, hidden) -> ReLU -> Linear(hidden, out_dim)``; the paper's 2048 -> 2048 -> 128 for ResNet-50.

    ``hidden`` defaults to the encoder's feature dimension D, so the head follows the encoder.
    """

    def __init__(self, in_dim: int, out_dim: int = 128, hidden: int | None = None) -> None:
        hidden = in_dim if hidden is None else hidden
        super().__init__(nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim))
        self.in_dim, self.hidden, self.out_dim = in_dim, hidden, out_dim
