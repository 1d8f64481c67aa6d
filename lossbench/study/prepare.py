"""Before anything is recorded: validate a study, find the weight files it needs, load its data,
and evaluate real images once (loading every network and filling the real-feature cache)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from threadpoolctl import threadpool_limits

from lossbench.config import StudyConfig
from lossbench.errors import ConfigError
from lossbench.metrics import get_metric, resolve_metrics
from lossbench.metrics.evaluation import EvalResult, evaluate, release_networks
from lossbench.study.definition import validate


def study_weights(config: StudyConfig) -> list[str]:
    """Keys of `lossbench.weights.WEIGHTS` the study needs: its perceptual network (unless random or
    unused) and every evaluation network."""
    from lossbench.metrics import required_weights
    from lossbench.weights import WEIGHTS

    train = config.train
    uses_perceptual = train.perceptual != "none" and any(lam > 0 for lam in config.lambdas)
    keys = (
        [train.perceptual]
        if uses_perceptual and not train.random_weights and train.perceptual in WEIGHTS
        else []
    )
    return list(dict.fromkeys(keys + required_weights(config.eval)))


def _check_weights(config: StudyConfig) -> None:
    """Fail fast, before any data is loaded, naming every pretrained file the study lacks at once."""
    from lossbench.errors import MissingWeightsError
    from lossbench.weights import find_weights, missing_message

    keys = study_weights(config)
    message = missing_message(keys, config.train.weights_dir or config.eval.weights_dir)
    if message:
        raise MissingWeightsError(message)
    for key in keys:  # present: verify the digests
        find_weights(key, config.train.weights_dir or config.eval.weights_dir)


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
    split = load_split(config.data)
    if config.train.batch_size > len(split.train.images):
        raise ConfigError(
            f"batch_size {config.train.batch_size} is larger than the train part "
            f"({len(split.train.images)} images): lower --batch-size"
        )
    return config, split


def preflight(config: StudyConfig, split: Any) -> EvalResult:
    """Evaluate training images as if they were fakes: loads every network (a missing weight file
    fails here, once, in the parent) and fills the real-data cache before the workers evaluate; then
    releases the networks (the parent keeps no memory of them while the workers run). Metrics that
    need a generator (`needs` "conditional") are left out: they load no network."""
    train = split.train
    fakes = train.images[torch.arange(config.eval.n_fake) % len(train.images)]
    metrics = tuple(
        m for m in resolve_metrics(config.eval.metrics) if "conditional" not in get_metric(m).needs
    )
    ev = dataclasses.replace(config.eval, metrics=metrics)
    before = torch.get_num_threads()
    torch.set_num_threads(config.threads)  # the real features are computed as the workers would
    try:
        with threadpool_limits(limits=config.threads):  # numpy's BLAS too, as in the workers
            return evaluate(fakes, train, ev, device=config.devices[0], heldout=split.heldout)
    finally:
        torch.set_num_threads(before)
        release_networks()
