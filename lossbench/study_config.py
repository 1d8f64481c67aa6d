"""Study definitions: TOML files (`studies/*.toml`) and command-line overrides.

A TOML study file maps one-to-one onto `StudyConfig`: top-level keys are its fields, the tables
`[data]`, `[train]` and `[eval]` are its nested configs, and `[loss_params.<loss>]` holds one loss's
hyper-parameters. The grid axes (losses, lambdas, seeds) are top-level only; `[train]` may not set
its per-cell fields (role CELL in lossbench.config: loss, lam, seed, loss_params). Unknown keys are
errors. Command-line options override the file. Data spec "busi" is found by lossbench.data.busi.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from lossbench import config as cfg
from lossbench.config import StudyConfig, TrainConfig

_PER_CELL = cfg.fields_with_role(TrainConfig, cfg.CELL)  # set per cell from the grid, never in [train]
_EXCLUDE = {"train": _PER_CELL}


def study_config_from_dict(raw: Mapping[str, Any], where: str = "study config") -> StudyConfig:
    """A StudyConfig from nested plain values (a parsed TOML file); ConfigError names a bad key."""
    return cfg.config_from_dict(StudyConfig, raw, where, _EXCLUDE)


def load_study_config(path: str | os.PathLike) -> StudyConfig:
    """Read a TOML study file (see the module docstring for its layout)."""
    return study_config_from_dict(cfg.load_toml(path, "study"), str(path))


def load_preset(name: str) -> StudyConfig:
    """The study preset `name` shipped with the package (`lossbench.presets`)."""
    from lossbench.presets import preset_text

    return study_config_from_dict(cfg.tomllib.loads(preset_text(name)), f"preset {name!r}")


def with_overrides(config: StudyConfig, overrides: Mapping[str, Any]) -> StudyConfig:
    """A copy of `config` with dotted keys replaced (`"train.steps": 5`, `"losses": (...)`).

    None values are skipped, so unset command-line options leave the file's value in place;
    `loss_params` entries are merged per loss. An unknown key lists close matches."""
    return cfg.with_overrides(config, overrides, _EXCLUDE)
