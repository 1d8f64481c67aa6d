"""The trial queue: Optuna storage, the state of each cell, queueing pending cells, recovering the
trials of dead workers.

A cell is queued as a WAITING trial with fixed parameters `loss` (categorical) and `lambda` (a float
distribution, so plots order it) and the user attributes `queued`, `loss`, `lambda`, `seed` (and
`retry_of`, the trial it retries); the seed is no parameter. A worker takes a WAITING trial with
Optuna's atomic WAITING -> RUNNING transition, so two workers never take the same queued trial.
"""

from __future__ import annotations

import os
import socket
import warnings
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from lossbench import tracking
from lossbench.config import StudyConfig
from lossbench.study.grid import Cell, grid_cells
from lossbench.study.journal import journal_path

HEARTBEAT_S = 60  # RDB storages: a trial without a heartbeat for GRACE_S is failed
GRACE_S = 180
#: Cell states, by precedence (the best trial of a cell decides its state).
STATES = ("done", "running", "queued", "failed", "pruned", "pending")
METRIC_ATTR = "metric."  # user attribute prefix of a trial's final metrics
CellStates = dict[Cell, tuple[str, FrozenTrial | None]]


def open_storage(storage: str | None, root: str | os.PathLike = "mlruns") -> BaseStorage:
    """The Optuna storage: a journal file (default `<root>/optuna-journal.log`, or a path), or an RDB URL."""
    path = journal_path(storage, root)
    if path is None:
        return RDBStorage(storage, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S)
    path.parent.mkdir(parents=True, exist_ok=True)
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
    return bool(trial.user_attrs.get("queued"))


def is_final_failure(trial: FrozenTrial) -> bool:
    """A diverged cell: FAIL, never retried."""
    reason = str(trial.user_attrs.get("fail_reason", ""))
    return trial.state == TrialState.FAIL and reason.startswith("diverged")


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
        if cell is None or "skipped" in t.user_attrs:
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


def enqueue(study: optuna.Study, cell: Cell, **user_attrs: Any) -> None:
    """Queue `cell` as a WAITING trial with fixed parameters loss and lambda; the seed is a replicate,
    not a parameter (Optuna's importance and best trial are about loss and lambda), and is a user
    attribute like the loss and lambda the queue reads back (`trial_cell`)."""
    params = {"loss": cell.loss, "lambda": cell.lam}
    study.enqueue_trial(params, user_attrs={"queued": True, **params, "seed": cell.seed, **user_attrs})


def enqueue_pending(study: optuna.Study, config: StudyConfig) -> None:
    """Queue every cell of the grid that has no COMPLETE, RUNNING, WAITING or final trial."""
    states = cell_states(study)
    for cell in grid_cells(config):
        state, last = states.get(cell, ("pending", None))
        if state == "pending":
            enqueue(study, cell, **({"retry_of": last.number} if last else {}))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        pass
    return True


def recover(study: optuna.Study, tracking_uri: str, experiment_id: str) -> None:
    """Fail the trials of dead workers and end their MLflow runs KILLED.

    Journal storage has no heartbeat: a RUNNING trial is dead when its recorded worker pid no
    longer exists on this host (trials of other hosts are left alone). RDB storages fail stale
    trials by heartbeat. Any child run still RUNNING whose trial is not RUNNING is ended KILLED.
    """
    host = socket.gethostname()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = t.user_attrs.get("pid")
        if t.user_attrs.get("host") == host and pid is not None and not _pid_alive(pid):
            # Optuna has no public setter for another process's trial; its own callbacks use the storage.
            study._storage.set_trial_user_attr(t._trial_id, "fail_reason", f"worker pid {pid} died")
            study.tell(t.number, state=TrialState.FAIL)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # a no-op unless the storage has a heartbeat (RDB)
    running = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    for run in tracking.running_child_runs(tracking_uri, experiment_id):
        if tracking.run_trial_number(run) not in running:
            tracking.end_run(tracking_uri, run.info.run_id, "KILLED", "its worker died")
