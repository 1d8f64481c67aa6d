"""Critic penalties on input gradients: the WGAN-GP/DRAGAN gradient penalty and R1.

Every penalty runs its extra forward and backward pass through the critic in fp32 (fp64 stays
fp64) with autocast and TF32 switched off (`lossbench.precision.fp32`), whatever the caller's
state; the trainer's critic backward runs with TF32 off too: double backward in
bf16/fp16 is a known source of NaNs in GAN training. The points are detached (a penalty regularises
the critic only) and the gradient is taken with `create_graph=True`, so the penalty back-propagates
into the critic's parameters. Norms are taken per sample, over all of C×H×W.

Random draws come from `loss_generator()`: the run's own stream (`train.Run.loss_rng`), which the
trainer sets with `drawing_from` for each loss call, also in each member of a fused group
(`lossbench.training.fused`); torch's global RNG outside the trainer. A loss that draws its
random numbers only through this module, and calls the critic only through `critic_scores` and
`input_gradients`, can be trained fused (`AdversarialLoss.fusable`). A critic may batch the penalty
pass itself: `input_gradients` defers to its `input_gradients(x)` method when it has one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING

from lossbench import precision
from lossbench.lazy import LazyModule
from lossbench.losses.base import at_least_fp32

if TYPE_CHECKING:
    from torch import nn

torch = LazyModule("torch")

_generator: ContextVar[torch.Generator | None] = ContextVar("loss_generator", default=None)


def loss_generator() -> torch.Generator | None:
    """The generator the losses draw from in this thread (None: torch's global RNG)."""
    return _generator.get()


@contextmanager
def drawing_from(generator: torch.Generator | None) -> Iterator[None]:
    """Inside the block, this thread's loss draws come from `generator`."""
    token = _generator.set(generator)
    try:
        yield
    finally:
        _generator.reset(token)


@precision.fp32()
def input_gradients(D: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """∇ₓ D(x) for each sample of `x` (shape of `x`, at least fp32), differentiable w.r.t. D's parameters."""
    with torch.autocast(device_type=x.device.type, enabled=False):
        x = at_least_fp32(x.detach()).requires_grad_(True)
        batched = getattr(D, "input_gradients", None)
        if batched is not None:
            return batched(x)
        scores = D(x)
        (grad,) = torch.autograd.grad(scores.sum(), x, create_graph=True)
    return grad


def gradient_penalty(D: nn.Module, x: torch.Tensor, target: float = 1.0) -> torch.Tensor:
    """E_i (‖∇D(x_i)‖₂ - target)², the norm taken per sample (Gulrajani et al. 2017)."""
    norms = torch.linalg.vector_norm(input_gradients(D, x).flatten(1), dim=1)
    return (norms - target).pow(2).mean()


def r1_penalty(D: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """E_i ‖∇D(x_i)‖₂², without the γ/2 factor (Mescheder et al. 2018)."""
    return input_gradients(D, x).flatten(1).pow(2).sum(1).mean()


def interpolate(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """ε·a + (1-ε)·b with one ε ~ U[0, 1) per sample (at least fp32, detached)."""
    a, b = at_least_fp32(a.detach()), at_least_fp32(b.detach())
    shape = (len(a),) + (1,) * (a.dim() - 1)
    eps = torch.rand(shape, device=a.device, dtype=a.dtype, generator=loss_generator())
    return eps * a + (1 - eps) * b


def dragan_perturb(x: torch.Tensor) -> torch.Tensor:
    """x + 0.5·std(x)·U[0, 1) noise per element; std over the whole batch, ddof 0 (Kodali et al. 2017)."""
    x = at_least_fp32(x.detach())
    u = torch.rand(x.shape, device=x.device, dtype=x.dtype, generator=loss_generator())
    return x + 0.5 * x.std(correction=0) * u
