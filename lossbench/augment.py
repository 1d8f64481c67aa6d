"""Differentiable augmentation for small data (DiffAugment, Zhao et al. 2020), for images in [-1, 1].

The trainer applies the same policy to real and fake batches before every critic evaluation, with
fresh random parameters per call; gradients flow through to the generator. Policies:
- "color": brightness + U(-0.5, 0.5) and contrast × U(0.5, 1.5) around the per-image mean
  (DiffAugment's saturation step does nothing on one channel and is left out);
- "translation": integer shift of up to 1/8 of the side in x and y, zero (mid-grey) padding;
- "cutout": one square of half the side, at a random centre, set to 0 (mid-grey).
Random numbers are drawn on the CPU from the `rng` passed in, so a run is reproducible on any device;
index grids and masks are built on the input's device. Translation and cutout move or zero whole
pixels exactly, in any dtype and under autocast.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lossbench.config import AUGMENTATIONS
from lossbench.errors import ConfigError

POLICIES = AUGMENTATIONS  # applied in this order


def _uniform(n: int, rng: torch.Generator, x: torch.Tensor) -> torch.Tensor:
    return torch.rand(n, 1, 1, 1, generator=rng).to(device=x.device, dtype=x.dtype)


def color(x: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    x = x + (_uniform(len(x), rng, x) - 0.5)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_uniform(len(x), rng, x) + 0.5) + mean


def translation(x: torch.Tensor, rng: torch.Generator, ratio: float = 0.125) -> torch.Tensor:
    """Output pixel (y, x) is input pixel (y - sy, x - sx), zero outside: an exact gather, in any dtype
    (also under autocast), as in DiffAugment. Draws the x shifts, then the y shifts, from `rng`."""
    n, c, h, w = x.shape
    sx, sy = (
        torch.randint(-int(s * ratio + 0.5), int(s * ratio + 0.5) + 1, (n, 1), generator=rng).to(x.device)
        for s in (w, h)
    )
    rows = torch.arange(h, device=x.device) - sy  # n×h source row of each output row
    cols = torch.arange(w, device=x.device) - sx  # n×w source column of each output column
    inside = ((rows >= 0) & (rows < h)).view(n, 1, h, 1) & ((cols >= 0) & (cols < w)).view(n, 1, 1, w)
    x = x.gather(2, rows.clamp(0, h - 1).view(n, 1, h, 1).expand(n, c, h, w))
    x = x.gather(3, cols.clamp(0, w - 1).view(n, 1, 1, w).expand(n, c, h, w))
    return x * inside.to(x.dtype)


def cutout(x: torch.Tensor, rng: torch.Generator, ratio: float = 0.5) -> torch.Tensor:
    n, _, h, w = x.shape
    size_y, size_x = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = torch.randint(0, h, (n, 1, 1), generator=rng).to(x.device)
    cx = torch.randint(0, w, (n, 1, 1), generator=rng).to(x.device)
    ys = torch.arange(h, device=x.device).view(1, h, 1) - (cy - size_y // 2)  # offsets from the first row
    xs = torch.arange(w, device=x.device).view(1, 1, w) - (cx - size_x // 2)
    inside = (ys >= 0) & (ys < size_y) & (xs >= 0) & (xs < size_x)
    return x * (~inside).unsqueeze(1).to(x.dtype)


_FUNCTIONS = {"color": color, "translation": translation, "cutout": cutout}


def check_policy(policy: Sequence[str]) -> tuple[str, ...]:
    """`policy` as a tuple; ConfigError naming an unknown entry."""
    unknown = [p for p in policy if p not in _FUNCTIONS]
    if unknown:
        raise ConfigError(f"unknown augmentation {unknown[0]!r} (known: {', '.join(POLICIES)})")
    return tuple(policy)


def diff_augment(x: torch.Tensor, policy: Sequence[str], rng: torch.Generator) -> torch.Tensor:
    """Apply the augmentations named in `policy`, in the order color, translation, cutout."""
    for name in POLICIES:
        if name in policy:
            x = _FUNCTIONS[name](x, rng)
    return x
