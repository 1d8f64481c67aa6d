"""Worker processes and the parent's progress display.

Workers are spawned processes, one per device slot; each loads the study and takes queued trials
until none is left. A worker exits as soon as its parent is gone.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from lossbench.config import StudyConfig
from lossbench.errors import DivergedError, lossbench_error_in
from lossbench.study.cell import CellFn, Objective
from lossbench.study.grid import grid_cells
from lossbench.study.queue import cell_states, count_states, open_storage, sampler


@dataclass
class _Job:
    """What one worker process needs (pickled to the spawned process)."""

    objective: Objective
    threads: int
    index: int


def _work_left(study: optuna.Study) -> bool:
    """Whether a queued trial is waiting."""
    return bool(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))


def _exit_with_parent(poll_seconds: float = 2.0) -> None:
    """Exit this worker as soon as its parent is gone (killed without a chance to stop its workers):
    an orphan would go on training unseen. Its RUNNING trial is recovered by the next run."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_seconds)
        os._exit(3)

    threading.Thread(target=watch, name="lossbench-parent-watch", daemon=True).start()


def _worker_main(job: _Job) -> None:
    """Entry point of a worker process: load the study, run trials until none is left."""
    _exit_with_parent()
    torch.set_num_threads(job.threads)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    config = job.objective.config

    def stop_when_done(study: optuna.Study, trial: FrozenTrial) -> None:
        if not _work_left(study):
            study.stop()

    try:
        study = optuna.load_study(
            study_name=config.name,
            storage=open_storage(config.storage, job.objective.root, config, job.objective.tracking_uri),
            sampler=sampler(job.index),
        )
        if _work_left(study):
            study.optimize(job.objective, catch=(DivergedError,), callbacks=[stop_when_done])
    except Exception as e:  # one line for ours, e.g. the database unreachable past the grace period
        known = lossbench_error_in(e)
        if known is None:
            raise
        print(f"error: {known}", file=sys.stderr)
        sys.exit(2)


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[states]}"),
        TimeElapsedColumn(),
        disable=not enabled,
    )


def _show_progress(study: optuna.Study, config: StudyConfig, workers: list, enabled: bool) -> None:
    """Show the grid's progress until every worker has exited."""
    cells = grid_cells(config)
    with _progress(enabled) as bar:
        task = bar.add_task(config.name, total=len(cells), states="")
        while any(w.is_alive() for w in workers):
            counts = count_states(cell_states(study), cells)
            bar.update(
                task,
                completed=counts["done"] + counts["failed"] + counts["pruned"],
                states=", ".join(f"{n} {s}" for s, n in counts.items() if n and s != "done"),
            )
            time.sleep(1.0)


def run_workers(
    study: optuna.Study,
    config: StudyConfig,
    root: Path,
    mlflow_ids: tuple[str, str, str],
    data: Any,
    cell_fn: CellFn,
    progress: bool,
) -> list[str]:
    """Start the workers (spawned processes), show the grid's progress, return what went wrong.

    `mlflow_ids`: tracking URI, experiment id, parent run id."""
    if not _work_left(study):
        return []
    n_waiting = len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
    n_workers = max(1, min(config.workers, n_waiting))
    threads = max(1, len(os.sched_getaffinity(0)) // n_workers)
    context = multiprocessing.get_context("spawn")
    workers = []
    for i in range(n_workers):
        device = config.devices[i % len(config.devices)]
        objective = Objective(config, str(root), *mlflow_ids, data, device, cell_fn)
        workers.append(
            context.Process(
                target=_worker_main, args=(_Job(objective, threads, i),), name=f"lossbench-worker-{i}"
            )
        )
    for w in workers:
        w.start()
    try:
        _show_progress(study, config, workers, progress)
    except BaseException:  # interrupted (Ctrl-C, SIGTERM): stop the workers now, not after their cells
        for w in workers:
            w.terminate()
        raise
    finally:
        for w in workers:
            w.join(timeout=30)
            if w.is_alive():
                w.terminate()
                w.join()
    return [f"{w.name} (pid {w.pid}) exited with code {w.exitcode}" for w in workers if w.exitcode != 0]
