"""Architectures by name: `@register_model("name")` on a builder, `build_model(name, ...)` to use it.

A builder is called as `builder(resolution=R, z_dim=..., g_width=..., d_width=..., critic_norm=...,
rng=torch.Generator | None, **kwargs)` and returns `(generator, critic)`:
- the generator maps z (N×z_dim, ~N(0, I)) to images N×1×R×R in [-1, 1] and has attributes
  `resolution` and `z_dim`;
- the critic maps images N×1×R×R in [-1, 1] to raw scores of shape N.
The trainer names the architecture with `TrainConfig.model` (ModelConfig: arch, kwargs) and stores
the builder's arguments in the checkpoint, so `load_generator` rebuilds any registered architecture.
"""

from __future__ import annotations

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
