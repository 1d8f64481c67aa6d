"""One cell of a study: the Optuna objective (admission by `queue.admit`, the MLflow child run and
the record written by `trial_run`, with the worker's identity, `liveness.Worker`), training and
evaluation (`train_and_evaluate`, fused or not), the checkpoint a retry takes over (`handover`).

The trial's value is the objective metric, from the full evaluation at the cell's last step. Every
`eval_every` steps the curve metrics (`curve_metrics`, cheap ones) are evaluated and logged as MLflow
curves `eval/<key>`, the objective reported to Optuna as intermediate value when it is one of them
(nothing prunes on them), and the EMA generator of the best `best_metric` so far kept as best.pt.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
from optuna.trial import TrialState

from lossbench import tracking
from lossbench.config import StudyConfig, TrainConfig
from lossbench.data import split
from lossbench.errors import CheckpointError
from lossbench.files import load_tensors, set_aside
from lossbench.metrics import DIRECTIONS, metric_key
from lossbench.metrics.evaluation import evaluate
from lossbench.metrics.memorisation import closest_fakes_png
from lossbench.study import handover, record
from lossbench.study.definition import best_metric
from lossbench.study.grid import Cell, train_config_for
from lossbench.study.liveness import current_worker
from lossbench.study.queue import admit
from lossbench.study.trial_run import record_result, start_trial_run
from lossbench.training.fusable import fusion_key
from lossbench.training.fused import ResumeMismatchError, train_fused
from lossbench.training.train import CHECKPOINT, CONFIG_JSON, Callback, TrainResult, save_generator, train

CHECKPOINTS = "checkpoints"
BEST_CHECKPOINT = "best.pt"  # the EMA generator of the trial's best periodic evaluation (TrialCallback)


def checkpoint_dir(root: str | os.PathLike, study: str, cell: Cell) -> Path:
    """Where a cell's training checkpoints live: `<root>/checkpoints/<study>/<cell key>/`."""
    return Path(root) / CHECKPOINTS / study / cell.key


@dataclass
class CellResult:
    """What one cell produced: final metrics and their settings, and optional artifacts."""

    metrics: dict[str, float]
    settings: dict[str, Any]
    steps: int
    sample_grid: Path | None = None
    fake_features: np.ndarray | None = None
    fake_classes: np.ndarray | None = None  # class name per row of fake_features (conditional runs)
    closest_png: bytes | None = None  # copy detection's closest fakes beside their training images


@dataclass
class CellContext:
    """Everything a cell function needs: configs, data, where to checkpoint, where to report."""

    config: StudyConfig
    train: TrainConfig
    data: Any  # lossbench.data.ImageDataset: the train part, what the GAN sees
    device: str
    checkpoint_dir: Path
    run: tracking.TrialRun
    trial: optuna.Trial
    objective: str  # the metric key
    heldout: Any = None  # the held-out ImageDataset, None without one
    best_metric: str = ""  # the result key best.pt is kept by (study_config.best_metric)


CellFn = Callable[[Cell, CellContext], CellResult]


class TrialCallback(Callback):
    """Training hooks of a trial: curves to MLflow (flushed at checkpoints), training-health warnings
    to the trial record and the MLflow run, the curve metrics every `eval_every` steps with the EMA
    generator of the best `best_metric` so far kept as `best.pt` beside the checkpoint (as StudioGAN
    keeps its best model), and the step training started from."""

    def __init__(self, ctx: CellContext) -> None:
        self.ctx = ctx

    def on_start(self, step: int) -> None:
        """Tag the run with the step its training starts from (0, or a checkpoint's: also the last step,
        when an earlier attempt finished training and died evaluating). A trial that resumes training
        an earlier attempt of its cell left (a retry, on this machine or taken over) takes that
        attempt's best evaluation into its record from BEST_CHECKPOINT, so its best generator is the
        one an uninterrupted run keeps."""
        self.ctx.run.set_tags({tracking.RESUMED_FROM_TAG: step})
        path = self.ctx.checkpoint_dir / BEST_CHECKPOINT
        if step > 0 and record.BEST not in self.ctx.trial.user_attrs and path.exists():
            saved = load_tensors(path)
            key = self.ctx.best_metric
            if key in saved.get("best", {}):
                best = {"step": int(saved["step"]), "value": float(saved["best"][key]), "metric": key}
                self.ctx.trial.set_user_attr(record.BEST, best)

    def on_log(self, step: int, terms: dict[str, float]) -> None:
        self.ctx.run.log_metrics({f"{tracking.TRAIN_PREFIX}{k}": v for k, v in terms.items()}, step)

    def on_health(self, step: int, findings: dict[str, str]) -> None:
        if findings != self.ctx.trial.user_attrs.get(record.HEALTH):  # the first probe writes "ok"
            self.ctx.trial.set_user_attr(record.HEALTH, findings)
            self.ctx.run.set_tags({tracking.HEALTH_TAG: "; ".join(findings.values()) or "ok"})

    def on_checkpoint(self, step: int, path: Path) -> None:
        self.ctx.run.flush()
        if handover.travels(self.ctx.run.tracking_uri):
            handover.upload(
                self.ctx.run.client, self.ctx.run.run_id, step, [path, path.parent / BEST_CHECKPOINT]
            )

    def on_step(self, step: int, generator_ema: torch.nn.Module) -> None:
        every = self.ctx.config.eval_every
        if every > 0 and step % every == 0:
            metrics = evaluate_curves(self.ctx, generator_ema, step)
            self.keep_best(step, generator_ema, metrics[self.ctx.best_metric])

    def keep_best(self, step: int, generator: torch.nn.Module, value: float) -> None:
        """Write `generator` as BEST_CHECKPOINT when `value` of the best metric beats every earlier
        evaluation of the cell (the trial's record, see `on_start`), and record it."""
        key = self.ctx.best_metric
        path = self.ctx.checkpoint_dir / BEST_CHECKPOINT
        best = self.ctx.trial.user_attrs.get(record.BEST)
        lower = DIRECTIONS[key] == "min"
        if best is not None and not (value < best["value"] if lower else value > best["value"]):
            return
        run_record = json.loads((self.ctx.checkpoint_dir / CONFIG_JSON).read_text())
        save_generator(generator, run_record["model"], self.ctx.train, path, step=step, best={key: value})
        self.ctx.trial.set_user_attr(record.BEST, {"step": step, "value": value, "metric": key})
        self.ctx.run.set_tags({tracking.BEST_CHECKPOINT_TAG: f"{path} (step {step}, {key} {value:.6g})"})


def evaluate_curves(ctx: CellContext, generator: torch.nn.Module, step: int) -> dict[str, float]:
    """The curve metrics at `step`, logged as MLflow `eval/<key>` curves; the objective reported to
    Optuna as intermediate value when it is among them."""
    config = dataclasses.replace(ctx.config.eval, metrics=ctx.config.curve_metrics)
    metrics = evaluate(generator, ctx.data, config, device=ctx.device, heldout=ctx.heldout).metrics
    ctx.run.log_metrics({f"{tracking.EVAL_PREFIX}{k}": v for k, v in metrics.items()}, step)
    ctx.run.flush()
    if ctx.objective in metrics:
        ctx.trial.report(metrics[ctx.objective], step)
    return metrics


def train_and_evaluate(cell: Cell, ctx: CellContext) -> CellResult:
    """The real cell: train (resuming from the cell's checkpoint if any), then evaluate. A checkpoint
    that cannot be loaded is set aside (`<name>.bad-<UTC time>`, tag `lossbench.bad_checkpoint`) with
    a warning, and the cell trains from scratch."""
    callback = TrialCallback(ctx)
    try:
        trained = train(ctx.data, ctx.train, ctx.checkpoint_dir, callbacks=[callback], resume=True)
    except CheckpointError as e:
        aside = set_aside(ctx.checkpoint_dir / CHECKPOINT)
        print(f"warning: {cell}: {e}; kept as {aside}, training from scratch", file=sys.stderr)
        ctx.run.set_tags({tracking.BAD_CHECKPOINT_TAG: str(aside)})
        trained = train(ctx.data, ctx.train, ctx.checkpoint_dir, callbacks=[callback], resume=True)
    return _cell_result(ctx, trained)


def train_and_evaluate_fused(cells: list[Cell], contexts: list[CellContext]) -> list[CellResult | Exception]:
    """Cells of one loss trained as one fused group (lossbench.training.fused), then each evaluated; a member
    that diverged or failed to evaluate has its error in its place. A group that cannot resume fused
    (its checkpoints at different steps, or one damaged) trains its cells one by one instead."""
    callbacks = [TrialCallback(ctx) for ctx in contexts]
    try:
        trained = train_fused(
            [ctx.train for ctx in contexts],
            contexts[0].data,
            [ctx.checkpoint_dir for ctx in contexts],
            [[cb] for cb in callbacks],
            resume=True,
        )
    except (CheckpointError, ResumeMismatchError) as e:
        print(f"warning: {len(cells)} cells from {cells[0]}: {e}; training them one by one", file=sys.stderr)
        return [_outcome(train_and_evaluate, cell, ctx) for cell, ctx in zip(cells, contexts, strict=True)]
    except tuple(tracking.FINAL_ERRORS) as e:  # e.g. missing weights: every member would fail alone too
        return [e] * len(cells)
    outcomes: list[CellResult | Exception] = []
    for cell, ctx, result in zip(cells, contexts, trained, strict=True):
        if isinstance(result, Exception):  # diverged
            outcomes.append(result)
        else:
            outcomes.append(_outcome(lambda _, c, r=result: _cell_result(c, r), cell, ctx))
    return outcomes


def _outcome(fn: CellFn, cell: Cell, ctx: CellContext) -> CellResult | Exception:
    """fn(cell, ctx), or the final error (FINAL_ERRORS) it raised."""
    try:
        return fn(cell, ctx)
    except tuple(tracking.FINAL_ERRORS) as e:
        return e


def _cell_result(ctx: CellContext, trained: TrainResult) -> CellResult:
    """The cell's final evaluation, with every metric of `eval.metrics`."""
    final = evaluate(trained.generator_ema, ctx.data, ctx.config.eval, device=ctx.device, heldout=ctx.heldout)
    data = ctx.config.data
    return CellResult(
        metrics=final.metrics,
        settings={
            **final.settings,
            "perceptual_weights": trained.perceptual_weights,
            "train_precision": trained.precision,
            "split": split.describe(data.holdout, data.split_seed),
        },
        steps=trained.steps,
        sample_grid=trained.sample_grid,
        fake_features=final.fake_features,
        fake_classes=final.fake_classes,
        closest_png=closest_fakes_png(*final.closest_pairs) if final.closest_pairs else None,
    )


@dataclass
class Objective:
    """The Optuna objective of a worker: admit the trial, run its cell in an MLflow child run, record."""

    config: StudyConfig
    root: str
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    data: Any  # lossbench.data.split.Split
    device: str
    cell_fn: CellFn

    def __call__(self, trial: optuna.Trial) -> float:
        cell, ctx = self._begin(trial)
        with tracking.ending(ctx.run):
            try:
                result = self.cell_fn(cell, ctx)
            except BaseException as e:
                self._failed(trial, cell, ctx, e)
                raise
            record_result(trial, ctx.run, result)
        return result.metrics[ctx.objective]

    def run_group(self, study: optuna.Study, trials: list[optuna.Trial]) -> None:
        """Run the cells of `trials` (taken with `study.ask()`): those of one fusion key as one fused
        group (`train_and_evaluate_fused`; with another cell function, one by one), each with its
        own admission, MLflow run, record and Optuna state."""
        begun: list[tuple[optuna.Trial, Cell, CellContext]] = []
        untold = list(trials)
        try:
            for trial in trials:
                try:
                    begun.append((trial, *self._begin(trial)))
                except optuna.TrialPruned:
                    study.tell(trial, state=TrialState.PRUNED)
                    untold.remove(trial)
            groups: dict[str, list[tuple[optuna.Trial, Cell, CellContext]]] = {}
            for member in begun:
                groups.setdefault(fusion_key(member[2].train), []).append(member)
            for group in groups.values():
                cells, contexts = [m[1] for m in group], [m[2] for m in group]
                if self.cell_fn is train_and_evaluate and len(group) > 1:
                    for ctx in contexts:
                        ctx.run.set_tags({tracking.FUSED_TAG: str(len(group))})
                    outcomes = train_and_evaluate_fused(cells, contexts)
                else:
                    pairs = zip(cells, contexts, strict=True)
                    outcomes = [_outcome(self.cell_fn, cell, ctx) for cell, ctx in pairs]
                for (trial, cell, ctx), outcome in zip(group, outcomes, strict=True):
                    self._finish(study, trial, cell, ctx, outcome)
                    untold.remove(trial)
        except BaseException as e:  # not a cell's final error: fail what is left, as optimize would
            for trial, cell, ctx in begun:
                if trial in untold:
                    self._failed(trial, cell, ctx, e)
                    ctx.run.end(tracking.ending_status(e), tracking.failure_reason(e))
            for trial in untold:
                study.tell(trial, state=TrialState.FAIL)
            raise

    def _finish(
        self, study: optuna.Study, trial: optuna.Trial, cell: Cell, ctx: CellContext, outcome: Any
    ) -> None:
        """Record a trial's outcome (a CellResult or its final error) and tell Optuna."""
        try:
            with tracking.ending(ctx.run):
                if isinstance(outcome, BaseException):
                    self._failed(trial, cell, ctx, outcome)
                    raise outcome
                record_result(trial, ctx.run, outcome)
        except tuple(tracking.FINAL_ERRORS):
            study.tell(trial, state=TrialState.FAIL)
            return
        study.tell(trial, outcome.metrics[ctx.objective])

    def _begin(self, trial: optuna.Trial) -> tuple[Cell, CellContext]:
        """Admit the trial (TrialPruned if it must not run) and start its MLflow run."""
        config = self.config
        torch.set_num_threads(config.threads)  # numbers depend on it: fixed per study, never per machine
        for key, value in current_worker().attrs().items():
            trial.set_user_attr(key, value)
        cell = admit(trial, config)
        train_cfg = train_config_for(config, cell, self.device)
        run = start_trial_run(self, trial, cell, train_cfg)
        folder = checkpoint_dir(self.root, config.name, cell)
        if handover.travels(self.tracking_uri) and (
            said := handover.take_over(trial, self.tracking_uri, folder / CHECKPOINT)
        ):
            print(f"{cell}: {said}", file=sys.stderr)
            run.set_tags({tracking.HANDOVER_FROM_TAG: said})
        ctx = CellContext(
            config,
            train_cfg,
            self.data.train,
            self.device,
            folder,
            run,
            trial,
            metric_key(config.objective),
            self.data.heldout,
            best_metric(config),
        )
        return cell, ctx

    @staticmethod
    def _failed(trial: optuna.Trial, cell: Cell, ctx: CellContext, error: BaseException) -> None:
        """What a failed trial records before its run ends: the reason and, for a final error, the
        FAIL tag and a line on stderr."""
        if not isinstance(error, (KeyboardInterrupt, SystemExit)):
            trial.set_user_attr(record.FAIL_REASON, tracking.failure_reason(error))
        if isinstance(error, tuple(tracking.FINAL_ERRORS)):
            ctx.run.set_tags({tracking.STATE_TAG: "FAIL"})
            print(f"{cell}: {tracking.failure_reason(error)}", file=sys.stderr)
