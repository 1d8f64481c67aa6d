"""Least-squares GAN."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lossbench.lazy import LazyModule
from lossbench.losses.base import AdversarialLoss, LossOutput, critic_scores, float_param
from lossbench.losses.registry import register_loss

if TYPE_CHECKING:
    from torch import nn

torch = LazyModule("torch")


@register_loss("lsgan")
class LSGAN(AdversarialLoss):
    """Least-squares GAN on raw critic scores (no sigmoid).

    L_D = ½·E[(D(r) - b)²] + ½·E[(D(f) - a)²];  L_G = ½·E[(D(f) - c)²].

    Defaults: a 0 (fake target), b 1 (real target), c 1 (the generator's target), n_critic 1.
    Source: Mao et al., "Least Squares Generative Adversarial Networks", ICCV 2017 (arXiv:1611.04076).
    """

    fusable = True

    def __init__(self, a: float = 0.0, b: float = 1.0, c: float = 1.0) -> None:
        self.a = float_param("a", a)
        self.b = float_param("b", b)
        self.c = float_param("c", c)

    def discriminator_loss(self, D: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> LossOutput:
        real_term = (critic_scores(D, real) - self.b).pow(2).mean()
        fake_term = (critic_scores(D, fake) - self.a).pow(2).mean()
        return LossOutput(0.5 * real_term + 0.5 * fake_term)

    def generator_loss(self, D: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> LossOutput:
        return LossOutput(0.5 * (critic_scores(D, fake) - self.c).pow(2).mean())
