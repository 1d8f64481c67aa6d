"""DGAN-WP-TL's generator and critic, as lossbench reads the paper (see docs/training.md).

- `Generator`: z (N×z_dim, ~N(0, I)) -> 4×4 transposed conv -> (transposed conv 4×4 stride 2,
  BatchNorm, ReLU) up to R×R -> 3×3 conv to one channel -> tanh, so images are in [-1, 1].
- `Critic`: (conv 4×4 stride 2, [norm], LeakyReLU(0.2)) down to 4×4 -> 4×4 conv to one raw score
  per sample. No BatchNorm, which breaks per-sample gradient penalties: norm "none" or "layernorm"
  (GroupNorm with one group: normalises each sample over C, H, W, with a per-channel affine).

Class-conditional variant (`n_classes` > 0): the critic adds a projection head (Miyato & Koyama,
ICLR 2018): D(x, y) = ψ(φ(x)) + ⟨e_y, Σ_hw φ(x)⟩, with φ(x) the features before the last conv and
e_y a learned class embedding (N(0, 0.02) at initialisation). The generator takes the class by
`conditioning`:
- "batchnorm" (default): every BatchNorm is class-conditional (`ConditionalBatchNorm2d`, de Vries et
  al. 2017; with a projection critic as in Miyato & Koyama 2018) and z enters alone.
- "concat" (lossbench's generator until 2026-12): a learned class embedding (one z_dim vector per
  class, N(0, 1) at initialisation, like z) joined to z. On BUSI this generator learns to ignore z:
  the class signal grows, and the BatchNorm after the first layer scales z's share down with it
  (docs/training.md).
With `n_classes` = 0 (the default) the networks, their parameters and their random draws are the
unconditional ones, whatever `conditioning` says.

Critic norms (`norm`): "none"; "layernorm" (GroupNorm(1, C): each sample over C, H, W);
"instancenorm" (GroupNorm(C, C): each sample and channel over H, W), on every hidden layer but the
first and the last: the last one's 4×4 features keep their channel means, which the projection sums
(instance-normalised, Σ_hw φ(x) would barely depend on x). Every norm is per sample, so per-sample
gradient penalties stay per sample.

Widths: the generator's last hidden layer has `width` channels and the critic's first layer has
`width` channels; each stage towards 4×4 doubles the channels, capped at 8 × width (DCGAN).
Weights follow the DCGAN initialisation: conv weights N(0, 0.02), BatchNorm weights N(1, 0.02),
biases 0.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lossbench.config import TrainConfig, check_resolution
from lossbench.errors import ConfigError
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
        elif isinstance(m, nn.BatchNorm2d) and m.affine:
            nn.init.normal_(m.weight, 1.0, 0.02, generator=rng)
            nn.init.zeros_(m.bias)
    return module


class ConditionalBatchNorm2d(nn.Module):
    """BatchNorm2d without an affine, then a gain and a bias per class:
    y (int64 N) -> (1 + m·g[y])·x̂ + m·b[y], with g and b tables (classes × channels) that start at 0,
    so at initialisation it is a plain BatchNorm. m = `CLASS_LR_MULT` is a learning-rate multiplier
    (a parameter used scaled by a constant, as StyleGAN's mapping network is): Adam moves each table
    entry by about lr per step whatever its gradient, so without it a class's gain and bias would take
    thousands of steps to move by 0.5."""

    takes_labels = True  # `run_conditional` passes it the class indices

    def __init__(self, num_features: int, n_classes: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(num_features, affine=False)
        self.gain = nn.Embedding(n_classes, num_features)
        self.bias = nn.Embedding(n_classes, num_features)
        nn.init.zeros_(self.gain.weight)
        nn.init.zeros_(self.bias.weight)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return class_affine(self.bn(x), self.gain(y), self.bias(y))


CLASS_LR_MULT = 10.0  # see ConditionalBatchNorm2d


def class_affine(x: torch.Tensor, gain: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """(1 + m·gain)·x + m·bias for x N×C×H×W and per-sample gain, bias N×C (m = CLASS_LR_MULT)."""
    gain, bias = (CLASS_LR_MULT * t[:, :, None, None].to(x.dtype) for t in (gain, bias))
    return x * (1 + gain) + bias


CONDITIONINGS = ("batchnorm", "concat")  # how a conditional generator takes the class; first: default


def run_conditional(net: nn.Sequential, x: torch.Tensor, y: Any) -> torch.Tensor:
    """`net` applied to `x`, passing the class indices `y` to every `ConditionalBatchNorm2d` (or to a
    layer of a fused group that takes them, see lossbench.training.fused)."""
    for layer in net:
        x = layer(x, y) if getattr(layer, "takes_labels", False) else layer(x)
    return x


class Generator(nn.Module):
    """z (N×z_dim) -> images N×1×R×R in [-1, 1]."""

    def __init__(
        self,
        resolution: int,
        z_dim: int = TrainConfig.z_dim,
        width: int = TrainConfig.g_width,
        rng: torch.Generator | None = None,
        n_classes: int = 0,
        conditioning: str = CONDITIONINGS[0],
    ) -> None:
        super().__init__()
        if conditioning not in CONDITIONINGS:
            raise ConfigError(f"conditioning must be one of {', '.join(CONDITIONINGS)}, got {conditioning!r}")
        self.resolution = check_resolution(resolution)
        self.z_dim = z_dim
        self.width = width
        self.n_classes = n_classes
        self.conditioning = conditioning if n_classes else None
        side = 4
        c = _channels(width, resolution, side)

        def norm(channels: int) -> nn.Module:
            if self.conditioning == "batchnorm":
                return ConditionalBatchNorm2d(channels, n_classes)
            return nn.BatchNorm2d(channels)

        z_in = 2 * z_dim if self.conditioning == "concat" else z_dim  # z joined to its class embedding
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(z_in, c, 4, 1, 0, bias=False),  # 1×1 -> 4×4
            norm(c),
            nn.ReLU(),
        ]
        while side < resolution:
            side *= 2
            c_next = _channels(width, resolution, side)
            layers += [nn.ConvTranspose2d(c, c_next, 4, 2, 1, bias=False), norm(c_next), nn.ReLU()]
            c = c_next
        layers += [nn.Conv2d(c, 1, 3, 1, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        dcgan_init_(self, rng)
        if self.conditioning == "concat":
            self.embed = nn.Embedding(n_classes, z_dim)
            nn.init.normal_(self.embed.weight, 0.0, 1.0, generator=rng)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Images for z (N×z_dim) and, when conditional, class indices y (int64 N)."""
        if self.conditioning is None:
            return self.net(z[:, :, None, None])
        y = _labels(y, z, self.n_classes)
        if self.conditioning == "concat":
            return self.net(torch.cat([z, self.embed(y).to(z.dtype)], 1)[:, :, None, None])
        return run_conditional(self.net, z[:, :, None, None], y)


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
            # instancenorm spares the 4×4 features: the head and the projection read their channel means
            instance = norm == "instancenorm" and side > 4
            # no bias before instancenorm, which removes every channel's mean (its gradient is 0)
            layers.append(nn.Conv2d(c, c_next, 4, 2, 1, bias=not instance))
            if norm == "layernorm":
                layers.append(nn.GroupNorm(1, c_next))
            elif instance:
                layers.append(nn.GroupNorm(c_next, c_next))
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
    conditioning: str = CONDITIONINGS[0],
) -> tuple[Generator, Critic]:
    """DGAN-WP-TL's generator and critic (the default architecture), both initialised from `rng`;
    class-conditional with a projection critic when `n_classes` > 0, the generator taking the class
    by `conditioning` (see the module docstring; `model.kwargs = {conditioning = "batchnorm"}`)."""
    G = Generator(resolution, z_dim, g_width, rng=rng, n_classes=n_classes, conditioning=conditioning)
    return G, Critic(resolution, d_width, critic_norm, rng=rng, n_classes=n_classes)
