"""Optuna studies over the full (loss × λ × seed) grid: one trial is one cell, run exactly once.

The flow of `run_study`, one module per step:
- `prepare`: validate, check the weight files, load the data, evaluate real images once;
- `grid`: the cells, the study's identity (refusing to resume with other settings), a cell's config;
- `queue`: the Optuna storage, cell states, queueing pending cells, recovering dead workers;
- `workers`: worker processes taking queued trials, the progress display;
- `cell`: one trial: train, evaluate, record (Optuna user attributes, an MLflow child run);
- `results`: reading a study back (`load_study`, `study_cells`, `results_frame`, `load_results`).

Every cell runs exactly once, also with several workers: the parent queues each pending cell as a
WAITING trial before any worker starts; a worker takes one with Optuna's atomic WAITING -> RUNNING
transition. No sampler chooses grid points (Optuna's GridSampler can give two processes the same
point); a trial that was not queued, or whose cell is already taken, is pruned. Analyses read
COMPLETE trials only.

Storage: by default a journal file, `<root>/optuna-journal.log` (Optuna advises against SQLite for
parallel work). `storage` may be an RDB URL (PostgreSQL/MySQL for several machines; SQLite) opened
with a heartbeat, so trials of dead workers on any machine are failed, or a journal file path.

Resume (rerunning the same command): COMPLETE cells are kept; a trial left RUNNING by a dead worker
is failed (journal: its worker's pid, recorded with the host name, no longer exists on this host;
RDB: missed heartbeats), its MLflow run is ended KILLED, and its cell is queued again; the new trial
resumes training from the cell's checkpoint (`<root>/checkpoints/<study>/<cell>/`). A cell whose
training diverged is final: FAIL with its reason, treated as missing by the statistics. Other
failures (an exception, an interrupt) are retried by the next run. Resuming with other settings
than the study was created with is refused.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import optuna

from lossbench import tracking
from lossbench.config import StudyConfig
from lossbench.errors import LossbenchError
from lossbench.metrics import DIRECTIONS, metric_key
from lossbench.metrics.evaluation import EvalResult
from lossbench.study.cell import (
    CellContext,
    CellFn,
    CellResult,
    TrialCallback,
    checkpoint_dir,
    train_and_evaluate,
)
from lossbench.study.grid import Cell, check_identity, grid_cells, identity, train_config_for
from lossbench.study.prepare import preflight, prepare, validate
from lossbench.study.queue import (
    cell_states,
    count_states,
    enqueue_pending,
    open_storage,
    recover,
    sampler,
    storage_name,
)
from lossbench.study.results import load_results, load_study, results_frame, study_cells
from lossbench.study.workers import run_workers

__all__ = [
    "Cell",
    "CellContext",
    "CellFn",
    "CellResult",
    "StudySummary",
    "TrialCallback",
    "cell_states",
    "checkpoint_dir",
    "grid_cells",
    "load_results",
    "load_study",
    "open_storage",
    "results_frame",
    "run_study",
    "study_cells",
    "train_and_evaluate",
    "train_config_for",
    "validate",
]


@dataclass
class StudySummary:
    """The outcome of `run_study`: cell counts by state, trials added, where the results are."""

    name: str
    counts: dict[str, int]
    new_trials: int
    parent_run_id: str
    tracking_uri: str
    storage: str
    worker_errors: list[str] = field(default_factory=list)


def _open_study(config: StudyConfig, root: Path, fingerprint: str) -> optuna.Study:
    """Create or load the study; record its identity, or refuse other settings than recorded."""
    direction = "minimize" if DIRECTIONS[metric_key(config.objective)] == "min" else "maximize"
    study = optuna.create_study(
        study_name=config.name,
        storage=open_storage(config.storage, root),
        direction=direction,
        sampler=sampler(),
        load_if_exists=True,
    )
    current = identity(config, fingerprint)
    if "config" in study.user_attrs:
        check_identity(study.user_attrs["config"], current, config.name)
    else:
        study.set_user_attr("config", current)
    return study


def _start_tracking(
    config: StudyConfig, root: Path, study: optuna.Study, real: EvalResult
) -> tuple[str, str, str]:
    """The MLflow store, experiment and parent run of the study (reopened on resume), with the real
    features; returns (tracking URI, experiment id, parent run id)."""
    tracking_uri = config.tracking_uri or tracking.default_tracking_uri(root)
    artifact_root = root / tracking.ARTIFACTS_DIR if config.tracking_uri is None else None
    experiment_id = tracking.init_experiment(tracking_uri, config.name, artifact_root)
    parent_run_id = tracking.study_run(
        tracking_uri,
        experiment_id,
        config.name,
        tracking.flatten(study.user_attrs["config"]),
        {
            tracking.WEIGHTS_TAG: tracking.weights_kind(config.train, config.eval),
            tracking.STORAGE_TAG: storage_name(config.storage, root),
        },
    )
    if real.real_features is not None and not tracking.has_artifact(
        tracking_uri, parent_run_id, tracking.REAL_FEATURES
    ):
        tracking.log_features(tracking_uri, parent_run_id, real.real_features, tracking.REAL_FEATURES)
    return tracking_uri, experiment_id, parent_run_id


def run_study(
    config: StudyConfig,
    root: str | os.PathLike = "mlruns",
    progress: bool = False,
    cell_fn: CellFn = train_and_evaluate,
) -> StudySummary:
    """Run (or resume) the study `config.name`: every pending cell once, on `config.workers` processes.

    Everything lives under `root`: the journal storage, the MLflow store and artifacts (unless
    `storage` / `tracking_uri` name others), checkpoints and the real-data feature cache.
    `cell_fn` runs one cell (default: train, then evaluate). Raises LossbenchError for bad settings
    (before anything is recorded) and, after recording what they left, when workers died.
    """
    root = Path(root)
    config, data = prepare(config, root)  # data: the train / held-out Split
    real = preflight(config, data)
    study = _open_study(config, root, data.train.fingerprint)
    tracking_uri, experiment_id, parent_run_id = _start_tracking(config, root, study, real)
    n_before = len(study.get_trials(deepcopy=False))  # trials this run adds include the cells it queues
    recover(study, tracking_uri, experiment_id)
    enqueue_pending(study, config)
    errors: list[str] = []
    error: BaseException | None = None
    try:
        mlflow_ids = (tracking_uri, experiment_id, parent_run_id)
        errors = run_workers(study, config, root, mlflow_ids, data, cell_fn, progress)
    except BaseException as e:
        error = e
        raise
    finally:
        recover(study, tracking_uri, experiment_id)
        enqueue_pending(study, config)  # cells left by dead workers wait for the next run
        counts = count_states(cell_states(study), grid_cells(config))
        status = tracking.ending_status(error)
        if status == "FINISHED" and (errors or counts["pending"] or counts["queued"]):
            status = "FAILED"
        tracking.end_run(tracking_uri, parent_run_id, status, "; ".join(errors) or None)
    if errors:
        raise LossbenchError(
            f"{'; '.join(errors)}; what was recorded is kept and unfinished cells are queued: "
            "rerun the same command to continue"
        )
    new_trials = len(study.get_trials(deepcopy=False)) - n_before
    return StudySummary(
        config.name, counts, new_trials, parent_run_id, tracking_uri, storage_name(config.storage, root)
    )
