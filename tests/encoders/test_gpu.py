"""CUDA paths of pretraining (bf16 autocast, channels_last); skipped where no CUDA device is present."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from impulses.encoders.losses import debiased_contrastive_loss
from impulses.encoders.pretrain import ContrastiveModel, PretrainConfig, contrastive_step, pretrain
from impulses.encoders.projector import Projector
from impulses.encoders.registry import create_encoder
from tests.encoders.conftest import DigitsSource

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_bf16_channels_last_step_matches_float32_closely() -> None:
    device = torch.device("cuda")
    torch.manual_seed(0)
    encoder = create_encoder("resnet18", cifar_stem=True)
    model = ContrastiveModel(encoder, Projector(encoder.num_features)).to(device)
    x1, x2 = torch.randn(32, 3, 32, 32, device=device), torch.randn(32, 3, 32, 32, device=device)
    with torch.no_grad():
        exact = debiased_contrastive_loss(*model(torch.cat([x1, x2])).chunk(2), 0.1, 0.1)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            mixed = debiased_contrastive_loss(*model(torch.cat([x1, x2])).chunk(2), 0.1, 0.1)
    assert torch.isfinite(mixed) and abs(mixed.item() - exact.item()) < 0.05 * exact.item()
    model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-4)
    loss = contrastive_step(
        model,
        x1,
        x2,
        optimizer,
        lambda a, b: debiased_contrastive_loss(a, b, 0.1, 0.1),
        amp=True,
        channels_last=True,
    )
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_pretrain_on_cuda(tmp_path: Path) -> None:
    config = PretrainConfig(data="digits[:256]", encoder="smallcnn", epochs=1, batch_size=64, device="cuda")
    history = pretrain(DigitsSource(limit=256), config, tmp_path, progress=False).history
    assert history[-1]["loss"] > 0 and history[-1]["knn_top1"] is not None


def test_batched_views_on_cuda_equal_the_cpu_views() -> None:
    """Parameters are drawn on the CPU: the device only changes float rounding."""
    from impulses.encoders.augment import batch_views

    views = batch_views("imagenet", image_size=32)
    images = torch.randint(
        0, 256, (64, 32, 32, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    cpu1, cpu2 = views(images, torch.Generator().manual_seed(1))
    gpu1, gpu2 = views(images.pin_memory().to("cuda", non_blocking=True), torch.Generator().manual_seed(1))
    torch.testing.assert_close(gpu1.cpu(), cpu1, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(gpu2.cpu(), cpu2, atol=1e-4, rtol=1e-4)


def test_pretrain_on_cuda_compiled(tmp_path: Path) -> None:
    config = PretrainConfig(
        data="digits[:256]", encoder="smallcnn", epochs=1, batch_size=64, device="cuda", compile=True
    )
    history = pretrain(DigitsSource(limit=256), config, tmp_path, progress=False).history
    assert history[-1]["loss"] > 0 and history[-1]["knn_top1"] is not None
