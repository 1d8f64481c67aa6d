"""The adversarial-loss plugin contract (see docs/plugins.md).

Conventions every loss follows:
- `D` is the critic module; it maps a batch N×C×H×W to raw scores (logits) of shape N or N×1.
  Losses read them through `critic_scores`, which flattens them to N and casts bf16/fp16 to fp32.
- `real` and `fake` are batches in [-1, 1]. The trainer detaches `fake` for the critic step and
  passes it with its graph for the generator step.
- `discriminator_loss` includes the loss's own penalty (gradient penalty, R1, ...), computed in
  fp32 even under autocast (see `lossbench.losses.penalties`).
- `LossOutput.terms` holds detached scalars worth logging ("wdist", "gp", "r1", ...).
- The class docstring states the formula, the defaults and, on a line starting with "Source:",
  the paper; `lossbench losses list` shows its first line and that Source line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from lossbench.errors import ConfigError
from lossbench.lazy import LazyModule

if TYPE_CHECKING:
    from torch import nn

torch = LazyModule("torch")


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
    # True when the loss can be trained fused (lossbench.training.fused): it draws random numbers only through
    # lossbench.losses.penalties and calls the critic the same number of times whatever the data.
    fusable: ClassVar[bool] = False

    def discriminator_loss(self, D: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> LossOutput:
        raise NotImplementedError

    def generator_loss(self, D: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> LossOutput:
        raise NotImplementedError

    def params(self) -> dict[str, float | int | bool | str]:
        """The loss's hyper-parameters, for logging (default: public instance attributes)."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}


def at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """`x` in fp32 when it is in a lower precision (bf16/fp16); fp32 and fp64 are kept as they are."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def critic_scores(D: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """D(x) as a vector of N scores in at least fp32 (critics may return N or N×1, bf16 under autocast)."""
    return at_least_fp32(D(x).reshape(len(x)))


def float_param(name: str, value: float, minimum: float | None = None) -> float:
    """`value` as a finite float (>= `minimum` when given); a ConfigError naming the parameter otherwise."""
    bound = "" if minimum is None else f" >= {minimum:g}"
    try:
        x = float(value)
    except (TypeError, ValueError):
        x = float("nan")
    if not math.isfinite(x) or (minimum is not None and x < minimum):
        raise ConfigError(f"{name} must be a finite number{bound}, got {value!r}")
    return x
