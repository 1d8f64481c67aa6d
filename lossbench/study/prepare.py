"""Before anything is recorded: validate a study, find the weight files it needs, load its data,
and evaluate real images once (loading every network and filling the real-feature cache)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import torch

from lossbench.config import StudyConfig, check_device
from lossbench.errors import ConfigError
from lossbench.losses import get_loss
from lossbench.metrics import DIRECTIONS, get_metric, metric_key, resolve_metrics
from lossbench.metrics.evaluation import EvalResult, evaluate
from lossbench.study.grid import grid_cells

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def validate(config: StudyConfig) -> None:
    """Raise a one-line LossbenchError for a bad study before anything is recorded."""
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
    for name in resolve_metrics(config.eval.metrics):
        needs = get_metric(name).needs
        if "heldout" in needs and config.data.holdout == 0:
            raise ConfigError(f"metric {name!r} needs a held-out part: set data.holdout > 0")
        if "conditional" in needs and not config.train.conditional:
            raise ConfigError(
                f"metric {name!r} needs a class-conditional generator: set train.conditional = true"
            )
    if len(set(grid_cells(config))) != len(grid_cells(config)):
        raise ConfigError("the losses, lambdas and seeds of a study must not repeat")
    for device in config.devices:
        check_device(device)


def _check_weights(config: StudyConfig) -> None:
    """Fail fast, before any data is loaded, when a pretrained file the study needs is absent."""
    from lossbench.metrics import required_weights
    from lossbench.weights import WEIGHTS, find_weights

    train, ev = config.train, config.eval
    uses_perceptual = train.perceptual != "none" and any(lam > 0 for lam in config.lambdas)
    if uses_perceptual and not train.random_weights and train.perceptual in WEIGHTS:
        find_weights(train.perceptual, train.weights_dir)
    for key in required_weights(ev):
        find_weights(key, ev.weights_dir)


def prepare(config: StudyConfig, root: Path) -> tuple[StudyConfig, Any]:
    """Validate, resolve the data spec and cache folder, check weight files, load and split the data.

    Returns the resolved config and the `lossbench.data.split.Split`; nothing is recorded yet."""
    validate(config)
    from lossbench.data.busi import resolve_data_spec
    from lossbench.data.split import load_split

    config = dataclasses.replace(
        config,
        data=dataclasses.replace(config.data, spec=resolve_data_spec(config.data.spec)),
        eval=dataclasses.replace(config.eval, cache_dir=config.eval.cache_dir or str(root / "feature-cache")),
    )
    _check_weights(config)
    return config, load_split(config.data)


def preflight(config: StudyConfig, split: Any) -> EvalResult:
    """Evaluate training images as if they were fakes: loads every network (a missing weight file
    fails here, once, in the parent) and fills the real-data cache before the workers start. Metrics
    that need a generator (`needs` "conditional") are left out: they load no network."""
    train = split.train
    fakes = train.images[torch.arange(config.eval.n_fake) % len(train.images)]
    metrics = tuple(
        m for m in resolve_metrics(config.eval.metrics) if "conditional" not in get_metric(m).needs
    )
    ev = dataclasses.replace(config.eval, metrics=metrics)
    return evaluate(fakes, train, ev, device=config.devices[0], heldout=split.heldout)
