"""Image tensors between the networks and the metrics: conversions and sampling a generator.

Conventions: the networks see float images in [-1, 1]; datasets, fakes and the metrics hold uint8
images in [0, 255], N×C×R×R. `to_uint8` and `to_float` are the one conversion each way.
"""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def generate_images(
    generator: nn.Module, n: int, seed: int, batch_size: int = 100, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """`n` images of `generator` (a module with `z_dim` and `resolution`, as `models.Generator`) as a
    uint8 tensor n×1×R×R on the CPU, from z drawn with a CPU torch.Generator
    seeded with `seed` (the same z on every device and for every batch size). The generator runs in
    eval mode; its previous mode is restored afterwards."""
    z = torch.randn(n, generator.z_dim, generator=torch.Generator().manual_seed(seed))
    was_training = generator.training
    generator.eval()
    try:
        chunks = [generator(zb.to(device)).float().cpu() for zb in z.split(batch_size)]
    finally:
        generator.train(was_training)
    images = torch.cat(chunks) if chunks else torch.empty(0, 1, generator.resolution, generator.resolution)
    return to_uint8(images)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] -> uint8 in [0, 255] (rounded, clamped)."""
    return ((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images in [0, 255] -> float32 in [-1, 1]."""
    return images.float() / 127.5 - 1
