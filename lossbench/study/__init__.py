"""Optuna studies over the full (loss × λ × seed) grid: one trial is one cell, run exactly once.

The flow of `run_study`, one module per step:
- `definition`: study files (TOML) and overrides, validation (light: no torch, optuna or mlflow);
- `prepare`: validate, check the weight files, load the data, evaluate real images once;
- `grid`: the cells, the study's identity (refusing to resume with other settings), a cell's config;
- `queue`: the Optuna storage, cell states, queueing pending cells, recovering dead workers;
- `workers`: worker processes taking queued trials, the progress display;
- `cell`: one trial: train, evaluate, record (`trial_run`: Optuna user attributes, an MLflow child
  run), taking over another machine's checkpoint (`handover`);
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
is failed (on this host: its worker's pid no longer exists or belongs to a process started at
another time, `liveness`; other hosts, RDB only: missed heartbeats), its MLflow run is ended KILLED,
and its cell is queued again; the new trial resumes training from the cell's checkpoint
(`<root>/checkpoints/<study>/<cell>/`; with a tracking server, a cell taken over by another machine
downloads the last checkpoint the dead one uploaded, `handover`, docs/cluster.md).

Several machines (an RDB storage, docs/cluster.md): each runs the same command; when its workers find
no queued cell while cells still run elsewhere, it waits (polling every `heartbeat_s`) and takes over
the cells of machines that stop sending heartbeats, so every machine returns when the grid is done.
A cell whose training diverged is final: FAIL with its reason, treated as missing by the statistics. Other
failures (an exception, an interrupt) are retried by the next run. Resuming with other settings
than the study was created with is refused.
"""

from __future__ import annotations

import importlib
from typing import Any

#: Public name -> the module that defines it. Imported on first use, so that importing a light
#: submodule (`lossbench.study.journal`, for a quick answer before optuna and torch) stays light.
_HOMES = {
    "Cell": "lossbench.study.grid",
    "grid_cells": "lossbench.study.grid",
    "train_config_for": "lossbench.study.grid",
    "CellContext": "lossbench.study.cell",
    "CellFn": "lossbench.study.cell",
    "CellResult": "lossbench.study.cell",
    "TrialCallback": "lossbench.study.cell",
    "checkpoint_dir": "lossbench.study.cell",
    "train_and_evaluate": "lossbench.study.cell",
    "cell_states": "lossbench.study.queue",
    "open_storage": "lossbench.study.queue",
    "load_results": "lossbench.study.results",
    "load_study": "lossbench.study.results",
    "results_frame": "lossbench.study.results",
    "study_cells": "lossbench.study.results",
    "StudySummary": "lossbench.study.run",
    "run_study": "lossbench.study.run",
    "validate": "lossbench.study.definition",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
