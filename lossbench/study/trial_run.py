"""What a cell's trial writes, besides training: its MLflow child run when it starts (tags, the
description, params, `config.json`, datasets) and its results when it ends (Optuna user attributes
`metric.<key>` and `setting.<key>` (their names: `record`), MLflow metrics, tags and artifacts).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
import torch

from lossbench import tracking
from lossbench.config import StudyConfig, TrainConfig, lambda_text, to_dict
from lossbench.study import record
from lossbench.study.grid import Cell
from lossbench.study.liveness import current_worker

if TYPE_CHECKING:
    from lossbench.study.cell import CellResult, Objective


def start_trial_run(
    objective: Objective, trial: optuna.Trial, cell: Cell, train_cfg: TrainConfig
) -> tracking.TrialRun:
    """The trial's MLflow child run, under the study's run, tagged and with its full config as params
    and `config.json`, the data it trains and is scored on as datasets; its id on the trial."""
    config, data = objective.config, objective.data
    weights = tracking.weights_kind(train_cfg, config.eval)
    warning = tracking.weights_warning(train_cfg, config.eval)
    description = _description(config, cell, trial.number, train_cfg, weights, len(data.train))
    run = tracking.TrialRun.start(
        objective.tracking_uri,
        objective.experiment_id,
        objective.parent_run_id,
        tracking.trial_run_name(cell.loss, cell.lam, cell.seed),
        {
            tracking.DESCRIPTION_TAG: tracking.describe(description, warning),
            **({tracking.WARNING_TAG: warning} if warning else {}),
            **tracking.trial_tags(config.name, trial.number, cell.loss, cell.lam, cell.seed),
            tracking.WEIGHTS_TAG: weights,
            tracking.DEVICE_TAG: objective.device,
            tracking.WORKER_TAG: str(current_worker()),
            **{f"{tracking.TAG_PREFIX}{k}": v for k, v in trial.user_attrs.items() if k in record.LINKS},
        },
    )
    trial.set_user_attr(record.RUN_ID, run.run_id)
    config_json = {
        "study": config.name,
        "trial": trial.number,
        "train": to_dict(train_cfg),
        "eval": to_dict(config.eval),
        "data": to_dict(config.data) | {"fingerprint": data.train.fingerprint, **data.record()},
    }
    run.log_params(tracking.flatten(config_json))
    run.log_dict(config_json, tracking.CONFIG_JSON)
    tracking.log_dataset(
        objective.tracking_uri,
        run.run_id,
        config.data.spec,
        data.train.fingerprint,
        "train",
        len(data.train),
    )
    if data.heldout is not None:  # the part the metrics are also computed on
        held = data.heldout
        tracking.log_dataset(
            objective.tracking_uri,
            run.run_id,
            f"{config.data.spec}:heldout",
            held.fingerprint,
            "heldout",
            len(held),
        )
    return run


def _description(
    config: StudyConfig, cell: Cell, number: int, train_cfg: TrainConfig, weights: str, n_images: int
) -> list[str]:
    """The lines of a child run's description: cell, weights, data, training and evaluation."""
    lam = lambda_text(cell.lam)
    ev = config.eval
    return [
        f"**{cell.loss}**, λ = {lam}, seed {cell.seed} (Optuna trial {number}, study {config.name})",
        f"weights: {weights}; data: {config.data.spec} at {config.data.resolution} px ({n_images} images); "
        f"{train_cfg.steps} steps, batch {train_cfg.batch_size}",
        f"evaluation: {', '.join(ev.metrics)}; extractor {ev.feature_extractor}, n_fake {ev.n_fake}",
    ]


def record_result(trial: optuna.Trial, run: tracking.TrialRun, result: CellResult) -> None:
    """User attributes, final MLflow metrics (plain keys, once, at SUMMARY_STEP), settings as tags,
    artifacts."""
    settings = {f"{record.SETTING}{k}": v for k, v in result.settings.items()}
    settings[f"{record.SETTING}threads"] = torch.get_num_threads()
    for k, v in result.metrics.items():
        trial.set_user_attr(f"{record.METRIC}{k}", float(v))
    for k, v in settings.items():
        trial.set_user_attr(k, v)
    run.log_metrics(result.metrics, tracking.SUMMARY_STEP)
    run.set_tags(settings)
    run.set_tags({tracking.STATE_TAG: "COMPLETE"})
    summary = {"metrics": result.metrics, "settings": result.settings, "steps": result.steps}
    run.log_dict(summary, tracking.METRICS_JSON)
    if result.sample_grid is not None:
        folder, name = os.path.split(tracking.SAMPLE_GRID)
        with tempfile.TemporaryDirectory() as tmp:
            run.log_artifact(shutil.copy(result.sample_grid, Path(tmp, name)), folder)
    if result.closest_png is not None:
        folder, name = os.path.split(tracking.CLOSEST_FAKES)
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / name).write_bytes(result.closest_png)
            run.log_artifact(str(Path(tmp) / name), folder)
    if result.fake_features is not None:
        tracking.log_features(run.tracking_uri, run.run_id, result.fake_features, tracking.FAKE_FEATURES)
    if result.fake_classes is not None:
        tracking.log_features(run.tracking_uri, run.run_id, result.fake_classes, tracking.FAKE_CLASSES)
