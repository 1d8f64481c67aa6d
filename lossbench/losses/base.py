"""The adversarial-loss plugin contract (see docs/plugins.md).

Conventions every loss follows:
- `D` is the critic module; it maps a batch N×C×H×W to raw scores (logits) of shape N or N×1.
- `real` and `fake` are batches in [-1, 1]. The trainer detaches `fake` for the critic step and
  passes it with its graph for the generator step.
- `discriminator_loss` includes the loss's own penalty (gradient penalty, R1, ...), computed in
  fp32 even under autocast.
- `LossOutput.terms` holds detached scalars worth logging ("wdist", "gp", "d_real", ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn


@dataclass
class LossOutput:
    """A scalar to back-propagate and the detached terms worth logging."""

    loss: torch.Tensor
    terms: dict[str, torch.Tensor] = field(default_factory=dict)


class AdversarialLoss:
    """Base class of every adversarial loss. Subclasses state their formula in the docstring.

    Constructor keyword arguments are the loss's hyper-parameters (e.g. `gp_weight`); `params()`
    returns them for logging.
    """

    name: ClassVar[str] = ""
    n_critic: int = 1  # recommended critic steps per generator step

    def discriminator_loss(self, D: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> LossOutput:
        raise NotImplementedError

    def generator_loss(self, D: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> LossOutput:
        raise NotImplementedError

    def params(self) -> dict[str, float | int | bool | str]:
        """The loss's hyper-parameters, for logging (default: public instance attributes)."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}
