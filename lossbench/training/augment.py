"""Differentiable augmentation for small data (DiffAugment, Zhao et al. 2020), for images in [-1, 1].

The trainer applies the same policy to real and fake batches before every critic evaluation, with
fresh random parameters per call; gradients flow through to the generator. Policies:
- "color": brightness + U(-0.5, 0.5) and contrast × U(0.5, 1.5) around the per-image mean
  (DiffAugment's saturation step does nothing on one channel and is left out);
- "translation": integer shift of up to 1/8 of the side in x and y, zero (mid-grey) padding;
- "cutout": one square of half the side, at a random centre, set to 0 (mid-grey).
Random numbers are drawn on the CPU (`lossbench.training.randomness`), so a run is reproducible on any device:
`rng` is a CPU torch.Generator (drawn from here, in the order of `draws`), or a `Draws` that already
holds them on the device (the trainer's one copy per step). Index grids and masks are built on the
input's device. Translation and cutout move or zero whole pixels exactly, in any dtype and under
autocast.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lossbench.config import AUGMENTATIONS
from lossbench.training.randomness import Draw, Draws

POLICIES = AUGMENTATIONS  # applied in this order
TRANSLATION_RATIO = 0.125  # largest shift, as a fraction of the side
CUTOUT_RATIO = 0.5  # side of the square, as a fraction of the image side


def _color_draws(n: int, h: int, w: int) -> list[Draw]:
    return [Draw("rand", (n, 1, 1, 1))] * 2  # brightness, then contrast


def _translation_draws(n: int, h: int, w: int) -> list[Draw]:
    return [
        Draw("randint", (n, 1), -int(s * TRANSLATION_RATIO + 0.5), int(s * TRANSLATION_RATIO + 0.5) + 1)
        for s in (w, h)
    ]


def _cutout_draws(n: int, h: int, w: int) -> list[Draw]:
    return [Draw("randint", (n, 1, 1), 0, h), Draw("randint", (n, 1, 1), 0, w)]


def _taken(rng: torch.Generator | Draws, plan: list[Draw], x: torch.Tensor) -> list[torch.Tensor]:
    """The values of `plan` on x's device (float32), from `rng` drawn now or from the `Draws`."""
    draws = rng if isinstance(rng, Draws) else Draws(plan, rng, x.device)
    return [draws.take(d) for d in plan]


def color(x: torch.Tensor, rng: torch.Generator | Draws) -> torch.Tensor:
    n, _, h, w = x.shape
    brightness, contrast = (u.to(x.dtype) for u in _taken(rng, _color_draws(n, h, w), x))
    x = x + (brightness - 0.5)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (contrast + 0.5) + mean


def translation(x: torch.Tensor, rng: torch.Generator | Draws) -> torch.Tensor:
    """Output pixel (y, x) is input pixel (y - sy, x - sx), zero outside: an exact gather, in any dtype
    (also under autocast), as in DiffAugment. Draws the x shifts, then the y shifts."""
    n, c, h, w = x.shape
    sx, sy = (s.long() for s in _taken(rng, _translation_draws(n, h, w), x))
    rows = torch.arange(h, device=x.device) - sy  # n×h source row of each output row
    cols = torch.arange(w, device=x.device) - sx  # n×w source column of each output column
    inside = ((rows >= 0) & (rows < h)).view(n, 1, h, 1) & ((cols >= 0) & (cols < w)).view(n, 1, 1, w)
    x = x.gather(2, rows.clamp(0, h - 1).view(n, 1, h, 1).expand(n, c, h, w))
    x = x.gather(3, cols.clamp(0, w - 1).view(n, 1, 1, w).expand(n, c, h, w))
    return x * inside.to(x.dtype)


def cutout(x: torch.Tensor, rng: torch.Generator | Draws) -> torch.Tensor:
    n, _, h, w = x.shape
    size_y, size_x = int(h * CUTOUT_RATIO + 0.5), int(w * CUTOUT_RATIO + 0.5)
    cy, cx = (c.long() for c in _taken(rng, _cutout_draws(n, h, w), x))
    ys = torch.arange(h, device=x.device).view(1, h, 1) - (cy - size_y // 2)  # offsets from the first row
    xs = torch.arange(w, device=x.device).view(1, 1, w) - (cx - size_x // 2)
    inside = (ys >= 0) & (ys < size_y) & (xs >= 0) & (xs < size_x)
    return x * (~inside).unsqueeze(1).to(x.dtype)


_FUNCTIONS = {"color": color, "translation": translation, "cutout": cutout}
_DRAWS = {"color": _color_draws, "translation": _translation_draws, "cutout": _cutout_draws}


def draws(policy: Sequence[str], shape: Sequence[int]) -> list[Draw]:
    """The random draws of one `diff_augment(x, policy, ...)` on a batch of `shape` (N×C×H×W), in order."""
    n, h, w = shape[0], shape[-2], shape[-1]
    return [d for name in POLICIES if name in policy for d in _DRAWS[name](n, h, w)]


def diff_augment(x: torch.Tensor, policy: Sequence[str], rng: torch.Generator | Draws) -> torch.Tensor:
    """Apply the augmentations named in `policy`, in the order color, translation, cutout."""
    if isinstance(rng, torch.Generator):
        rng = Draws(draws(policy, x.shape), rng, x.device)
    for name in POLICIES:
        if name in policy:
            x = _FUNCTIONS[name](x, rng)
    return x
