"""Which training runs can be trained as one fused group (lossbench.training.fused), judged from their
configs alone, without torch (the command line checks a study before importing it).

Fusable: the same TrainConfig but for `seed` and `lam` (and λ > 0 for all members or none: a
perceptual network for all or none), the "dgan" architecture (class-conditional or not), and a
loss that declares `fusable` (it draws random numbers only through lossbench.losses.penalties and
calls the critic the same way whatever the data).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence

from lossbench.config import TrainConfig
from lossbench.errors import ConfigError
from lossbench.losses import get_loss

MEMBER_FIELDS = ("seed", "lam")  # the fields in which the members of a fused group may differ


def fusion_key(config: TrainConfig) -> str:
    """Equal for configs that may share a fused group: every field but MEMBER_FIELDS, and whether a
    perceptual network is used (`check_fusable` still decides whether they can be fused at all)."""
    fields = {k: v for k, v in dataclasses.asdict(config).items() if k not in MEMBER_FIELDS}
    return json.dumps([fields, config.uses_perceptual], sort_keys=True, default=str)


def check_fusable(configs: Sequence[TrainConfig]) -> None:
    """ConfigError, in one line, unless `configs` can be trained as one fused group."""
    if not configs:
        raise ConfigError("a fused group needs at least one member")
    first = configs[0]
    for c in configs[1:]:
        changed = [
            f.name
            for f in dataclasses.fields(TrainConfig)
            if f.name not in MEMBER_FIELDS and getattr(c, f.name) != getattr(first, f.name)
        ]
        if changed:
            allowed = " and ".join(MEMBER_FIELDS)
            raise ConfigError(f"fused members may differ only by {allowed}, not by {', '.join(changed)}")
    if len({c.uses_perceptual for c in configs}) > 1:
        raise ConfigError(
            "fused members must all have λ > 0 or all λ = 0 (a perceptual loss for all or none)"
        )
    if first.model.arch != "dgan":
        raise ConfigError(f"only the dgan architecture can be fused, not {first.model.arch!r}")
    loss = type(get_loss(first.loss, **first.loss_params))
    if not loss.fusable:
        raise ConfigError(
            f"loss {first.loss!r} cannot be fused (it does not declare `fusable`: see docs/plugins.md)"
        )
