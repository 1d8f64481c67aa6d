"""Relativistic GAN losses (standard and average), in binary cross-entropy form via softplus.

In the generator step the real scores are constants: they are computed without a graph, since
the generator's loss has no gradient through them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lossbench.lazy import LazyModule
from lossbench.losses.base import AdversarialLoss, LossOutput, critic_scores
from lossbench.losses.registry import register_loss

if TYPE_CHECKING:
    from torch import nn

torch = LazyModule("torch")
F = LazyModule("torch.nn.functional")


def _real_scores_constant(D: nn.Module, real: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return critic_scores(D, real)


@register_loss("rsgan")
class RSGAN(AdversarialLoss):
    """Relativistic standard GAN: the critic judges whether real data is more realistic than fake.

    L_D = E[softplus(-(D(r_i) - D(f_i)))];  L_G = E[softplus(-(D(f_i) - D(r_i)))],
    pairing sample i of the real batch with sample i of the fake batch (equal batch sizes).

    Defaults: n_critic 1 (no hyper-parameters).
    Source: Jolicoeur-Martineau, "The relativistic discriminator: a key element missing from
    standard GAN", ICLR 2019 (arXiv:1807.00734).
    """

    fusable = True

    def discriminator_loss(self, D: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> LossOutput:
        return LossOutput(F.softplus(critic_scores(D, fake) - critic_scores(D, real)).mean())

    def generator_loss(self, D: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> LossOutput:
        return LossOutput(F.softplus(_real_scores_constant(D, real) - critic_scores(D, fake)).mean())


@register_loss("rasgan")
class RaSGAN(AdversarialLoss):
    """Relativistic average standard GAN: each sample is compared with the other batch's mean score.

    L_D = E_r[softplus(-(D(r) - E[D(f)]))] + E_f[softplus(D(f) - E[D(r)])];
    L_G = E_f[softplus(-(D(f) - E[D(r)]))] + E_r[softplus(D(r) - E[D(f)])].

    Defaults: n_critic 1 (no hyper-parameters).
    Source: Jolicoeur-Martineau, "The relativistic discriminator: a key element missing from
    standard GAN", ICLR 2019 (arXiv:1807.00734).
    """

    fusable = True

    @staticmethod
    def _loss(s_real: torch.Tensor, s_fake: torch.Tensor) -> torch.Tensor:
        """The loss of the side whose samples should score above the other's."""
        return F.softplus(-(s_real - s_fake.mean())).mean() + F.softplus(s_fake - s_real.mean()).mean()

    def discriminator_loss(self, D: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> LossOutput:
        return LossOutput(self._loss(critic_scores(D, real), critic_scores(D, fake)))

    def generator_loss(self, D: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> LossOutput:
        return LossOutput(self._loss(critic_scores(D, fake), _real_scores_constant(D, real)))
