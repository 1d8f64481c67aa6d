"""Study definitions: TOML files (`studies/*.toml`) and command-line overrides.

A TOML study file maps one-to-one onto `StudyConfig`: top-level keys are its fields, the tables
`[data]`, `[train]` and `[eval]` are its nested configs, and `[loss_params.<loss>]` holds one loss's
hyper-parameters. The grid axes (losses, lambdas, seeds) are top-level only; `[train]` may not set
its per-cell fields (role CELL in lossbench.config: loss, lam, seed, loss_params). Unknown keys are
errors. Command-line options override the file. Data spec "busi" is found by lossbench.data.busi.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from typing import Any

from lossbench import config as cfg
from lossbench.config import StudyConfig, TrainConfig, check_device, lambda_text
from lossbench.errors import ConfigError
from lossbench.losses import get_loss
from lossbench.metrics import DIRECTIONS, check_needs, get_metric, metric_key, resolve_metrics
from lossbench.training.fusable import check_fusable

_PER_CELL = cfg.fields_with_role(TrainConfig, cfg.CELL)  # set per cell from the grid, never in [train]
_EXCLUDE = {"train": _PER_CELL}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


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


def best_metric(config: StudyConfig) -> str:
    """The result key by which a cell's best periodic evaluation is kept as best.pt: `best_metric`;
    unset, the objective when it is a curve metric (or there is none: `validate` asks for one when
    `eval_every` is set), else the first curve metric's first result."""
    if config.best_metric is not None:
        return metric_key(config.best_metric)
    objective = metric_key(config.objective)
    curves = resolve_metrics(config.curve_metrics)
    if not curves or (objective in DIRECTIONS and get_metric(objective).name in curves):
        return objective
    return metric_key(curves[0])


def validate(config: StudyConfig) -> None:
    """Raise a one-line LossbenchError for a bad study before anything is recorded.

    Needs neither data nor network, and imports neither torch (unless a CUDA device is named),
    optuna nor mlflow: the command line runs it first, so a typo is answered at once."""
    if not _NAME.fullmatch(config.name):
        raise ConfigError(f"study name {config.name!r} must be letters, digits, '_', '.', '-'")
    for loss in config.loss_params:
        if loss not in config.losses:
            raise ConfigError(f"loss parameters given for {loss!r}, which is not a loss of the study")
    for loss in config.losses:
        get_loss(loss, **config.loss_params.get(loss, {}))
    key = metric_key(config.objective)
    if key not in DIRECTIONS:
        raise ConfigError(f"unknown objective {config.objective!r} (choose from {', '.join(DIRECTIONS)})")
    if get_metric(key).name not in resolve_metrics(config.eval.metrics):
        metrics = ", ".join(config.eval.metrics)
        raise ConfigError(f"objective {key!r} is not among the metrics evaluated ({metrics})")
    check_needs(config.eval.metrics, heldout=config.data.holdout > 0, conditional=config.train.conditional)
    if config.eval_every:
        if not config.curve_metrics:
            raise ConfigError("eval_every needs at least one curve metric (curve_metrics)")
        check_needs(
            config.curve_metrics, heldout=config.data.holdout > 0, conditional=config.train.conditional
        )
        best = best_metric(config)
        if best not in DIRECTIONS or get_metric(best).name not in resolve_metrics(config.curve_metrics):
            curves = ", ".join(config.curve_metrics)
            raise ConfigError(
                f"best_metric {config.best_metric!r} is not a result of the curve metrics ({curves})"
            )
    lambdas = [lambda_text(lam) for lam in config.lambdas]  # as run names and folders write them
    if any(len(set(axis)) != len(axis) for axis in (config.losses, lambdas, config.seeds)):
        raise ConfigError(
            "the losses, lambdas and seeds of a study must not repeat (λ to 15 significant digits)"
        )
    for device in config.devices:
        check_device(device)
    if config.fuse > 1:
        for loss in config.losses:
            params = config.loss_params.get(loss, {})
            check_fusable([dataclasses.replace(config.train, loss=loss, loss_params=params)])
