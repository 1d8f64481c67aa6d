"""Wasserstein losses."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lossbench.lazy import LazyModule
from lossbench.losses.base import AdversarialLoss, LossOutput, critic_scores, float_param
from lossbench.losses.penalties import gradient_penalty, interpolate
from lossbench.losses.registry import register_loss

if TYPE_CHECKING:
    from torch import nn

torch = LazyModule("torch")


@register_loss("wgangp")
class WGANGP(AdversarialLoss):
    """WGAN-GP: Wasserstein critic loss with a per-sample gradient penalty.

    L_D = E[D(f)] - E[D(r)] + gp_weight · E[(‖∇D(x̂)‖₂ - 1)²],  x̂ = ε·r + (1-ε)·f,
    one ε ~ U[0, 1) per sample and the gradient norm taken per sample (in fp32);
    L_G = -E[D(f)]. Logs `wdist` = E[D(r)] - E[D(f)] (the Wasserstein estimate) and `gp`.

    Defaults: gp_weight 10, n_critic 5.
    Source: Gulrajani et al., "Improved Training of Wasserstein GANs", NeurIPS 2017 (arXiv:1704.00028).
    """

    fusable = True

    n_critic = 5

    def __init__(self, gp_weight: float = 10.0) -> None:
        self.gp_weight = float_param("gp_weight", gp_weight, minimum=0)

    def discriminator_loss(self, D: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> LossOutput:
        wdist = critic_scores(D, real).mean() - critic_scores(D, fake).mean()
        gp = gradient_penalty(D, interpolate(real, fake))
        return LossOutput(-wdist + self.gp_weight * gp, {"wdist": wdist.detach(), "gp": gp.detach()})

    def generator_loss(self, D: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> LossOutput:
        return LossOutput(-critic_scores(D, fake).mean())
