"""Worker processes and the parent's progress display.

Workers are spawned processes, one per worker slot, started before the parent's preflight so that
their start-up (importing torch, optuna, mlflow) overlaps it. Each then waits for its job (the
objective, with the data, sent once), loads the study and takes queued trials until none is left.
Each limits torch's and numpy's BLAS threads to the study's `threads` setting (results depend on the
thread count, so it never follows the machine or the number of waiting cells) and, on CUDA, selects
its device. A worker exits as soon as its parent (its pid passed at spawn) is gone: the spawned target is
`worker_entry.main`, in a light module, which starts watching the parent before this module (and
torch) is imported. With `workers = 0` the same loop (`take_trials`) runs in the calling process
instead (`run_here`).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from threadpoolctl import threadpool_limits

from lossbench.config import StudyConfig
from lossbench.errors import lossbench_error_in
from lossbench.progress import milestone
from lossbench.study import worker_entry
from lossbench.study.cell import CellFn, Objective
from lossbench.study.grid import grid_cells
from lossbench.study.queue import cell_states, count_states, open_storage, sampler, work_left
from lossbench.tracking import FINAL_ERRORS


@dataclass
class _Job:
    """What one worker process needs (pickled to the spawned process once, after it started)."""

    objective: Objective
    threads: int  # the study's `threads` setting: results depend on it, never on the machine
    index: int


def limit_threads_and_select(threads: int, device: str) -> threadpool_limits:
    """This process's share of the machine: `threads` for torch and for numpy's BLAS (which ignores
    torch's setting: FID's matrix square root, KID), and `device` as the current CUDA device.
    Returns the BLAS limiter (its `restore_original_limits()` undoes the BLAS part)."""
    torch.set_num_threads(threads)
    limiter = threadpool_limits(limits=threads)
    if torch.device(device).type == "cuda":
        torch.cuda.set_device(torch.device(device))
    return limiter


def worker_main(inbox: Any) -> None:
    """A worker process, once `worker_entry.main` watches its parent: wait for the job, then run
    trials until none is left."""
    job: _Job = inbox.get()
    limit_threads_and_select(job.threads, job.objective.device)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        take_trials(job.objective, job.index)
    except Exception as e:  # one line for ours, e.g. the database unreachable past the grace period
        known = lossbench_error_in(e)
        if known is None:
            raise
        print(f"error: {known}", file=sys.stderr)
        sys.exit(2)


def take_trials(objective: Objective, index: int, after_each: Callable[[], None] | None = None) -> None:
    """Take queued trials of the study and run their cells until none is left (fused in groups when
    the study fuses); `index` seeds the (never consulted) sampler; `after_each` is called after
    each trial (or group)."""
    config = objective.config
    study = optuna.load_study(
        study_name=config.name,
        storage=open_storage(config.storage, objective.root, config, objective.tracking_uri),
        sampler=sampler(index),
    )

    def stop_when_done(study: optuna.Study, trial: FrozenTrial) -> None:
        if after_each is not None:
            after_each()
        if not work_left(study):
            study.stop()

    if work_left(study) and config.fuse > 1:
        run_fused(objective, study, config.fuse, after_each)
    elif work_left(study):
        study.optimize(objective, catch=tuple(FINAL_ERRORS), callbacks=[stop_when_done])


def run_here(objective: Objective, study: optuna.Study, progress: bool) -> None:
    """`workers = 0`: the cells run in this process, one after another, on the first device (for a
    debugger or a profiler, and the tests); the same numbers as a worker process, which runs the same
    `take_trials` under the same thread limits (restored afterwards). A line (or the bar) per
    finished cell."""
    torch_threads, verbosity = torch.get_num_threads(), optuna.logging.get_verbosity()
    limiter = limit_threads_and_select(objective.config.threads, objective.device)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # as in a worker: a failed cell says so once
    try:
        take_trials(objective, 0, lambda: _show_progress(study, objective.config, [], progress))
    finally:
        limiter.restore_original_limits()  # before torch's: its OpenMP limit was taken after torch's was set
        torch.set_num_threads(torch_threads)
        optuna.logging.set_verbosity(verbosity)


def run_fused(
    objective: Objective, study: optuna.Study, k: int, after_each: Callable[[], None] | None = None
) -> None:
    """A worker's loop for a fused study, instead of `study.optimize`: take up to `k` waiting trials at
    a time and run them as groups (`Objective.run_group`), each trial with a heartbeat on an RDB
    storage, as under `study.optimize`; `after_each` is called after each group."""
    # What study.optimize uses per trial; Optuna has no public form. Imported here, so that only
    # fused studies depend on it.
    from optuna.storages._heartbeat import get_heartbeat_thread

    while work_left(study):
        trials = []
        while len(trials) < k and work_left(study):
            trials.append(study.ask())
        with contextlib.ExitStack() as stack:
            for trial in trials:  # Optuna's own optimize loop does the same per trial
                stack.enter_context(get_heartbeat_thread(trial._trial_id, study._storage))
            objective.run_group(study, trials)
        if after_each is not None:
            after_each()


class Workers:
    """Worker processes started early (`start`), given their jobs once the study's cells are
    queued (`run`), and stopped (`stop`) whatever happened in between."""

    def __init__(self, count: int) -> None:
        context = multiprocessing.get_context("spawn")
        self._inboxes = [context.SimpleQueue() for _ in range(count)]
        self.processes = [
            context.Process(target=worker_entry.main, args=(inbox, os.getpid()), name=f"lossbench-worker-{i}")
            for i, inbox in enumerate(self._inboxes)
        ]

    @classmethod
    def start(cls, count: int) -> Workers:
        """Spawn `count` workers; they import their libraries, then wait for `run`."""
        workers = cls(count)
        for p in workers.processes:
            p.start()
        return workers

    def run(
        self,
        study: optuna.Study,
        config: StudyConfig,
        root: Path,
        mlflow_ids: tuple[str, str, str],
        data: Any,
        cell_fn: CellFn,
        progress: bool,
    ) -> list[str]:
        """Send each needed worker its job, show the grid's progress, return what went wrong; with
        `workers = 0`, run the queued cells in this process instead (`run_here`).

        `mlflow_ids`: tracking URI, experiment id, parent run id. Workers beyond the number of
        queued cells are stopped."""

        def objective(device: str) -> Objective:
            return Objective(config, str(root), *mlflow_ids, data, device, cell_fn)

        n_waiting = len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
        if config.workers == 0:
            if n_waiting:
                run_here(objective(config.devices[0]), study, progress)
            return []
        n_needed = min(len(self.processes), n_waiting)
        for p in self.processes[n_needed:]:  # not needed: nothing recorded yet, stopped at once
            p.terminate()
        for i, inbox in enumerate(self._inboxes[:n_needed]):
            inbox.put(_Job(objective(config.devices[i % len(config.devices)]), config.threads, i))
        try:
            _show_progress(study, config, self.processes, progress)
        except BaseException:  # interrupted (Ctrl-C, SIGTERM): stop the workers now, not after their cells
            self.stop(wait=False)
            raise
        self.stop()
        return [
            f"{p.name} (pid {p.pid}) exited with code {p.exitcode}"
            for p in self.processes[:n_needed]
            if p.exitcode != 0
        ]

    def stop(self, wait: bool = True) -> None:
        """Wait for the workers (up to 30 s each when `wait`), then terminate any still alive.
        Without `wait` (an interrupt, or a failure before `run`) they are terminated at once."""
        for p in self.processes:
            if p.is_alive() and not wait:
                p.terminate()
            p.join(timeout=30 if wait else 5)
            if p.is_alive():
                p.terminate()
                p.join()


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
    """Show the grid's progress until every worker has exited: a bar on a terminal, else (when
    `enabled`) a line each time the number of finished cells changes."""
    cells = grid_cells(config)
    logged = None
    with _progress(enabled) as bar:
        task = bar.add_task(config.name, total=len(cells), states="")
        while True:
            alive = any(w.is_alive() for w in workers)
            counts = count_states(cell_states(study), cells)
            finished = counts["done"] + counts["failed"] + counts["pruned"]
            states = ", ".join(f"{n} {s}" for s, n in counts.items() if n and s != "done")
            bar.update(task, completed=finished, states=states)
            if enabled and finished != logged:
                milestone(
                    f"{config.name}: {finished}/{len(cells)} cells finished"
                    + (f" ({states})" if states else "")
                )
                logged = finished
            if not alive:
                return
            time.sleep(1.0)
