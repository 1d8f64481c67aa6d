"""Architectures by name: `@register_model("name")` on a builder, `build_model(name, ...)` to use it.

A builder is called as `builder(resolution=R, z_dim=..., g_width=..., d_width=..., critic_norm=...,
rng=torch.Generator | None, **kwargs)` and returns `(generator, critic)`:
- the generator maps z (N×z_dim, ~N(0, I)) to images N×1×R×R in [-1, 1] and has attributes
  `resolution` and `z_dim`;
- the critic maps images N×1×R×R in [-1, 1] to raw scores of shape N.
Class-conditional training (`TrainConfig.conditional`) adds `n_classes=K` to the arguments; a builder
that supports it returns a generator called as G(z, y) with attribute `n_classes` = K, and a critic
called as D(x, y), y holding int64 class indices in [0, K). The trainer binds y to the critic
(`BoundCritic`), so the losses still call D(x). A builder without `n_classes` cannot train
conditionally (a one-line ConfigError).
The trainer names the architecture with `TrainConfig.model` (ModelConfig: arch, kwargs) and stores
the builder's arguments in the checkpoint, so `load_generator` rebuilds any registered architecture.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from lossbench.errors import ConfigError

ModelBuilder = Callable[..., tuple[nn.Module, nn.Module]]
_MODELS: dict[str, ModelBuilder] = {}


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    """Decorator: register a builder (see the module docstring) under `name` (replaces)."""

    def decorate(builder: ModelBuilder) -> ModelBuilder:
        _MODELS[name] = builder
        return builder

    return decorate


class BoundCritic(nn.Module):
    """A conditional critic with the batch's class indices bound: `BoundCritic(D, y)(x) = D(x, y)`.
    Every sample of x shares its index with y (real, fake and interpolated batches alike)."""

    def __init__(self, critic: nn.Module, labels: torch.Tensor) -> None:
        super().__init__()
        self.critic, self.labels = critic, labels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.critic(x, self.labels)

    @property
    def input_gradients(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """The critic's own batched penalty pass with the labels bound, when it has one (a fused
        group's member, see lossbench.losses.penalties.input_gradients)."""
        batched = getattr(self.critic, "input_gradients", None)
        return None if batched is None else functools.partial(batched, labels=self.labels)


def builder_defaults(arch: str) -> dict[str, Any]:
    """The keyword defaults of the builder registered as `arch` (JSON-able ones; `rng` left out); {} for
    an unknown name (`build_model` says so)."""
    if arch not in _MODELS:
        return {}
    params = inspect.signature(_MODELS[arch]).parameters.values()
    return {
        p.name: p.default
        for p in params
        if p.name != "rng" and p.default is not p.empty and isinstance(p.default, str | int | float | bool)
    }


def available_models() -> list[str]:
    return sorted(_MODELS)


def build_model(arch: str, rng: torch.Generator | None = None, **args: Any) -> tuple[nn.Module, nn.Module]:
    """`(generator, critic)` of the architecture registered as `arch`, built with `args`."""
    if arch not in _MODELS:
        raise ConfigError(f"unknown architecture {arch!r} (known: {', '.join(available_models())})")
    try:
        return _MODELS[arch](rng=rng, **args)
    except TypeError as e:
        raise ConfigError(f"bad arguments for architecture {arch!r}: {e}") from None
