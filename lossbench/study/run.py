"""Running a study: prepare, open or resume it, queue its cells, start the workers, summarise.

With an RDB storage (several machines, docs/cluster.md), a machine whose workers found no queued
cell while cells still run elsewhere waits, polling every `heartbeat_s`, and takes over the cells
of machines whose heartbeats stopped; it returns when the grid is done."""

from __future__ import annotations

import os
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import pandas as pd
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from lossbench import tracking
from lossbench.config import StudyConfig, lambda_text
from lossbench.data import ImageDataset
from lossbench.errors import DataError, LossbenchError, first_line
from lossbench.files import check_folder
from lossbench.metrics import DIRECTIONS, metric_key
from lossbench.metrics.evaluation import EvalResult
from lossbench.progress import stage
from lossbench.study.cell import (
    CellFn,
    train_and_evaluate,
)
from lossbench.study.grid import check_identity, grid_cells, identity
from lossbench.study.journal import journal_path
from lossbench.study.prepare import preflight, prepare
from lossbench.study.queue import (
    cell_states,
    check_known_runs,
    count_states,
    enqueue_pending,
    open_storage,
    recover,
    restore_untracked,
    sampler,
    shared_and_running,
    storage_name,
    trial_cell,
    untracked_trials,
)
from lossbench.study.results import cell_problems, results_frame
from lossbench.study.workers import Workers
from lossbench.training.train import save_real_grid


@dataclass
class StudySummary:
    """The outcome of `run_study`: cell counts by state, trials added, where the results are."""

    name: str
    counts: dict[str, int]
    new_trials: int
    parent_run_id: str
    tracking_uri: str
    storage: str
    experiment_id: str = ""
    objective: str = "fid"
    worker_errors: list[str] = field(default_factory=list)
    verdict: list[str] = field(default_factory=list)  # markdown lines, the objective's answer first


def _tracking_uri(config: StudyConfig, root: Path) -> str:
    return config.tracking_uri or tracking.default_tracking_uri(root)


def _finished(config: StudyConfig, root: Path) -> bool:
    """Whether the study exists in a journal and every cell of the grid has its final state (done or
    diverged): read only, nothing created. RDB storages (shared by machines) always say no."""
    path = journal_path(config.storage, root)
    if path is None or not path.is_file():
        return False
    try:
        study = optuna.load_study(study_name=config.name, storage=open_storage(config.storage, root))
    except KeyError:
        return False
    counts = count_states(cell_states(study), grid_cells(config))
    return not (counts["pending"] or counts["queued"] or counts["running"])


def _open_study(config: StudyConfig, root: Path, fingerprint: str) -> optuna.Study:
    """Create or load the study; record its identity, or refuse other settings than recorded."""
    direction = "minimize" if DIRECTIONS[metric_key(config.objective)] == "min" else "maximize"
    study = optuna.create_study(
        study_name=config.name,
        storage=open_storage(config.storage, root, config, _tracking_uri(config, root)),
        direction=direction,
        sampler=sampler(),
        load_if_exists=True,
    )
    if study.metric_names is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([metric_key(config.objective)])
    current = identity(config, fingerprint)
    if "config" in study.user_attrs:
        check_identity(study.user_attrs["config"], current, config.name)
    else:
        study.set_user_attr("config", current)
    return study


def _log_real_features(tracking_uri: str, parent_run_id: str, real: EvalResult) -> None:
    """Log the real features and their class names to the parent run, each only where it is absent:
    a study begun before class names were logged gains them when it resumes."""
    parts = ((real.real_features, tracking.REAL_FEATURES), (real.real_classes, tracking.REAL_CLASSES))
    for values, path in parts:
        if values is not None and not tracking.has_artifact(tracking_uri, parent_run_id, path):
            tracking.log_features(tracking_uri, parent_run_id, values, path)


def _start_tracking(
    config: StudyConfig, root: Path, study: optuna.Study, real: EvalResult | None, train: ImageDataset
) -> tuple[str, str, str]:
    """The MLflow store, experiment and parent run of the study (reopened on resume), with the real
    features (`real`, None: not computed by this run) and a grid of training images; returns
    (tracking URI, experiment id, parent run id)."""
    tracking_uri = _tracking_uri(config, root)
    artifact_root = root / tracking.ARTIFACTS_DIR if config.tracking_uri is None else None
    experiment_id = tracking.init_experiment(tracking_uri, config.name, artifact_root)
    weights = tracking.weights_kind(config.train, config.eval)
    warning = tracking.weights_warning(config.train, config.eval)
    parent_run_id = tracking.study_run(
        tracking_uri,
        experiment_id,
        config.name,
        tracking.flatten(study.user_attrs["config"]),
        {
            tracking.WEIGHTS_TAG: weights,
            tracking.STORAGE_TAG: storage_name(config.storage, root),
            tracking.DESCRIPTION_TAG: _description(config),
            **({tracking.WARNING_TAG: warning} if warning else {}),
        },
    )
    if real is not None:
        _log_real_features(tracking_uri, parent_run_id, real)
    if not tracking.has_artifact(tracking_uri, parent_run_id, tracking.REAL_GRID):
        with tempfile.TemporaryDirectory() as tmp:
            grid = save_real_grid(train, Path(tmp, os.path.basename(tracking.REAL_GRID)), config.train)
            MlflowClient(tracking_uri).log_artifact(
                parent_run_id, str(grid), os.path.dirname(tracking.REAL_GRID)
            )
    return tracking_uri, experiment_id, parent_run_id


def _check_tracked(
    study: optuna.Study,
    finished: list,
    tracking_uri: str,
    experiment_id: str,
    parent_run_id: str,
    repair: bool,
) -> None:
    """Name the finished cells whose MLflow runs the store lost (`finished`: the store's finished
    trial runs); with `repair`, write them back."""
    lost = untracked_trials(study, finished)
    if not lost:
        return
    cells = ", ".join(str(trial_cell(t)) for t in lost[:3]) + (", ..." if len(lost) > 3 else "")
    if repair:
        restore_untracked(lost, study.study_name, tracking_uri, experiment_id, parent_run_id)
        print(
            f"restored the MLflow runs of {len(lost)} finished cell(s) from the Optuna records ({cells})",
            file=sys.stderr,
        )
        return
    print(
        f"warning: the MLflow store lacks the runs of {len(lost)} finished cell(s) ({cells}): emptied or "
        "replaced? rerun with --repair-tracking to write their metrics and settings back from the Optuna "
        "records (samples and features are not recoverable)",
        file=sys.stderr,
    )


def _description(config: StudyConfig, verdict: list[str] | None = None) -> str:
    """The parent run's description (markdown): the verdict first once cells are done (MLflow shows
    a description's first lines), then the grid and where the rest is."""
    weights = tracking.weights_kind(config.train, config.eval)
    lambdas = ", ".join(lambda_text(lam) for lam in config.lambdas)
    lines = [
        *(verdict or []),
        f"Study **{config.name}**: losses {', '.join(config.losses)}; λ {lambdas}; "
        f"seeds {', '.join(map(str, config.seeds))}; objective {config.objective}; "
        f"weights: {weights}; data: {config.data.spec} at {config.data.resolution} px",
        f"Per-cell means and sds over seeds are the table `{tracking.SUMMARY_TABLE}` (Artifacts); "
        "the best cell per metric is the tag `lossbench.best.<metric>`; the "
        f"verdict's tables are `{tracking.VERDICT_FILE}`; every table and figure: "
        f"`lossbench report {config.name} --out report/`.",
    ]
    return tracking.describe(lines, tracking.weights_warning(config.train, config.eval))


def _verdict_text(config: StudyConfig, frame: pd.DataFrame, problems: pd.DataFrame) -> tuple[list[str], str]:
    """The verdict as markdown lines (the objective's answer first, then the other metrics', the
    sentences where analyses disagree, the correction family) and as a markdown document with its
    tables; a line saying why where the results do not allow one yet."""
    from lossbench.analysis import analyze  # statsmodels: loaded when a study has results
    from lossbench.analysis.formatting import correction_sentence, verdict_lines, verdict_markdown

    try:
        result = analyze(frame, problems=problems, name=config.name)
    except (DataError, ValueError, ArithmeticError) as e:  # too few results; a fit that fails
        return [f"**Verdict**: none yet ({first_line(e)})"], ""
    objective = metric_key(config.objective)
    lines = verdict_lines(result, first=objective)
    if not lines:
        return ["**Verdict**: none (no two cells of the grid can be compared yet)"], ""
    text = [f"**Verdict** {lines[0]}", *(f"- {line}" for line in lines[1:])]
    text.append(correction_sentence(result) + f"; alpha = {result.alpha:g}.")
    return text, verdict_markdown(result, first=objective)


def _log_summary(
    config: StudyConfig, root: Path, study: optuna.Study, tracking_uri: str, parent_run_id: str
) -> list[str]:
    """Per-cell summaries over seeds, the best cells and the verdict on the parent run (description
    and `verdict.md`), and the verdict as the study's optuna-dashboard note where that is installed;
    returns the verdict's lines."""
    from lossbench.analysis import stats

    frame = results_frame(config.name, config.storage, root)
    metrics = [k for k in DIRECTIONS if k in frame.columns]
    summary = pd.concat([stats.summarize(frame, m) for m in metrics], ignore_index=True)
    tracking.log_study_summary(tracking_uri, parent_run_id, summary, stats.best_cells(summary))
    lines, document = _verdict_text(config, frame, cell_problems(config.name, config.storage, root))
    tracking.log_verdict(tracking_uri, parent_run_id, _description(config, lines), document)
    try:
        from optuna_dashboard import save_note
    except ImportError:  # the optional extra lossbench[dashboard]
        return lines
    save_note(study, document or "\n\n".join(lines))
    return lines


def run_study(
    config: StudyConfig,
    root: str | os.PathLike = "mlruns",
    progress: bool = False,
    cell_fn: CellFn = train_and_evaluate,
    force: bool = False,
    repair_tracking: bool = False,
) -> StudySummary:
    """Run (or resume) the study `config.name`: every pending cell once, on `config.workers` processes
    (0: in this process, one cell after another; `Workers.run`).

    Everything lives under `root`: the journal storage, the MLflow store and artifacts (unless
    `storage` / `tracking_uri` name others), checkpoints and the real-data feature cache.
    `cell_fn` runs one cell (default: train, then evaluate). `force` reruns cells whose finished
    MLflow runs the Optuna storage has lost (`queue.check_known_runs`); `repair_tracking` writes
    back the runs of finished cells that the MLflow store lost (`queue.restore_untracked`).
    Raises LossbenchError for bad settings or damaged storage (before anything is recorded) and,
    after recording what they left, when workers died or cells of the grid are still running
    elsewhere.
    """
    root = check_folder(root, "study root")
    stage(f"loading data {config.data.spec!r} at {config.data.resolution} px", progress)
    config, data = prepare(config, root)  # data: the train / held-out Split
    finished = _finished(config, root)  # a rerun of a finished study: no worker, no preflight
    n_workers = 0 if finished else min(config.workers, len(grid_cells(config)))
    if not finished:
        stage(
            f"starting {n_workers} worker(s); preflight: evaluating {config.eval.n_fake} real images",
            progress,
        )
    workers = Workers.start(n_workers)  # their start-up (imports) overlaps the preflight
    try:
        real = None if finished else preflight(config, data)
        client = tracking.tracking_client(config.tracking_uri, root)
        finished_runs = check_known_runs(config.name, open_storage(config.storage, root), client, force)
        stage("opening the study and its MLflow runs", progress)
        study = _open_study(config, root, data.train.fingerprint)
        tracking_uri, experiment_id, parent_run_id = _start_tracking(config, root, study, real, data.train)
        _check_tracked(study, finished_runs, tracking_uri, experiment_id, parent_run_id, repair_tracking)
        n_before = len(study.get_trials(deepcopy=False))  # trials this run adds include the cells it queues
        recover(study, tracking_uri, experiment_id)
        enqueue_pending(study, config)
    except BaseException:
        workers.stop(wait=False)
        raise
    errors: list[str] = []
    error: BaseException | None = None
    try:
        mlflow_ids = (tracking_uri, experiment_id, parent_run_id)
        errors = workers.run(study, config, root, mlflow_ids, data, cell_fn, progress)
        while not errors and shared_and_running(study, config):  # other machines' cells: wait, take over
            time.sleep(config.heartbeat_s)
            recover(study, tracking_uri, experiment_id)
            if study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
                workers = Workers.start(n_workers)
                errors = workers.run(study, config, root, mlflow_ids, data, cell_fn, progress)
    except BaseException as e:
        error = e
        raise
    finally:
        recover(study, tracking_uri, experiment_id)
        enqueue_pending(study, config)  # cells left by dead workers wait for the next run
        counts = count_states(cell_states(study), grid_cells(config))
        verdict = _log_summary(config, root, study, tracking_uri, parent_run_id) if counts["done"] else []
        status = tracking.ending_status(error)
        if status == "FINISHED" and (errors or counts["pending"] or counts["queued"]):
            status = "FAILED"
        if status != "FINISHED" or not counts["running"]:  # else still running elsewhere: left RUNNING
            tracking.end_run(tracking_uri, parent_run_id, status, "; ".join(errors) or None)
    if errors:
        raise LossbenchError(
            f"{'; '.join(errors)}; what was recorded is kept and unfinished cells are queued: "
            "rerun the same command to continue"
        )
    if counts["running"]:
        raise LossbenchError(
            f"{counts['running']} cell(s) of study {config.name!r} are still running in other "
            "processes (see 'lossbench study status'); rerun the same command once they have finished"
        )
    new_trials = len(study.get_trials(deepcopy=False)) - n_before
    return StudySummary(
        config.name,
        counts,
        new_trials,
        parent_run_id,
        tracking_uri,
        storage_name(config.storage, root),
        experiment_id,
        config.objective,
        verdict=verdict,
    )
