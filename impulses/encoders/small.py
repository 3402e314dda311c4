"""A small CPU-friendly convolutional encoder for 8-32 px images: demos, tests, quick experiments.

``smallcnn``: four 3x3 conv-BN-ReLU layers (32, 64, 128, 256 channels) with two 2x2 max-pools and a
global average pool, about 390 thousand parameters; 256 features. It keeps full resolution in its
first two layers, so 8x8 digits still give a 2x2 map before pooling.

``smallcnn-pooled``: the same layers with a third max-pool right after the first layer, so 28-32 px
images (Fashion-MNIST, CIFAR) cost about 4x fewer operations: the encoder of the CPU-sized
Fashion-MNIST experiment (about 600 training images/s on one core).
"""

from __future__ import annotations

import torch
from torch import nn

from impulses.encoders.registry import register_encoder


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class SmallCNN(nn.Module):
    """Images (B, in_chans, H, W) with H, W >= 4 -> features (B, num_features)."""

    def __init__(
        self,
        in_chans: int = 3,
        widths: tuple[int, int, int, int] = (32, 64, 128, 256),
        *,
        pool_first: bool = False,
    ) -> None:
        super().__init__()
        w1, w2, w3, w4 = widths
        first = (
            [_conv_bn_relu(in_chans, w1), nn.MaxPool2d(2)] if pool_first else [_conv_bn_relu(in_chans, w1)]
        )
        self.features = nn.Sequential(
            *first,
            _conv_bn_relu(w1, w2),
            nn.MaxPool2d(2),
            _conv_bn_relu(w2, w3),
            nn.MaxPool2d(2),
            _conv_bn_relu(w3, w4),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.in_chans = in_chans
        self.num_features = w4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features (N, num_features) of the images ``x``."""
        return self.features(x)


@register_encoder("smallcnn", preset="small-gray")
def smallcnn(*, in_chans: int = 3, cifar_stem: bool = False) -> SmallCNN:
    """The small encoder; ``cifar_stem`` is accepted and ignored (it has no downsampling stem)."""
    return SmallCNN(in_chans=in_chans)


@register_encoder("smallcnn-pooled", preset="small-gray")
def smallcnn_pooled(*, in_chans: int = 3, cifar_stem: bool = False) -> SmallCNN:
    """The small encoder with a max-pool after its first layer, for 28-32 px images on a CPU."""
    return SmallCNN(in_chans=in_chans, pool_first=True)
