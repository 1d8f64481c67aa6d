"""Binary cross-entropy (standard GAN) losses, on logits via softplus, and their penalised forms.

With s = D(x) a logit, -log σ(s) = softplus(-s) and -log(1 - σ(s)) = softplus(s); softplus is
exact and stable for any s, where log(sigmoid(s)) underflows to -inf for s ≲ -88 in fp32.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lossbench.errors import ConfigError
from lossbench.lazy import LazyModule
from lossbench.losses.base import AdversarialLoss, LossOutput, critic_scores, float_param
from lossbench.losses.penalties import dragan_perturb, gradient_penalty, interpolate, r1_penalty
from lossbench.losses.registry import register_loss

if TYPE_CHECKING:
    from torch import nn

torch = LazyModule("torch")
F = LazyModule("torch.nn.functional")


def bce_critic(D: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """E[softplus(-D(r))] + E[softplus(D(f))]: -E[log σ(D(r))] - E[log(1 - σ(D(f)))]."""
    return F.softplus(-critic_scores(D, real)).mean() + F.softplus(critic_scores(D, fake)).mean()


def non_saturating(D: nn.Module, fake: torch.Tensor) -> torch.Tensor:
    """E[softplus(-D(f))]: -E[log σ(D(f))]."""
    return F.softplus(-critic_scores(D, fake)).mean()


@register_loss("bce")
class BCE(AdversarialLoss):
    """Standard GAN: binary cross-entropy on logits, non-saturating generator loss.

    L_D = E[softplus(-D(r))] + E[softplus(D(f))];
    L_G = E[softplus(-D(f))] (non-saturating), or with saturating=True the original minimax
    L_G = E[log(1 - σ(D(f)))] = -E[softplus(D(f))].

    Defaults: saturating False, n_critic 1.
    Source: Goodfellow et al., "Generative Adversarial Nets", NeurIPS 2014 (arXiv:1406.2661).
    """

    fusable = True

    def __init__(self, saturating: bool = False) -> None:
        if not isinstance(saturating, bool):
            raise ConfigError(f"saturating must be true or false, got {saturating!r}")
        self.saturating = saturating

    def discriminator_loss(self, D: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> LossOutput:
        return LossOutput(bce_critic(D, real, fake))

    def generator_loss(self, D: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> LossOutput:
        if self.saturating:
            return LossOutput(-F.softplus(critic_scores(D, fake)).mean())
        return LossOutput(non_saturating(D, fake))


@register_loss("ns-r1")
class NonSaturatingR1(AdversarialLoss):
    """Non-saturating GAN with the R1 penalty on real data.

    L_D = E[softplus(-D(r))] + E[softplus(D(f))] + (gamma/2) · E[‖∇D(r)‖₂²] (gradient in fp32);
    L_G = E[softplus(-D(f))]. Logs `r1` = E[‖∇D(r)‖₂²].

    Defaults: gamma 10, n_critic 1.
    Source: Mescheder et al., "Which Training Methods for GANs do actually Converge?", ICML 2018
    (arXiv:1801.04406).
    """

    fusable = True

    def __init__(self, gamma: float = 10.0) -> None:
        self.gamma = float_param("gamma", gamma, minimum=0)

    def discriminator_loss(self, D: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> LossOutput:
        r1 = r1_penalty(D, real)
        return LossOutput(bce_critic(D, real, fake) + self.gamma / 2 * r1, {"r1": r1.detach()})

    def generator_loss(self, D: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> LossOutput:
        return LossOutput(non_saturating(D, fake))


@register_loss("dragan")
class DRAGAN(AdversarialLoss):
    """Non-saturating GAN with the DRAGAN gradient penalty around the real data.

    L_D = E[softplus(-D(r))] + E[softplus(D(f))] + gp_weight · E[(‖∇D(x̂)‖₂ - k)²],
    x̂ = r + α·(x_p - r), x_p = r + 0.5·std(r)·u with u ~ U[0, 1) per element, std over the whole
    batch (ddof 0) and one α ~ U[0, 1) per sample; gradient norm per sample, in fp32;
    L_G = E[softplus(-D(f))]. Logs `gp`.

    Defaults: gp_weight (λ) 10, k 1, n_critic 1.
    Source: Kodali et al., "On Convergence and Stability of GANs", 2017 (arXiv:1705.07215).
    """

    fusable = True

    def __init__(self, gp_weight: float = 10.0, k: float = 1.0) -> None:
        self.gp_weight = float_param("gp_weight", gp_weight, minimum=0)
        self.k = float_param("k", k, minimum=0)

    def discriminator_loss(self, D: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> LossOutput:
        gp = gradient_penalty(D, interpolate(dragan_perturb(real), real), target=self.k)
        return LossOutput(bce_critic(D, real, fake) + self.gp_weight * gp, {"gp": gp.detach()})

    def generator_loss(self, D: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> LossOutput:
        return LossOutput(non_saturating(D, fake))
