"""Image tensors between the networks and the metrics: conversions and sampling a generator.

Conventions: the networks see float images in [-1, 1]; datasets, fakes and the metrics hold uint8
images in [0, 255], N×C×R×R. `to_uint8` and `to_float` are the one conversion each way.

A class-conditional generator (attribute `n_classes` > 0) is sampled by class counts: `class_labels`
turns counts into labels (class 0 first), `proportional_counts` spreads n over the classes as a
dataset's labels do.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from lossbench.errors import ConfigError


def is_conditional(generator: nn.Module) -> bool:
    """Whether `generator` takes class indices (G(z, y))."""
    return getattr(generator, "n_classes", 0) > 0


def class_labels(counts: Sequence[int]) -> torch.Tensor:
    """Class indices (int64) with counts[k] copies of k, in class order."""
    return torch.repeat_interleave(
        torch.arange(len(counts)), torch.as_tensor(list(counts), dtype=torch.int64)
    )


def proportional_counts(labels: torch.Tensor, n_classes: int, n: int) -> list[int]:
    """`n` split over the classes in the proportions of `labels` (largest remainders; ties to the
    lower class index)."""
    freq = np.bincount(labels.numpy(), minlength=n_classes)[:n_classes].astype(np.float64)
    share = n * freq / freq.sum()
    counts = np.floor(share).astype(int)
    order = np.argsort(-(share - counts), kind="stable")
    counts[order[: n - counts.sum()]] += 1
    return counts.tolist()


@torch.no_grad()
def generate_images(
    generator: nn.Module,
    n: int,
    seed: int,
    batch_size: int = 100,
    device: str | torch.device = "cpu",
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """`n` images of `generator` (a module with `z_dim` and `resolution`, as `models.Generator`) as a
    uint8 tensor n×1×R×R on the CPU, from z drawn with a CPU torch.Generator
    seeded with `seed` (the same z on every device and for every batch size). A conditional
    generator needs `labels` (int64 n, e.g. `class_labels(counts)`). The generator runs in
    eval mode; its previous mode is restored afterwards."""
    if is_conditional(generator) != (labels is not None):
        need = "needs class labels" if labels is None else "takes no class labels"
        raise ConfigError(f"this generator {need} (conditional: {is_conditional(generator)})")
    if labels is not None and len(labels) != n:
        raise ConfigError(f"{len(labels)} class labels for {n} images")
    z = torch.randn(n, generator.z_dim, generator=torch.Generator().manual_seed(seed))
    ys = labels.split(batch_size) if labels is not None else [None] * len(z.split(batch_size))
    was_training = generator.training
    generator.eval()
    try:
        chunks = [
            (generator(zb.to(device)) if yb is None else generator(zb.to(device), yb.to(device)))
            .float()
            .cpu()
            for zb, yb in zip(z.split(batch_size), ys, strict=True)
        ]
    finally:
        generator.train(was_training)
    images = torch.cat(chunks) if chunks else torch.empty(0, 1, generator.resolution, generator.resolution)
    return to_uint8(images)


def sample_classes(
    generator: nn.Module,
    counts: Sequence[int],
    seed: int,
    batch_size: int = 100,
    device: str | torch.device = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """counts[k] images of each class k from a conditional generator: (uint8 images, int64 labels)."""
    if not is_conditional(generator):
        raise ConfigError("sampling by class needs a class-conditional generator (train.conditional = true)")
    if len(counts) != generator.n_classes:
        raise ConfigError(f"counts for {len(counts)} classes, but the generator has {generator.n_classes}")
    labels = class_labels(counts)
    return generate_images(generator, len(labels), seed, batch_size, device, labels), labels


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] -> uint8 in [0, 255] (rounded, clamped)."""
    return ((images + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images in [0, 255] -> float32 in [-1, 1]."""
    return images.float() / 127.5 - 1
