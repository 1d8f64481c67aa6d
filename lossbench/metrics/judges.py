"""The classifiers that judge synthetic images (downstream utility), built by name, and the classic
augmentation they train with.

- "resnet" (the default): a ResNet of four stages of one basic block each (`width`, 2, 4 and 8 ×
  `width` channels; the stem and stages 2-4 halve the side), global average pooling, a linear head.
  At `width` 32: 1.2 M parameters.
- "cnn3": three strided 3×3 convs (BatchNorm, ReLU), global average pooling, a linear head. Fast
  and weak: a named option for smoke runs, never the judge of a reported gain.

`classic_augment` is what papers on synthetic breast-ultrasound augmentation compare against: a
horizontal flip (p 0.5), a random zoom (scale U(0.9, 1.2)) with a shift of up to 6 % of the side,
brightness + U(-0.1, 0.1) and contrast × U(0.8, 1.2) around the image mean, on images in [-1, 1].
Its random numbers come from a CPU generator, so a run is reproducible on any device.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from lossbench.config import UTILITY_CLASSIFIERS
from lossbench.errors import ConfigError

ZOOM = (0.9, 1.2)  # scale range of the random zoom (> 1 zooms in)
SHIFT = 0.06  # largest shift, as a fraction of the side
BRIGHTNESS = 0.1  # largest brightness offset, in [-1, 1] units (half of the [0, 1] range's)
CONTRAST = (0.8, 1.2)  # contrast factor range


class BasicBlock(nn.Module):
    """Two 3×3 convs with BatchNorm and a residual connection (a 1×1 conv where the shape changes)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False),
            nn.BatchNorm2d(c_out),
        )
        self.skip = (
            nn.Identity()
            if stride == 1 and c_in == c_out
            else nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.skip(x))


def resnet(n_classes: int, width: int) -> nn.Module:
    chans = (width, 2 * width, 4 * width, 8 * width)
    stem = [nn.Conv2d(1, width, 3, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
    stages = [
        BasicBlock(c_in, c_out, 1 if i == 0 else 2)
        for i, (c_in, c_out) in enumerate(zip((width, *chans[:-1]), chans, strict=True))
    ]
    return nn.Sequential(
        *stem, *stages, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(chans[-1], n_classes)
    )


def cnn3(n_classes: int, width: int) -> nn.Module:
    chans = (1, width, 2 * width, 4 * width)
    layers: list[nn.Module] = []
    for c_in, c_out in zip(chans, chans[1:], strict=False):
        layers += [nn.Conv2d(c_in, c_out, 3, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * width, n_classes))


JUDGES: dict[str, Callable[[int, int], nn.Module]] = {"resnet": resnet, "cnn3": cnn3}
assert tuple(JUDGES) == UTILITY_CLASSIFIERS


def check_judge(name: str) -> str:
    """`name` if it names a judge in JUDGES; ConfigError, in one line, otherwise."""
    if name not in JUDGES:
        raise ConfigError(f"unknown utility classifier {name!r} (known: {', '.join(JUDGES)})")
    return name


def build_judge(name: str, n_classes: int, width: int) -> nn.Module:
    """The classifier `name` (see JUDGES) for `n_classes` classes, `width` channels first."""
    return JUDGES[check_judge(name)](n_classes, width)


def classic_augment(x: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    """`x` (float N×1×R×R in [-1, 1]) flipped, zoomed, shifted and jittered as the module docstring says."""
    n = len(x)
    u = torch.rand(n, 6, generator=rng).to(x.device)
    flip = torch.where(u[:, 0] < 0.5, -1.0, 1.0)
    inverse_scale = 1 / (ZOOM[0] + (ZOOM[1] - ZOOM[0]) * u[:, 1])
    theta = torch.zeros(n, 2, 3, device=x.device)
    theta[:, 0, 0], theta[:, 1, 1] = flip * inverse_scale, inverse_scale
    theta[:, :, 2] = (2 * u[:, 2:4] - 1) * 2 * SHIFT  # grid units: the side spans 2
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    mean = x.mean((1, 2, 3), keepdim=True)
    contrast = CONTRAST[0] + (CONTRAST[1] - CONTRAST[0]) * u[:, 4].view(n, 1, 1, 1)
    brightness = BRIGHTNESS * (2 * u[:, 5] - 1).view(n, 1, 1, 1)
    return ((x - mean) * contrast + mean + brightness).clamp(-1, 1)
