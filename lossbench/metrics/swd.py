"""Sliced Wasserstein distance between two image sets, on raw pixels (needs no pretrained weights).

Images are flattened to vectors of pixel values in [0, 1] (uint8 / 255). For each of K random unit
directions (Gaussian, normalised, from a torch.Generator seeded with `seed`) both sets are
projected onto the direction and the 1-D Wasserstein-1 distance between the two projections is
taken from their sorted values; the larger set is first subsampled (seeded) to the size of the
smaller one so that sorted values pair one to one. SWD is the mean over the K directions.

This is the plain pixel-space SWD, not ProGAN's Laplacian-pyramid patch variant: it is sensitive to
global intensity layout, and comparable only between runs at the same resolution and K.
"""

from __future__ import annotations

import torch


@torch.no_grad()
def sliced_wasserstein(x: torch.Tensor, y: torch.Tensor, directions: int = 128, seed: int = 0) -> float:
    """SWD between uint8 image sets `x` (N×C×H×W) and `y` (M×C×H×W) over `directions` projections."""
    gen = torch.Generator().manual_seed(seed)
    n = min(len(x), len(y))
    x, y = (s[torch.randperm(len(s), generator=gen)[:n]] if len(s) > n else s for s in (x, y))
    x, y = (s.flatten(1).double() / 255 for s in (x, y))
    theta = torch.randn(x.shape[1], directions, generator=gen, dtype=torch.float64)
    theta /= theta.norm(dim=0, keepdim=True)
    px, py = (torch.sort(s @ theta, dim=0).values for s in (x, y))
    return (px - py).abs().mean().item()
