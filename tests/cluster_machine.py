"""One "machine" of the cluster tests (tests/test_cluster.py): a tiny study run against shared servers
from its own working folder, with its host identity from $LOSSBENCH_HOST.

    python -c "import cluster_machine; cluster_machine.main()" STORAGE TRACKING_URI NAME [training]

Cells are `slow_cell` (CELL_S seconds of sleep, default 1, then a known value), importable by the
spawned workers when tests/ is on PYTHONPATH; with `training`, the grid of `training_config`, whose
cells really train (`slow_training_cell`).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time

from lossbench.config import DataConfig, EvalConfig, StudyConfig, TrainConfig
from lossbench.errors import lossbench_error_in
from lossbench.study import Cell, CellResult, run_study
from lossbench.study.cell import train_and_evaluate

STEP_S = 0.15  # the sleep slow_training_cell adds to each training step


def slow_cell(cell: Cell, ctx) -> CellResult:
    """A stand-in for training that takes CELL_S seconds and logs a curve through the run."""
    for step in range(1, 3):
        time.sleep(float(os.environ.get("CELL_S", "1")) / 2)
        ctx.run.log_metrics({"train/x": cell.seed + step}, step)
    fid = 100 * (cell.loss == "bce") + 10 * cell.lam + cell.seed
    return CellResult({"fid": fid}, {"extractor": "fake", "n_fake": 16}, steps=2)


def slow_training_cell(cell: Cell, ctx) -> CellResult:
    """`train_and_evaluate`, each training step made STEP_S slower (through its logging, every step),
    so that a machine can be killed between two checkpoints."""
    log = ctx.run.log_metrics

    def slow_log(metrics, step):
        time.sleep(STEP_S)
        log(metrics, step)

    ctx.run.log_metrics = slow_log
    return train_and_evaluate(cell, ctx)


def training_config(name: str, storage: str, tracking_uri: str) -> StudyConfig:
    """`config`'s settings, two cells (bce, λ 0.5, seeds 0 and 1) that train 60 steps, checkpointed every
    10, with the curve metric every 10 (so a best generator is kept); the objective is the final FID."""
    base = config(name, storage, tracking_uri)
    return dataclasses.replace(
        base,
        losses=("bce",),
        lambdas=(0.5,),
        seeds=(0, 1),
        train=dataclasses.replace(base.train, steps=60, checkpoint_every=10, log_every=1),
        eval_every=10,
        curve_metrics=("swd",),
    )


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
    training = sys.argv[4:] == ["training"]
    study = (training_config if training else config)(name, storage, tracking_uri)
    try:
        summary = run_study(study, root="mlruns", cell_fn=slow_training_cell if training else slow_cell)
    except Exception as e:  # as the CLI reports it (lossbench.cli.main)
        known = lossbench_error_in(e)
        if known is None:
            raise
        print(f"error: {known}", file=sys.stderr)
        sys.exit(2)
    print(f"{os.environ.get('LOSSBENCH_HOST')}: {summary.counts}")
