"""One "machine" of the cluster tests (tests/test_cluster.py): a tiny study run against shared servers
from its own working folder, with its host identity from $LOSSBENCH_HOST.

    python -c "import cluster_machine; cluster_machine.main()" STORAGE TRACKING_URI NAME

Cells are `slow_cell` (CELL_S seconds of sleep, default 1, then a known value), importable by the
spawned workers when tests/ is on PYTHONPATH.
"""

from __future__ import annotations

import os
import sys
import time

from lossbench.config import DataConfig, EvalConfig, StudyConfig, TrainConfig
from lossbench.errors import LossbenchError
from lossbench.study import Cell, CellResult, run_study


def slow_cell(cell: Cell, ctx) -> CellResult:
    """A stand-in for training that takes CELL_S seconds and logs a curve through the run."""
    for step in range(1, 3):
        time.sleep(float(os.environ.get("CELL_S", "1")) / 2)
        ctx.run.log_metrics({"train/x": cell.seed + step}, step)
    fid = 100 * (cell.loss == "bce") + 10 * cell.lam + cell.seed
    return CellResult({"fid": fid}, {"extractor": "fake", "n_fake": 16}, steps=2)


def config(name: str, storage: str, tracking_uri: str) -> StudyConfig:
    """2 losses × 2 λ × 3 seeds, one worker, heartbeat 1 s, grace 4 s."""
    return StudyConfig(
        name=name,
        losses=("wgangp", "bce"),
        lambdas=(0.5, 3.0),
        seeds=(0, 1, 2),
        data=DataConfig(spec="phantom:32", resolution=32),
        train=TrainConfig(steps=2, batch_size=8, g_width=4, d_width=4, z_dim=8, random_weights=True),
        eval=EvalConfig(
            metrics=("fid",),
            n_fake=16,
            batch_size=16,
            feature_extractor="lossbench-tiny",
            random_weights=True,
        ),
        storage=storage,
        tracking_uri=tracking_uri,
        workers=1,
        heartbeat_s=1,
        grace_s=4,
    )


def main() -> None:
    storage, tracking_uri, name = sys.argv[1:4]
    try:
        summary = run_study(config(name, storage, tracking_uri), root="mlruns", cell_fn=slow_cell)
    except LossbenchError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"{os.environ.get('LOSSBENCH_HOST')}: {summary.counts}")
