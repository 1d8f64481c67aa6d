"""The trial queue: Optuna storage, the state of each cell, queueing pending cells, recovering the
trials of dead workers.

A cell is queued as a WAITING trial with fixed parameters `loss` (categorical) and `lambda` (a float
distribution, so plots order it) and the user attributes `queued`, `loss`, `lambda`, `seed` (and
`retry_of`, the trial it retries); the seed is no parameter. A worker takes a WAITING trial with
Optuna's atomic WAITING -> RUNNING transition, so two workers never take the same queued trial.

A RUNNING trial whose worker died is failed, its MLflow run ended KILLED and its cell queued again:
on this host when the recorded worker is gone (`liveness`: pid and process start time); on any host,
with an RDB storage, when its heartbeat is older than the grace period. Optuna fails a stale trial
under a row lock, so exactly one machine runs `Requeue` for it; `Requeue` also skips a trial that
already has a retry.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.storages import BaseStorage, JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from lossbench import tracking
from lossbench.config import StudyConfig
from lossbench.errors import StorageError
from lossbench.study import record
from lossbench.study.grid import Cell, grid_cells
from lossbench.study.journal import check_journal, journal_path
from lossbench.study.liveness import Worker, current_worker
from lossbench.study.rdb import RetryingRDBStorage

READ_RETRY_S = 30  # how long a storage opened without a grace period (reading) retries the database
#: Cell states, by precedence (the best trial of a cell decides its state).
STATES = ("done", "running", "queued", "failed", "pruned", "pending")
CellStates = dict[Cell, tuple[str, FrozenTrial | None]]


def is_rdb(storage: str | None) -> bool:
    """Whether `storage` is an RDB URL (heartbeats; may be shared by machines) rather than a journal."""
    return journal_path(storage, ".") is None


def open_storage(
    storage: str | None,
    root: str | os.PathLike = "mlruns",
    config: StudyConfig | None = None,
    tracking_uri: str | None = None,
) -> BaseStorage:
    """The Optuna storage: a journal file (default `<root>/optuna-journal.log`, or a path), or an RDB
    URL (`RetryingRDBStorage`). With the study's `config` an RDB storage records heartbeats every
    `config.heartbeat_s`, fails trials stale for `config.grace_s` (then `Requeue` on `tracking_uri`)
    and retries an unreachable database for `config.grace_s`; without it, it only reads and writes."""
    path = journal_path(storage, root)
    if path is None:
        if config is None:
            return RetryingRDBStorage(storage, READ_RETRY_S)
        return RetryingRDBStorage(
            storage,
            config.grace_s,
            heartbeat_interval=config.heartbeat_s,
            grace_period=config.grace_s,
            heartbeat_stale_trial_callback=Requeue(tracking_uri) if tracking_uri else None,
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    check_journal(path)
    return JournalStorage(JournalFileBackend(str(path)))


def storage_name(storage: str | None, root: str | os.PathLike) -> str:
    """Where the study's trials are stored, as shown to the user."""
    return storage or str(journal_path(storage, root))


def sampler(seed: int = 0) -> optuna.samplers.BaseSampler:
    """A sampler that is never consulted: every cell is queued with fixed parameters, and a trial
    that was not queued is pruned before it suggests anything."""
    return optuna.samplers.RandomSampler(seed=seed)


def trial_cell(trial: FrozenTrial | optuna.Trial) -> Cell | None:
    """The cell of a trial, from the user attributes set when it was queued."""
    attrs = trial.user_attrs
    if not all(k in attrs for k in ("loss", "lambda", "seed")):
        return None
    return Cell(attrs["loss"], float(attrs["lambda"]), int(attrs["seed"]))


def is_queued(trial: FrozenTrial | optuna.Trial) -> bool:
    """Whether the trial was queued by lossbench (rather than created by Optuna for a free worker)."""
    return bool(trial.user_attrs.get(record.QUEUED))


def work_left(study: optuna.Study) -> bool:
    """Whether a queued trial is waiting."""
    return bool(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))


def is_final_failure(trial: FrozenTrial) -> bool:
    """A cell that diverged or failed from a config error (`tracking.FINAL_ERRORS`): never retried."""
    reason = str(trial.user_attrs.get(record.FAIL_REASON, ""))
    prefixes = tuple(f"{p}:" for p in tracking.FINAL_ERRORS.values())
    return trial.state == TrialState.FAIL and reason.startswith(prefixes)


def _state(trial: FrozenTrial) -> str:
    if trial.state == TrialState.COMPLETE:
        return "done"
    if trial.state == TrialState.RUNNING:
        return "running"
    if trial.state == TrialState.WAITING:
        return "queued"
    if trial.state == TrialState.PRUNED:
        return "pruned"
    return "failed" if is_final_failure(trial) else "pending"


def cell_states(study: optuna.Study) -> CellStates:
    """Each cell seen in the study -> (state, deciding trial). States, by precedence: done, running,
    queued, failed (diverged), pruned, pending (no trial yet, or only retryable failures)."""
    best: CellStates = {}
    for t in study.get_trials(deepcopy=False):
        cell = trial_cell(t)
        if cell is None or record.SKIPPED in t.user_attrs:
            continue
        state = _state(t)
        held = best[cell][0] if cell in best else None
        if held is None or STATES.index(state) < STATES.index(held) or state == held == "pending":
            best[cell] = (state, t)
    return best


def count_states(states: CellStates, cells: Sequence[Cell]) -> dict[str, int]:
    """How many of `cells` are in each state (a cell without a trial is pending)."""
    counts = dict.fromkeys(STATES, 0)
    for cell in cells:
        counts[states.get(cell, ("pending", None))[0]] += 1
    return counts


def shared_and_running(study: optuna.Study, config: StudyConfig) -> bool:
    """Whether the storage has heartbeats (RDB: other machines may share it) and a cell of the grid is
    RUNNING (called when this machine's workers have stopped, so it runs elsewhere)."""
    if not is_rdb(config.storage):
        return False
    return count_states(cell_states(study), grid_cells(config))["running"] > 0


def enqueue(study: optuna.Study, cell: Cell, **user_attrs: Any) -> None:
    """Queue `cell` as a WAITING trial with fixed parameters loss and lambda; the seed is a replicate,
    not a parameter (Optuna's importance and best trial are about loss and lambda), and is a user
    attribute like the loss and lambda the queue reads back (`trial_cell`)."""
    params = {"loss": cell.loss, "lambda": cell.lam}
    study.enqueue_trial(params, user_attrs={record.QUEUED: True, **params, "seed": cell.seed, **user_attrs})


def enqueue_pending(study: optuna.Study, config: StudyConfig) -> None:
    """Queue every cell of the grid that has no COMPLETE, RUNNING, WAITING or final trial."""
    states = cell_states(study)
    for cell in grid_cells(config):
        state, last = states.get(cell, ("pending", None))
        if state == "pending":
            enqueue(study, cell, **({record.RETRY_OF: last.number} if last else {}))


def put_retries_first(study: optuna.Study) -> None:
    """Queue the cells that never ran behind the retried ones, so that a cell with a checkpoint (a
    retry of a trial whose worker died) finishes before new cells start; Optuna takes WAITING trials
    in creation order. Each WAITING never-ran trial created before the last WAITING retry is taken
    (Optuna's atomic WAITING -> RUNNING, so a worker that took it first keeps it; this process is
    recorded as its worker, so its death leaves it to `recover`), marked `skipped`, pruned, and its
    cell queued again."""
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    last_retry = max((t.number for t in waiting if record.RETRY_OF in t.user_attrs), default=None)
    if last_retry is None:
        return
    storage = study._storage  # Optuna's own pop of a WAITING trial goes through the storage too
    for t in waiting:
        cell = trial_cell(t)
        if t.number > last_retry or record.RETRY_OF in t.user_attrs or cell is None:
            continue
        if not storage.set_trial_state_values(t._trial_id, TrialState.RUNNING):
            continue  # a worker took it
        for key, value in current_worker().attrs().items():
            storage.set_trial_user_attr(t._trial_id, key, value)
        storage.set_trial_user_attr(t._trial_id, record.SKIPPED, "queued again behind retried cells")
        storage.set_trial_state_values(t._trial_id, TrialState.PRUNED)
        enqueue(study, cell)


def check_known_runs(study_name: str, storage: BaseStorage, client: Any, force: bool) -> list[Any]:
    """StorageError when MLflow (`client`, None: no store) holds COMPLETE trial runs of the study
    that its Optuna storage does not know (the journal was emptied or replaced): rerunning would
    run those cells twice. With `force`, those runs are tagged `lossbench.forgotten` and the cells
    run again. Returns the store's finished trial runs (for `untracked_trials`: the other way round)."""
    finished = tracking.completed_trial_runs(client, study_name) if client is not None else []
    if not finished:
        return finished
    try:
        trials = optuna.load_study(study_name=study_name, storage=storage).get_trials(deepcopy=False)
    except KeyError:
        trials = []
    known = {t.user_attrs.get(record.RUN_ID) for t in trials}
    lost = [r for r in finished if tracking.recorded_run_id(r) not in known]
    if lost and not force:
        raise StorageError(
            f"MLflow holds {len(lost)} finished trial run(s) of study {study_name!r} that its Optuna "
            "storage does not know (emptied or replaced?); restore the storage, or rerun with --force "
            "to run those cells again"
        )
    for run in lost:
        client.set_tag(run.info.run_id, tracking.FORGOTTEN_TAG, "its Optuna trial was lost; cell rerun")
    return finished


def untracked_trials(study: optuna.Study, finished: list[Any]) -> list[FrozenTrial]:
    """The study's COMPLETE trials whose MLflow run the store lacks (`finished`: the store's finished
    trial runs, as `check_known_runs` returns them), neither under its id nor restored (the store was
    emptied or replaced); `restore_untracked` writes them back."""
    present = {tracking.recorded_run_id(r) for r in finished}
    return [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if record.SKIPPED not in t.user_attrs
        and trial_cell(t) is not None
        and t.user_attrs.get(record.RUN_ID) not in present
    ]


def restore_untracked(
    trials: list[FrozenTrial], study_name: str, tracking_uri: str, experiment_id: str, parent_run_id: str
) -> None:
    """Write each trial's MLflow run again from its Optuna records (`tracking.restore_trial_run`):
    cell, trial number, settings and final metrics."""
    for t in trials:
        cell = trial_cell(t)
        name = tracking.trial_run_name(cell.loss, cell.lam, cell.seed)
        tags = tracking.trial_tags(study_name, t.number, cell.loss, cell.lam, cell.seed) | record.settings(
            t.user_attrs
        )
        metrics = record.metrics(t.user_attrs)
        lost = str(t.user_attrs.get(record.RUN_ID))
        tracking.restore_trial_run(tracking_uri, experiment_id, parent_run_id, name, tags, metrics, lost)


@dataclass(frozen=True)
class Requeue:
    """What is done to a trial whose worker died, once, by the process that failed it: end its MLflow
    run KILLED with the reason, queue its cell again (unless a retry of it exists) ahead of the cells
    that never ran (`put_retries_first`; `reorder=False` leaves that to a caller that fails several
    trials, which would otherwise queue the new cells again once per retry). Also Optuna's
    `heartbeat_stale_trial_callback` of RDB storages (which cannot add attributes to a failed trial)."""

    tracking_uri: str
    reason: str = "no heartbeat for the grace period"
    reorder: bool = True

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if run_id := trial.user_attrs.get(record.RUN_ID):
            worker = Worker.from_attrs(trial.user_attrs)
            tracking.end_run(self.tracking_uri, run_id, "KILLED", f"{self.reason} (worker {worker})")
        cell = trial_cell(trial)
        retried = any(
            t.user_attrs.get(record.RETRY_OF) == trial.number for t in study.get_trials(deepcopy=False)
        )
        if cell is not None and is_queued(trial) and record.SKIPPED not in trial.user_attrs and not retried:
            enqueue(study, cell, retry_of=trial.number)
            if self.reorder:
                put_retries_first(study)


def _fail_dead_local_workers(study: optuna.Study, tracking_uri: str) -> None:
    """Fail the RUNNING trials whose worker ran on this host and is gone (pid gone or reused)."""
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = Worker.from_attrs(t.user_attrs)
        if worker is None or worker.alive_here() is not False:
            continue
        reason = f"worker pid {worker.pid} died (or its pid was reused)"
        try:
            # Optuna has no public setter for another process's trial; its own callbacks use the storage.
            study._storage.set_trial_user_attr(t._trial_id, record.FAIL_REASON, reason)
            failed = study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:  # another process failed it first
            continue
        if failed:
            Requeue(tracking_uri, reason, reorder=False)(study, t)  # `recover` reorders once after


def recover(study: optuna.Study, tracking_uri: str, experiment_id: str) -> None:
    """Fail the trials of dead workers, end their MLflow runs KILLED, queue their cells again.

    On this host a worker is dead when its pid is gone or belongs to a process started at another
    time (journal and RDB storages); other hosts' trials are failed by heartbeat (RDB storages only).
    Any child run still RUNNING whose trial is not RUNNING is ended KILLED. Retried cells are then
    queued before the cells that never ran (`put_retries_first`).
    """
    _fail_dead_local_workers(study, tracking_uri)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # a no-op unless the storage has a heartbeat (RDB)
    running = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    for run in tracking.running_child_runs(tracking_uri, experiment_id):
        if tracking.run_trial_number(run) not in running:
            tracking.end_run(tracking_uri, run.info.run_id, "KILLED", "its worker died")
    put_retries_first(study)


def admit(trial: optuna.Trial, config: StudyConfig) -> Cell:
    """The trial's cell, or TrialPruned for a trial that must not run: a trial whose cell already has
    a COMPLETE trial, or a RUNNING or WAITING one with a lower number, is pruned (user attribute
    `skipped`), as is a trial that was not queued. Of two trials queued for one cell (two machines
    queueing at once), only the first runs, whichever worker takes which first."""
    study = trial.study
    if not is_queued(trial):
        trial.set_user_attr(record.SKIPPED, "not a queued cell")
        raise optuna.TrialPruned()
    loss = trial.suggest_categorical("loss", config.losses)
    lam = trial.suggest_float("lambda", min(config.lambdas), max(config.lambdas))
    cell = Cell(loss, float(lam), int(trial.user_attrs["seed"]))
    taken = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)
    for t in study.get_trials(deepcopy=False, states=taken):
        if t.number == trial.number or record.SKIPPED in t.user_attrs or trial_cell(t) != cell:
            continue
        if t.state == TrialState.COMPLETE or t.number < trial.number:
            trial.set_user_attr(record.SKIPPED, f"cell already taken by trial {t.number}")
            raise optuna.TrialPruned()
    return cell
