"""Hinge loss."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lossbench.lazy import LazyModule
from lossbench.losses.base import AdversarialLoss, LossOutput, critic_scores
from lossbench.losses.registry import register_loss

if TYPE_CHECKING:
    from torch import nn

torch = LazyModule("torch")
F = LazyModule("torch.nn.functional")


@register_loss("hinge")
class Hinge(AdversarialLoss):
    """Hinge loss on raw critic scores.

    L_D = E[max(0, 1 - D(r))] + E[max(0, 1 + D(f))];  L_G = -E[D(f)].

    Defaults: n_critic 1 (no hyper-parameters).
    Source: Lim & Ye, "Geometric GAN", 2017 (arXiv:1705.02894); Miyato et al., "Spectral
    Normalization for GANs", ICLR 2018 (arXiv:1802.05957).
    """

    fusable = True

    def discriminator_loss(self, D: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> LossOutput:
        real_term = F.relu(1 - critic_scores(D, real)).mean()
        return LossOutput(real_term + F.relu(1 + critic_scores(D, fake)).mean())

    def generator_loss(self, D: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> LossOutput:
        return LossOutput(-critic_scores(D, fake).mean())
