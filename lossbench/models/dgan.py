"""DGAN-WP-TL's generator and critic, as lossbench reads the paper (see docs/training.md).

- `Generator`: z (N×z_dim, ~N(0, I)) -> 4×4 transposed conv -> (transposed conv 4×4 stride 2,
  BatchNorm, ReLU) up to R×R -> 3×3 conv to one channel -> tanh, so images are in [-1, 1].
- `Critic`: (conv 4×4 stride 2, [norm], LeakyReLU(0.2)) down to 4×4 -> 4×4 conv to one raw score
  per sample. No BatchNorm, which breaks per-sample gradient penalties: norm "none" or "layernorm"
  (GroupNorm with one group: normalises each sample over C, H, W, with a per-channel affine).

Class-conditional variant (`n_classes` > 0): the generator joins a learned class embedding (one
z_dim vector per class, N(0, 1) at initialisation, like z) to z; the critic adds a projection
head (Miyato & Koyama, ICLR 2018): D(x, y) = ψ(φ(x)) + ⟨e_y, Σ_hw φ(x)⟩, with φ(x) the features
before the last conv and e_y a learned class embedding (N(0, 0.02) at initialisation). With
`n_classes` = 0 (the default) the networks, their parameters and their random draws are the
unconditional ones.

Widths: the generator's last hidden layer has `width` channels and the critic's first layer has
`width` channels; each stage towards 4×4 doubles the channels, capped at 8 × width (DCGAN).
Weights follow the DCGAN initialisation: conv weights N(0, 0.02), BatchNorm weights N(1, 0.02),
biases 0.
"""

from __future__ import annotations

import torch
from torch import nn

from lossbench.config import TrainConfig, check_resolution
from lossbench.models.registry import register_model

MAX_WIDTH_MULT = 8


def _channels(width: int, resolution: int, side: int) -> int:
    """Channels of a feature map side×side in a network whose outermost hidden layer has `width`."""
    return width * min(resolution // side, MAX_WIDTH_MULT)


def dcgan_init_(module: nn.Module, rng: torch.Generator | None = None) -> nn.Module:
    """Re-initialise `module` in place, DCGAN-style, drawing from `rng` (global RNG when None)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.02, generator=rng)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02, generator=rng)
            nn.init.zeros_(m.bias)
    return module


class Generator(nn.Module):
    """z (N×z_dim) -> images N×1×R×R in [-1, 1]."""

    def __init__(
        self,
        resolution: int,
        z_dim: int = TrainConfig.z_dim,
        width: int = TrainConfig.g_width,
        rng: torch.Generator | None = None,
        n_classes: int = 0,
    ) -> None:
        super().__init__()
        self.resolution = check_resolution(resolution)
        self.z_dim = z_dim
        self.width = width
        self.n_classes = n_classes
        side = 4
        c = _channels(width, resolution, side)
        z_in = 2 * z_dim if n_classes else z_dim  # z joined to its class embedding
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(z_in, c, 4, 1, 0, bias=False),  # 1×1 -> 4×4
            nn.BatchNorm2d(c),
            nn.ReLU(),
        ]
        while side < resolution:
            side *= 2
            c_next = _channels(width, resolution, side)
            layers += [nn.ConvTranspose2d(c, c_next, 4, 2, 1, bias=False), nn.BatchNorm2d(c_next), nn.ReLU()]
            c = c_next
        layers += [nn.Conv2d(c, 1, 3, 1, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        dcgan_init_(self, rng)
        if n_classes:
            self.embed = nn.Embedding(n_classes, z_dim)
            nn.init.normal_(self.embed.weight, 0.0, 1.0, generator=rng)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Images for z (N×z_dim) and, when conditional, class indices y (int64 N)."""
        z = torch.cat([z, self.embed(_labels(y, z, self.n_classes)).to(z.dtype)], 1) if self.n_classes else z
        return self.net(z[:, :, None, None])


class Critic(nn.Module):
    """Images N×1×R×R in [-1, 1] -> raw scores of shape N (no sigmoid)."""

    def __init__(
        self,
        resolution: int,
        width: int = TrainConfig.d_width,
        norm: str = TrainConfig.critic_norm,
        rng: torch.Generator | None = None,
        n_classes: int = 0,
    ) -> None:
        super().__init__()
        self.resolution = check_resolution(resolution)
        self.width = width
        self.norm = norm
        self.n_classes = n_classes
        side = resolution // 2
        c = width
        layers: list[nn.Module] = [nn.Conv2d(1, c, 4, 2, 1), nn.LeakyReLU(0.2)]  # never normalised
        while side > 4:
            side //= 2
            c_next = _channels(width, resolution // 2, side)
            layers.append(nn.Conv2d(c, c_next, 4, 2, 1))
            if norm == "layernorm":
                layers.append(nn.GroupNorm(1, c_next))
            layers.append(nn.LeakyReLU(0.2))
            c = c_next
        layers.append(nn.Conv2d(c, 1, 4, 1, 0))  # 4×4 -> 1×1
        self.net = nn.Sequential(*layers)
        dcgan_init_(self, rng)
        if n_classes:
            self.embed = nn.Embedding(n_classes, c)  # projection head
            nn.init.normal_(self.embed.weight, 0.0, 0.02, generator=rng)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Scores for images x and, when conditional, class indices y (int64 N)."""
        if not self.n_classes:
            return self.net(x).flatten()
        h = self.net[:-1](x)
        projection = (self.embed(_labels(y, x, self.n_classes)) * h.sum((2, 3))).sum(1)
        return self.net[-1](h).flatten() + projection


def _labels(y: torch.Tensor | None, x: torch.Tensor, n_classes: int) -> torch.Tensor:
    """`y` checked against the batch `x`: one class index per sample."""
    if y is None or y.shape != (len(x),):
        got = "none" if y is None else tuple(y.shape)
        raise ValueError(f"a conditional network needs one class index per sample ({len(x)}), got {got}")
    return y


@register_model("dgan")
def dgan(
    resolution: int,
    z_dim: int,
    g_width: int,
    d_width: int,
    critic_norm: str,
    rng: torch.Generator | None = None,
    n_classes: int = 0,
) -> tuple[Generator, Critic]:
    """DGAN-WP-TL's generator and critic (the default architecture), both initialised from `rng`;
    class-conditional with a projection critic when `n_classes` > 0."""
    G = Generator(resolution, z_dim, g_width, rng=rng, n_classes=n_classes)
    return G, Critic(resolution, d_width, critic_norm, rng=rng, n_classes=n_classes)
