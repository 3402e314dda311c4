"""The projector follows the encoder's width: D -> D -> out_dim with a ReLU."""

from __future__ import annotations

import torch
from torch import nn

from impulses.encoders.projector import Projector


def test_paper_dimensions_and_relu() -> None:
    head = Projector(2048)
    linears = [m for m in head if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(2048, 2048), (2048, 128)]
    assert isinstance(head[1], nn.ReLU)
    assert head(torch.randn(3, 2048)).shape == (3, 128)


def test_follows_the_encoder_width() -> None:
    head = Projector(256, out_dim=64)
    assert (head.in_dim, head.hidden, head.out_dim) == (256, 256, 64)
    # the hidden ReLU: negating the first layer's output cannot leak through
    x = torch.randn(5, 256)
    with torch.no_grad():
        hidden = head[1](head[0](x))
    assert (hidden >= 0).all()
