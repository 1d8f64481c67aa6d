"""Where a study cell's wall time goes: training steps, metric computation, and the fixed rest
(MLflow run and params, checkpoints, sample grid, network building, Optuna bookkeeping).

Runs `--cells` cells of a study file in this process, one after the other, as one worker does, with
timers around `train_step` and `evaluate`; the rest of each trial's wall time is its fixed cost.
Timings on a loaded machine are longer; the shares are what the goal (< 10 % fixed) is about.

    python benchmarks/cell_cost.py [--config studies/demo.toml] [--cells 6]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import optuna
import torch

from lossbench.study import cell, run
from lossbench.study.definition import load_study_config
from lossbench.study.prepare import prepare
from lossbench.study.queue import enqueue, open_storage, sampler
from lossbench.training import train

SPENT: dict[str, float] = defaultdict(float)


def _timed(key: str, fn):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            SPENT[key] += time.perf_counter() - start

    return wrapper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="studies/demo.toml")
    parser.add_argument("--cells", type=int, default=6)
    args = parser.parse_args()
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    base = load_study_config(args.config)
    train.train_step = _timed("steps", train.train_step)
    cell.evaluate = _timed("metrics", cell.evaluate)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        config, data = prepare(dataclasses.replace(base, workers=1), root)
        real = run.preflight(config, data)
        study = run._open_study(config, root, data.train.fingerprint)
        ids = run._start_tracking(config, root, study, real, data.train)
        cells = run.grid_cells(config)[: args.cells]
        for c in cells:
            enqueue(study, c)
        objective = cell.Objective(config, str(root), *ids, data, "cpu", cell.train_and_evaluate)
        study = optuna.load_study(study_name=config.name, storage=open_storage(None, root), sampler=sampler())
        start = time.perf_counter()
        study.optimize(objective, n_trials=len(cells))
        wall = time.perf_counter() - start
    fixed = wall - SPENT["steps"] - SPENT["metrics"]
    print(
        f"{args.config}: {len(cells)} cells in {wall:.1f} s ({wall / len(cells):.2f} s per cell), 1 thread, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    for key, seconds in (("training steps", SPENT["steps"]), ("metrics", SPENT["metrics"]), ("fixed", fixed)):
        print(f"  {key:<15} {seconds / len(cells):6.2f} s per cell  {100 * seconds / wall:5.1f} %")


if __name__ == "__main__":
    main()
