"""What a study will cost on this machine, measured before it runs (`lossbench study --plan`).

Each cell kind, a loss with λ = 0 or λ > 0 (λ's value does not change the work, only whether the
perceptual network runs), is built as a worker builds it and timed over a few generator steps after
warm-up (the median of REPEATS timings). One curve evaluation and the final evaluation without the
utility judge are timed on an untrained generator: what they cost does not depend on what the
generator has learnt. The judge is timed over a few classifier steps. Nothing is recorded: the data
is loaded and the real features are computed as the study's preflight does, into a temporary cache.

Conventions: seconds. Everything is timed in this one process with the study's `threads` torch
threads; on a CPU, the study's W workers share its cores and memory bus, so W - 1 spawned processes
train beside the timings as the other workers would (`_company`). Cells go to the first free worker
in grid order, as the study's queue hands them out. Not counted: checkpoints, sample grids and
MLflow writes (a few per cent, benchmarks/cell_cost.py), and fused training (`fuse` > 1): every
cell is timed alone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import heapq
import multiprocessing
import os
import queue
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from lossbench.config import StudyConfig, lambda_text
from lossbench.errors import LossbenchError
from lossbench.metrics import resolve_metrics
from lossbench.metrics.compute import utility_settings
from lossbench.metrics.evaluation import evaluate
from lossbench.metrics.utility import train_classifier
from lossbench.progress import duration
from lossbench.study.grid import Cell, grid_cells, train_config_for
from lossbench.study.prepare import preflight, prepare
from lossbench.study.workers import limit_threads_and_select
from lossbench.training.train import Run, build, train_step

if TYPE_CHECKING:
    from lossbench.data.split import Split

WARMUP_STEPS = 2  # untimed steps before each timing (first-call allocations, lazy init)
STEPS = 5  # timed generator steps per cell kind, in each of REPEATS timings
JUDGE_STEPS = 10  # timed classifier steps of the utility judge, in each of REPEATS timings
REPEATS = 3  # timings of a step, of which the median counts (one slow timing moves it less)
COMPANY_START_S = 120  # the longest a company process may take to start training (imports, build)
JUDGE = "utility"  # the metric whose classifiers are timed by the step, not run


@dataclass(frozen=True)
class KindCost:
    """One cell kind's measured cost, in seconds per cell."""

    loss: str
    perceptual: bool  # λ > 0
    cells: int  # cells of this kind in the grid
    step: float  # one generator step (n_critic critic steps included)
    train: float  # all the cell's generator steps
    curves: float  # all the cell's curve evaluations
    final: float  # the final evaluation, the judge's per-cell classifiers included

    @property
    def cell(self) -> float:
        return self.train + self.curves + self.final


@dataclass(frozen=True)
class Plan:
    """A study's measured cost: per cell kind, the set-up, the judge's one-off real arm, the total."""

    kinds: list[KindCost]
    setup: float  # data loading and real features (the study's preflight)
    judge_once: float  # the judge's real arm: once per study, then cached
    judge_note: str  # how many classifiers of how many steps, "" without the judge
    cell_total: float  # the sum over cells of their cost, judge_once included
    wall: float  # set-up + the cells shared out over the workers
    workers: int
    header: str  # what was measured, and how


def shared_out(durations: Sequence[float], workers: int) -> float:
    """Wall time of jobs of `durations` (seconds, in queue order) when each goes to the first free
    of `workers` workers."""
    free = [0.0] * max(1, workers)
    for seconds in durations:
        heapq.heappush(free, heapq.heappop(free) + seconds)
    return max(free)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds `fn()` takes on `device` (CUDA work waited for)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def measure_plan(config: StudyConfig, steps: int = STEPS, judge_steps: int = JUDGE_STEPS) -> Plan:
    """Measure `config`'s cost here (see the module docstring); its data and networks must load."""
    before = torch.get_num_threads()
    limiter = limit_threads_and_select(config.threads, config.devices[0])  # as a worker runs
    try:
        with tempfile.TemporaryDirectory(prefix="lossbench-plan-") as tmp:
            config, split = prepare(config, Path(tmp))
            device = torch.device(config.devices[0])
            setup = timed(lambda: preflight(config, split), device)
            with _company(config, split, device):
                return _measure(config, split, device, setup, steps, judge_steps)
    finally:
        limiter.restore_original_limits()  # before torch's, as `workers.run_here` does
        torch.set_num_threads(before)


def company_size(config: StudyConfig, device: torch.device) -> int:
    """How many processes train beside the timings: the study's other workers, on a CPU (they share
    its cores and memory bus); none on an accelerator, where each worker has its own device or queue."""
    return max(0, config.workers - 1) if device.type == "cpu" else 0


@contextlib.contextmanager
def _company(config: StudyConfig, split: Split, device: torch.device) -> Iterator[None]:
    """`company_size` spawned processes training the grid's first cell, as the other workers would,
    for as long as the block runs; it starts once each has taken WARMUP_STEPS steps."""
    n = company_size(config, device)
    if n == 0:
        yield
        return
    context = multiprocessing.get_context("spawn")
    ready, stop = context.Queue(), context.Event()
    train_cfg = train_config_for(config, grid_cells(config)[0], str(device))
    args = (train_cfg, split.train.images, split.train.labels, config.threads, ready, stop, os.getpid())
    processes = [context.Process(target=keep_training, args=args, daemon=True) for _ in range(n)]
    try:
        for process in processes:
            process.start()
        for _ in processes:
            try:
                said = ready.get(timeout=COMPANY_START_S)
            except queue.Empty:
                said = f"not training after {COMPANY_START_S} s"
            if said != "ready":
                raise LossbenchError(f"a process training beside the plan's timings: {said}")
        yield
    finally:
        stop.set()
        for process in processes:
            process.join(timeout=COMPANY_START_S)
            if process.is_alive():
                process.kill()


def keep_training(train_cfg, images, labels, threads, ready, stop, parent: int) -> None:
    """A company process (`_company`): train until `stop` is set or the parent is gone."""
    limit_threads_and_select(threads, str(train_cfg.device))
    try:
        run = build(images, train_cfg, labels)
        step = 0
        while not stop.is_set() and os.getppid() == parent:
            train_step(run, step)
            step += 1
            if step == WARMUP_STEPS:
                ready.put("ready")
    except Exception as e:  # reported to the parent, which stops with it
        ready.put(f"failed: {e}")


def _measure(
    config: StudyConfig, split: Split, device: torch.device, setup: float, steps: int, judge_steps: int
) -> Plan:
    cells = grid_cells(config)
    kind_of = {cell: (cell.loss, cell.lam > 0) for cell in cells}
    judge = utility_settings(config.eval)
    judge_step = (
        _judge_step(config, split, device, judge_steps)
        if JUDGE in resolve_metrics(config.eval.metrics)
        else 0.0
    )
    judge_once = judge.seeds * judge.steps * judge_step  # the real arm's classifiers
    kinds = _kind_costs(config, split, device, steps, kind_of, judge_cell=2 * judge_once)
    per_cell = {(k.loss, k.perceptual): k.cell for k in kinds}
    durations = [per_cell[kind_of[c]] for c in cells]
    if durations:
        durations[0] += judge_once  # the first cell evaluated computes the real arm for the cache
    note = (
        f"{2 * judge.seeds} classifiers of {judge.steps} steps per cell ({judge_step:.3f} s a step), "
        f"{judge.seeds} more once per study (the real arm)"
        if judge_step
        else ""
    )
    return Plan(
        kinds=kinds,
        setup=setup,
        judge_once=judge_once,
        judge_note=note,
        cell_total=sum(durations),
        wall=setup + shared_out(durations, config.workers),
        workers=config.workers,
        header=_header(config, len(cells), device, steps),
    )


def _kind_costs(
    config: StudyConfig,
    split: Split,
    device: torch.device,
    steps: int,
    kind_of: dict[Cell, tuple[str, bool]],
    judge_cell: float,
) -> list[KindCost]:
    """Each cell kind built from its first cell and timed; the evaluations timed once, on the first
    kind's untrained generator (the same work for every kind); `judge_cell`: the judge's seconds a cell."""
    kinds: list[KindCost] = []
    evaluations: dict[str, float] | None = None  # timed on the first kind's generator
    n_curves = config.train.steps // config.eval_every if config.eval_every > 0 else 0
    for kind in dict.fromkeys(kind_of.values()):
        cell = next(c for c, k in kind_of.items() if k == kind)
        run = build(split.train.images, train_config_for(config, cell, str(device)), split.train.labels)
        step = _step_seconds(run, steps, device)
        if evaluations is None:
            final = [m for m in resolve_metrics(config.eval.metrics) if m != JUDGE]
            evaluations = _evaluations(config, split, run.G_ema, final, device)
        kinds.append(
            KindCost(
                loss=kind[0],
                perceptual=kind[1],
                cells=list(kind_of.values()).count(kind),
                step=step,
                train=step * config.train.steps,
                curves=n_curves * evaluations.get("curves", 0.0),
                final=evaluations.get("final", 0.0) + judge_cell,
            )
        )
    return kinds


def _step_seconds(run: Run, steps: int, device: torch.device) -> float:
    """Seconds of one generator step of `run`: after WARMUP_STEPS untimed steps, the median over
    REPEATS timings of the mean of `steps` steps."""
    for step in range(WARMUP_STEPS):
        train_step(run, step)
    step = WARMUP_STEPS
    times = []
    for _ in range(REPEATS):
        times.append(timed(lambda s=step: [train_step(run, s + i) for i in range(steps)], device) / steps)
        step += steps
    return statistics.median(times)


def _evaluations(
    config: StudyConfig,
    split: Split,
    generator: torch.nn.Module,
    final_metrics: list[str],
    device: torch.device,
) -> dict[str, float]:
    """Seconds of one curve evaluation and of the final evaluation without the judge, each timed
    the second time it runs (the first loads networks, as a worker's first cell does once)."""
    out = {}
    wanted = {"final": final_metrics}
    if config.eval_every > 0:
        wanted["curves"] = list(config.curve_metrics)
    for what, metrics in wanted.items():
        if not metrics:
            continue
        eval_cfg = dataclasses.replace(config.eval, metrics=tuple(metrics))
        run = functools.partial(evaluate, generator, split.train, eval_cfg, str(device), split.heldout)
        run()
        out[what] = timed(run, device)
    return out


def _judge_step(config: StudyConfig, split: Split, device: torch.device, judge_steps: int) -> float:
    """Seconds of one optimiser step of the utility judge on the train part's images (the median of
    REPEATS timings of `judge_steps` steps, after WARMUP_STEPS untimed ones)."""
    settings = dataclasses.replace(utility_settings(config.eval), steps=WARMUP_STEPS)
    images, labels, n_classes = split.train.images, split.train.labels, len(split.train.class_names)
    train_classifier(images, labels, n_classes, 0, settings, device)
    settings = dataclasses.replace(settings, steps=judge_steps)
    train = functools.partial(train_classifier, images, labels, n_classes, 0, settings, device)
    return statistics.median(timed(train, device) for _ in range(REPEATS)) / judge_steps


def _header(config: StudyConfig, n_cells: int, device: torch.device, steps: int) -> str:
    lambdas = ", ".join(lambda_text(lam) for lam in config.lambdas)
    load = f"; load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    company = company_size(config, device)
    beside = f" while {company} more trained beside it, as the other workers will" if company else ""
    return (
        f"plan for study {config.name}: {n_cells} cells ({', '.join(config.losses)} × λ {lambdas} × "
        f"{len(config.seeds)} seeds), {config.data.resolution} px, {config.train.steps} steps a cell, "
        f"{_workers(config.workers)} × {config.threads} thread(s) on {device.type}. Measured now in one "
        f"process{beside} (the median of {REPEATS} timings of {steps} generator steps per cell kind{load})."
        + (f" Fused groups (--fuse {config.fuse}) are timed as single cells." if config.fuse > 1 else "")
    )


def _workers(workers: int) -> str:
    return f"{workers} worker(s)" if workers else "the command's own process (--workers 0)"


def plan_lines(plan: Plan) -> list[str]:
    """The plan as text: the header, a row per cell kind, the judge, the totals."""
    rows = [
        "| loss | λ | cells | s per step | training | curves | final evaluation | per cell |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for k in plan.kinds:
        lam = "> 0" if k.perceptual else "0"
        times = " | ".join(duration(t) for t in (k.train, k.curves, k.final, k.cell))
        rows.append(f"| {k.loss} | {lam} | {k.cells} | {k.step:.3f} | {times} |")
    out = [plan.header, "", *rows, ""]
    if plan.judge_note:
        out.append(f"utility judge: {plan.judge_note}: {duration(plan.judge_once)} once")
    out.append(f"set-up (data, real features): {duration(plan.setup)}")
    out.append(
        f"total: {duration(plan.cell_total)} of cell time; about {duration(plan.wall)} of wall time with "
        f"{_workers(plan.workers)} (the fixed rest not counted)"
    )
    return out
