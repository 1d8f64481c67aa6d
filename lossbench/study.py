"""Optuna studies over the (loss × λ × seed) grid: storage, worker processes, exact resume, results.

One trial is one cell (loss, λ, seed): train, evaluate, log an MLflow child run. The trial's value
is the objective metric; every metric (`metric.<key>`) and every evaluation setting
(`setting.<key>`) is a user attribute; evaluations every `eval_every` steps are reported as
intermediate values.

Every cell runs exactly once, also with several workers:
- The parent enqueues each pending cell as a WAITING trial before any worker starts. A worker takes
  a WAITING trial with Optuna's WAITING -> RUNNING transition, which is atomic in the journal and
  RDB storages, so two workers never take the same queued trial. No sampler chooses grid points:
  Optuna's GridSampler can give two processes the same point, and it fails on queued trials (its
  `after_trial` reads a `grid_id` that queued trials lack). A trial that was not queued (in the
  first run its number is >= the grid size) is pruned at the top of the objective.
- Defence in depth: a trial whose cell already has a COMPLETE trial, or a RUNNING one with a lower
  number, is pruned (user attribute `skipped`). Analyses read COMPLETE trials only.
- `search="tpe"`: the loss (categorical) and λ (float in `lambda_range`) are sampled by TPE; each
  sampled point is repeated for every seed (the first trial uses seeds[0] and enqueues the others).
  Only the first `n_trials` non-queued trials are admitted. With `prune`, a MedianPruner stops
  trials on their intermediate values.

Storage: by default a journal file, `<root>/optuna-journal.log` (Optuna advises against SQLite for
parallel work). `storage` may be an RDB URL (PostgreSQL/MySQL for several machines; SQLite) opened
with a heartbeat, so trials of dead workers on any machine are failed, or a journal file path.

Resume (rerunning the same command): COMPLETE cells are kept; a trial left RUNNING by a dead worker
is failed (journal: its worker's pid, recorded with the host name, no longer exists on this host;
RDB: missed heartbeats), its MLflow run is ended KILLED, and its cell is queued again; the new trial
resumes training from the cell's checkpoint (`<root>/checkpoints/<study>/<cell>/`). A cell whose
training diverged is final: FAIL with its reason, treated as missing by the statistics. Other
failures (an exception, an interrupt) are retried by the next run. Resuming with other settings
than the study was created with is refused.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import re
import shutil
import socket
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import torch
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from lossbench import tracking
from lossbench.config import StudyConfig, TrainConfig, to_dict
from lossbench.errors import ConfigError, DivergedError, LossbenchError
from lossbench.losses import get_loss
from lossbench.metrics import DIRECTIONS, get_metric, metric_key, resolve_metrics
from lossbench.metrics.evaluation import EvalResult, evaluate
from lossbench.train import Callback, train

JOURNAL = "optuna-journal.log"
CHECKPOINTS = "checkpoints"
HEARTBEAT_S = 60  # RDB storages: a trial without a heartbeat for GRACE_S is failed
GRACE_S = 180
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# Fields that do not change what a study computes; they may differ between a run and its resumption.
_RUN_ONLY = {"workers", "devices", "storage", "tracking_uri", "n_trials"}
_RUN_ONLY_TRAIN = {"loss", "lam", "seed", "loss_params", "device", "progress", "weights_dir"}
_RUN_ONLY_EVAL = {"cache_dir", "weights_dir"}
_LINK_ATTRS = ("retry_of", "repeat_of")  # user attributes linking a trial to an earlier one


@dataclass(frozen=True, order=True)
class Cell:
    """One point of the grid."""

    loss: str
    lam: float
    seed: int

    @property
    def key(self) -> str:
        """File-system name, e.g. `wgangp_lam0.5_seed0`."""
        return f"{self.loss}_lam{self.lam:g}_seed{self.seed}"

    def __str__(self) -> str:
        return f"{self.loss} λ={self.lam:g} seed {self.seed}"


def grid_cells(config: StudyConfig) -> list[Cell]:
    """The cells of the grid, loss-major."""
    return _cells(config.losses, config.lambdas, config.seeds)


def _cells(losses: Sequence[str], lambdas: Sequence[float], seeds: Sequence[int]) -> list[Cell]:
    return [Cell(loss, float(lam), int(seed)) for loss in losses for lam in lambdas for seed in seeds]


def open_storage(storage: str | None, root: str | os.PathLike = "mlruns") -> BaseStorage:
    """The Optuna storage: a journal file (default `<root>/optuna-journal.log`, or a path), or an RDB URL."""
    if storage and "://" in storage:
        return RDBStorage(storage, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S)
    path = Path(storage) if storage else Path(root) / JOURNAL
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


def checkpoint_dir(root: str | os.PathLike, study: str, cell: Cell) -> Path:
    return Path(root) / CHECKPOINTS / study / cell.key


# ---------------------------------------------------------------------------------------------
# Validation and the study's identity


def validate(config: StudyConfig) -> None:
    """Raise a one-line LossbenchError for a bad study before anything is recorded."""
    if not _NAME.fullmatch(config.name):
        raise ConfigError(f"study name {config.name!r} must be letters, digits, '_', '.', '-'")
    for loss in config.loss_params:
        if loss not in config.losses:
            raise ConfigError(f"loss parameters given for {loss!r}, which is not a loss of the study")
    for loss in config.losses:
        get_loss(loss, **config.loss_params.get(loss, {}))
    key = metric_key(config.objective)
    if key not in DIRECTIONS:
        raise ConfigError(f"unknown objective {config.objective!r} (choose from {', '.join(DIRECTIONS)})")
    if get_metric(key).name not in resolve_metrics(config.eval.metrics):
        metrics = ", ".join(config.eval.metrics)
        raise ConfigError(f"objective {key!r} is not among the metrics evaluated ({metrics})")
    if len(set(grid_cells(config))) != len(grid_cells(config)):
        raise ConfigError("the losses, lambdas and seeds of a study must not repeat")
    if config.prune and config.search != "tpe":
        raise ConfigError("pruning (--prune) works with --search tpe only: a grid keeps every cell")
    if config.search == "tpe":
        lo, hi = config.lambda_range
        if not 0 <= lo < hi:
            raise ConfigError(f"lambda_range must be two numbers 0 <= low < high, got {config.lambda_range}")
        if config.prune and config.eval_every <= 0:
            raise ConfigError("pruning needs intermediate evaluations: set eval_every (--eval-every N)")


def _identity(config: StudyConfig, fingerprint: str) -> dict[str, Any]:
    """What a study's results depend on, as JSON values (the data by content, not by path)."""
    ident = {k: v for k, v in to_dict(config).items() if k not in _RUN_ONLY}
    ident["train"] = {k: v for k, v in ident["train"].items() if k not in _RUN_ONLY_TRAIN}
    ident["eval"] = {k: v for k, v in ident["eval"].items() if k not in _RUN_ONLY_EVAL}
    ident["data"] = {k: v for k, v in ident["data"].items() if k != "spec"} | {"fingerprint": fingerprint}
    return json.loads(json.dumps(ident))


def _check_identity(stored: dict[str, Any], current: dict[str, Any], name: str) -> None:
    diffs = [
        f"{k}={stored_v} (now {current_v})"
        for k, stored_v in tracking.flatten(stored).items()
        if (current_v := tracking.flatten(current).get(k)) != stored_v
    ]
    if diffs:
        raise ConfigError(
            f"study {name!r} was created with other settings: {'; '.join(diffs[:3])}; "
            "rerun with the same settings to resume, or choose another --name"
        )


def train_config_for(config: StudyConfig, cell: Cell, device: str) -> TrainConfig:
    """The study's training template specialised to one cell and device."""
    return dataclasses.replace(
        config.train,
        loss=cell.loss,
        lam=cell.lam,
        seed=cell.seed,
        loss_params=dict(config.loss_params.get(cell.loss, {})),
        device=device,
        progress=False,
    )


# ---------------------------------------------------------------------------------------------
# Trials and cells


def _trial_cell(trial: FrozenTrial) -> Cell | None:
    """The cell of a trial: user attributes set when it is queued, or when a sampled trial starts."""
    attrs = trial.user_attrs
    if not all(k in attrs for k in ("loss", "lambda", "seed")):
        return None
    return Cell(attrs["loss"], float(attrs["lambda"]), int(attrs["seed"]))


def _is_queued(trial: FrozenTrial | optuna.Trial) -> bool:
    """Whether the trial was queued by lossbench (rather than created by the sampler)."""
    return bool(trial.user_attrs.get("queued"))


def _is_final_failure(trial: FrozenTrial) -> bool:
    reason = str(trial.user_attrs.get("fail_reason", ""))
    return trial.state == TrialState.FAIL and reason.startswith("diverged")


def cell_states(study: optuna.Study) -> dict[Cell, tuple[str, FrozenTrial | None]]:
    """Each cell seen in the study -> (state, deciding trial). States, by precedence: done, running,
    queued, failed (diverged), pruned, pending (no trial yet, or only retryable failures)."""
    order = {"done": 0, "running": 1, "queued": 2, "failed": 3, "pruned": 4, "pending": 5}
    best: dict[Cell, tuple[str, FrozenTrial | None]] = {}
    for t in study.get_trials(deepcopy=False):
        cell = _trial_cell(t)
        if cell is None or "skipped" in t.user_attrs:
            continue
        if t.state == TrialState.COMPLETE:
            state = "done"
        elif t.state == TrialState.RUNNING:
            state = "running"
        elif t.state == TrialState.WAITING:
            state = "queued"
        elif t.state == TrialState.PRUNED:
            state = "pruned"
        else:
            state = "failed" if _is_final_failure(t) else "pending"
        if cell not in best or order[state] < order[best[cell][0]] or (state == best[cell][0] == "pending"):
            best[cell] = (state, t)
    return best


def _enqueue(study: optuna.Study, cell: Cell, search: str, **user_attrs: Any) -> None:
    params: dict[str, Any] = {"loss": cell.loss, "lambda": cell.lam}
    if search == "grid":
        params["seed"] = cell.seed
    cell_attrs = {"loss": cell.loss, "lambda": cell.lam, "seed": cell.seed}
    study.enqueue_trial(params, user_attrs={"queued": True, **cell_attrs, **user_attrs})


def _enqueue_pending(study: optuna.Study, config: StudyConfig) -> None:
    """Queue every cell that has no COMPLETE, RUNNING, WAITING or final trial."""
    states = cell_states(study)
    cells = grid_cells(config) if config.search == "grid" else sorted(states)
    for cell in cells:
        state, last = states.get(cell, ("pending", None))
        if state == "pending":
            _enqueue(study, cell, config.search, **({"retry_of": last.number} if last else {}))


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
        number = int(run.data.tags.get("lossbench.trial", -1))
        if number not in running:
            tracking.end_run(tracking_uri, run.info.run_id, "KILLED", "its worker died")


# ---------------------------------------------------------------------------------------------
# Running one cell


@dataclass
class CellResult:
    """What one cell produced: final metrics and their settings, and optional artifacts."""

    metrics: dict[str, float]
    settings: dict[str, Any]
    steps: int
    sample_grid: Path | None = None
    fake_features: np.ndarray | None = None


@dataclass
class CellContext:
    """Everything a cell function needs: configs, data, where to checkpoint, where to report."""

    config: StudyConfig
    train: TrainConfig
    data: Any  # lossbench.data.ImageDataset
    device: str
    checkpoint_dir: Path
    run: tracking.TrialRun
    trial: optuna.Trial
    objective: str  # the metric key


CellFn = Callable[[Cell, CellContext], CellResult]


class TrialCallback(Callback):
    """Training hooks of a trial: curves to MLflow (flushed at checkpoints), an evaluation every
    `eval_every` steps reported to Optuna (pruning on its verdict), and the step training resumed from."""

    def __init__(self, ctx: CellContext) -> None:
        self.ctx = ctx
        self.resumed_from: int | None = None
        self.last_eval: tuple[int, EvalResult] | None = None

    def on_log(self, step: int, terms: dict[str, float]) -> None:
        self.ctx.run.log_metrics({f"train/{k}": v for k, v in terms.items()}, step)

    def on_checkpoint(self, step: int, path: Path) -> None:
        self.ctx.run.flush()

    def on_step(self, step: int, generator_ema: torch.nn.Module) -> None:
        if self.resumed_from is None:
            self.resumed_from = step - 1
            self.ctx.run.set_tags({"lossbench.resumed_from_step": step - 1})
        every = self.ctx.config.eval_every
        if every > 0 and step % every == 0:
            self.last_eval = (step, evaluate_and_report(self.ctx, generator_ema, step))


def evaluate_and_report(ctx: CellContext, generator: torch.nn.Module, step: int) -> EvalResult:
    """Evaluate at `step`: MLflow `eval/<key>`, Optuna intermediate value; prune if told to."""
    result = evaluate(generator, ctx.data, ctx.config.eval, device=ctx.device)
    ctx.run.log_metrics({f"eval/{k}": v for k, v in result.metrics.items()}, step)
    ctx.run.flush()
    ctx.trial.report(result.metrics[ctx.objective], step)
    if ctx.trial.should_prune():
        raise optuna.TrialPruned(f"pruned at step {step}")
    return result


def train_and_evaluate(cell: Cell, ctx: CellContext) -> CellResult:
    """The real cell: train (resuming from the cell's checkpoint if any), then evaluate."""
    callback = TrialCallback(ctx)
    trained = train(ctx.data, ctx.train, ctx.checkpoint_dir, callbacks=[callback], resume=True)
    if callback.last_eval is not None and callback.last_eval[0] == trained.steps:
        final = callback.last_eval[1]
    else:
        final = evaluate_and_report(ctx, trained.generator_ema, trained.steps)
    return CellResult(
        metrics=final.metrics,
        settings={**final.settings, "perceptual_weights": trained.perceptual_weights},
        steps=trained.steps,
        sample_grid=trained.sample_grid,
        fake_features=final.fake_features,
    )


# ---------------------------------------------------------------------------------------------
# Workers


@dataclass
class _Job:
    """What one worker process needs (pickled to the spawned process)."""

    config: StudyConfig
    root: str
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    data: Any
    device: str
    threads: int
    index: int
    cell_fn: CellFn


def _sampler(config: StudyConfig, seed: int = 0) -> optuna.samplers.BaseSampler:
    """TPE for `search="tpe"`; for the grid, a sampler that is never consulted (all cells are queued
    with fixed parameters; a trial that was not queued is pruned before it suggests anything)."""
    if config.search == "grid":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def _pruner(config: StudyConfig) -> optuna.pruners.BasePruner:
    if config.search == "tpe" and config.prune:
        return optuna.pruners.MedianPruner(n_startup_trials=len(config.seeds))
    return optuna.pruners.NopPruner()


class _Objective:
    def __init__(self, job: _Job) -> None:
        self.job = job
        self.config = job.config
        self.key = metric_key(job.config.objective)

    def _admit(self, trial: optuna.Trial) -> Cell:
        """The trial's cell, or TrialPruned for a trial that must not run (see the module docstring)."""
        config, study = self.config, trial.study
        queued = _is_queued(trial)
        if not queued:
            fresh_before = sum(not _is_queued(t) for t in study.get_trials(deepcopy=False)[: trial.number])
            if config.search == "grid" or fresh_before >= _tpe_budget(config):
                trial.set_user_attr("skipped", "not a queued cell")
                raise optuna.TrialPruned()
        loss = trial.suggest_categorical("loss", config.losses)
        if config.search == "grid":
            lam = trial.suggest_categorical("lambda", config.lambdas)
            seed = trial.suggest_categorical("seed", config.seeds)
        else:
            lam = trial.suggest_float("lambda", *config.lambda_range)
            seed = trial.user_attrs.get("seed", config.seeds[0])
        cell = Cell(loss, float(lam), int(seed))
        for k, v in {"loss": cell.loss, "lambda": cell.lam, "seed": cell.seed}.items():
            trial.set_user_attr(k, v)
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING)):
            if t.number == trial.number or "skipped" in t.user_attrs or _trial_cell(t) != cell:
                continue
            if t.state == TrialState.COMPLETE or t.number < trial.number:
                trial.set_user_attr("skipped", f"cell already taken by trial {t.number}")
                raise optuna.TrialPruned()
        if config.search == "tpe" and not queued:
            for seed in config.seeds[1:]:
                _enqueue(study, Cell(cell.loss, cell.lam, seed), "tpe", repeat_of=trial.number)
        return cell

    def __call__(self, trial: optuna.Trial) -> float:
        job, config = self.job, self.config
        trial.set_user_attr("pid", os.getpid())
        trial.set_user_attr("host", socket.gethostname())
        cell = self._admit(trial)
        train_cfg = train_config_for(config, cell, job.device)
        weights = "random" if (train_cfg.random_weights or config.eval.random_weights) else "pretrained"
        run = tracking.TrialRun.start(
            job.tracking_uri,
            job.experiment_id,
            job.parent_run_id,
            f"{cell.key}-t{trial.number}",
            {
                "lossbench.study": config.name,
                "lossbench.trial": trial.number,
                "lossbench.loss": cell.loss,
                "lossbench.lambda": f"{cell.lam:g}",
                "lossbench.seed": cell.seed,
                "lossbench.weights": weights,
                "lossbench.device": job.device,
                "lossbench.worker": f"{socket.gethostname()}:{os.getpid()}",
                **{f"lossbench.{k}": v for k, v in trial.user_attrs.items() if k in _LINK_ATTRS},
            },
        )
        trial.set_user_attr("mlflow_run_id", run.run_id)
        config_json = {
            "study": config.name,
            "trial": trial.number,
            "train": to_dict(train_cfg),
            "eval": to_dict(config.eval),
            "data": to_dict(config.data) | {"fingerprint": job.data.fingerprint},
        }
        run.log_params(tracking.flatten(config_json))
        run.log_dict(config_json, "config.json")
        ckpt = checkpoint_dir(job.root, config.name, cell)
        ctx = CellContext(config, train_cfg, job.data, job.device, ckpt, run, trial, self.key)
        try:
            result = job.cell_fn(cell, ctx)
        except DivergedError as e:
            reason = f"diverged: {e}"
            trial.set_user_attr("fail_reason", reason)
            run.set_tags({"lossbench.state": "FAIL"})
            run.end("FAILED", reason)
            print(f"{cell}: {reason}", file=sys.stderr)
            raise
        except optuna.TrialPruned:
            run.set_tags({"lossbench.state": "PRUNED"})
            run.end("FINISHED")
            raise
        except KeyboardInterrupt:
            run.end("KILLED", "interrupted")
            raise
        except BaseException as e:
            trial.set_user_attr("fail_reason", f"{type(e).__name__}: {e}")
            run.end("FAILED", f"{type(e).__name__}: {e}")
            raise
        self._record(trial, run, result)
        return result.metrics[self.key]

    def _record(self, trial: optuna.Trial, run: tracking.TrialRun, result: CellResult) -> None:
        """User attributes, final MLflow metrics (plain keys), settings as tags, artifacts."""
        for k, v in result.metrics.items():
            trial.set_user_attr(f"metric.{k}", float(v))
        for k, v in result.settings.items():
            trial.set_user_attr(f"setting.{k}", v)
        run.log_metrics(result.metrics, result.steps)
        run.set_tags({f"setting.{k}": v for k, v in result.settings.items()})
        run.set_tags({"lossbench.state": "COMPLETE"})
        summary = {"metrics": result.metrics, "settings": result.settings, "steps": result.steps}
        run.log_dict(summary, "metrics.json")
        if result.sample_grid is not None:
            with tempfile.TemporaryDirectory() as tmp:
                run.log_artifact(shutil.copy(result.sample_grid, Path(tmp, "final.png")), "samples")
        if result.fake_features is not None:
            tracking.log_features(run.tracking_uri, run.run_id, result.fake_features, "features/fake.npy")
        run.end("FINISHED")


def _tpe_budget(config: StudyConfig) -> int:
    """Sampled (loss, λ) points of a TPE study: `n_trials`, by default as many as the grid has."""
    return config.n_trials or len(config.losses) * len(config.lambdas)


def _work_left(study: optuna.Study, config: StudyConfig) -> bool:
    """Whether a queued trial is waiting or, for TPE, the sampling budget is not spent."""
    if study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        return True
    if config.search == "tpe":
        fresh = sum(not _is_queued(t) for t in study.get_trials(deepcopy=False))
        return fresh < _tpe_budget(config)
    return False


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
    config = job.config

    def stop_when_done(study: optuna.Study, trial: FrozenTrial) -> None:
        if not _work_left(study, config):
            study.stop()

    try:
        study = optuna.load_study(
            study_name=config.name,
            storage=open_storage(config.storage, job.root),
            sampler=_sampler(config, job.index),
            pruner=_pruner(config),
        )
        if _work_left(study, config):
            study.optimize(_Objective(job), catch=(DivergedError,), callbacks=[stop_when_done])
    except LossbenchError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


# ---------------------------------------------------------------------------------------------
# The parent: prepare, start workers, show progress, recover


@dataclass
class StudySummary:
    """The outcome of `run_study`: cell counts by state, trials added, where the results are."""

    name: str
    counts: dict[str, int]
    new_trials: int
    parent_run_id: str
    tracking_uri: str
    storage: str
    worker_errors: list[str] = field(default_factory=list)


def _check_weights(config: StudyConfig) -> None:
    """Fail fast, before any data is loaded, when a pretrained file the study needs is absent."""
    from lossbench.metrics import required_weights
    from lossbench.weights import WEIGHTS, find_weights

    train, ev = config.train, config.eval
    uses_perceptual = train.perceptual != "none" and any(lam > 0 for lam in config.lambdas)
    if uses_perceptual and not train.random_weights and train.perceptual in WEIGHTS:
        find_weights(train.perceptual, train.weights_dir)
    for key in required_weights(ev):
        find_weights(key, ev.weights_dir)


def _preflight(config: StudyConfig, data: Any) -> EvalResult:
    """Evaluate real images as if they were fakes: loads every network (a missing weight file fails
    here, once, in the parent) and fills the real-data cache before the workers start."""
    fakes = data.images[torch.arange(config.eval.n_fake) % len(data.images)]
    return evaluate(fakes, data, config.eval, device=config.devices[0])


def _prepare(config: StudyConfig, root: Path) -> tuple[StudyConfig, Any]:
    """Validate, resolve the data spec and cache folder, load the data; nothing is recorded yet."""
    validate(config)
    from lossbench.data import load_dataset
    from lossbench.study_config import resolve_data_spec

    config = dataclasses.replace(
        config,
        data=dataclasses.replace(config.data, spec=resolve_data_spec(config.data.spec)),
        eval=dataclasses.replace(config.eval, cache_dir=config.eval.cache_dir or str(root / "feature-cache")),
    )
    _check_weights(config)
    data = load_dataset(config.data.spec, config.data.resolution, config.data.classes)
    return config, data


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[states]}"),
        TimeElapsedColumn(),
        disable=not enabled,
    )


def _describe(states: dict[Cell, tuple[str, FrozenTrial | None]], cells: Sequence[Cell]) -> dict[str, int]:
    counts = dict.fromkeys(("done", "running", "queued", "failed", "pruned", "pending"), 0)
    for cell in cells:
        counts[states.get(cell, ("pending", None))[0]] += 1
    return counts


def run_study(
    config: StudyConfig,
    root: str | os.PathLike = "mlruns",
    progress: bool = False,
    cell_fn: CellFn = train_and_evaluate,
) -> StudySummary:
    """Run (or resume) the study `config.name`: every pending cell once, on `config.workers` processes.

    Everything lives under `root`: the journal storage, the MLflow store and artifacts (unless
    `storage` / `tracking_uri` name others), checkpoints and the real-data feature cache.
    `cell_fn` runs one cell (default: train, then evaluate). Raises LossbenchError for bad settings
    (before anything is recorded) and, after recording what they left, when workers died.
    """
    root = Path(root)
    config, data = _prepare(config, root)
    preflight = _preflight(config, data)

    storage = open_storage(config.storage, root)
    direction = "minimize" if DIRECTIONS[metric_key(config.objective)] == "min" else "maximize"
    study = optuna.create_study(
        study_name=config.name,
        storage=storage,
        direction=direction,
        sampler=_sampler(config),
        load_if_exists=True,
    )
    identity = _identity(config, data.fingerprint)
    if "config" in study.user_attrs:
        _check_identity(study.user_attrs["config"], identity, config.name)
    else:
        study.set_user_attr("config", identity)

    tracking_uri = config.tracking_uri or tracking.default_tracking_uri(root)
    artifact_root = root / tracking.ARTIFACTS_DIR if config.tracking_uri is None else None
    experiment_id = tracking.init_experiment(tracking_uri, config.name, artifact_root)
    weights = "random" if (config.train.random_weights or config.eval.random_weights) else "pretrained"
    parent_run_id = tracking.study_run(
        tracking_uri,
        experiment_id,
        config.name,
        tracking.flatten(identity),
        {"lossbench.weights": weights, "lossbench.storage": config.storage or str(root / JOURNAL)},
    )
    if preflight.real_features is not None and not tracking.has_artifact(
        tracking_uri, parent_run_id, "features/real.npy"
    ):
        tracking.log_features(tracking_uri, parent_run_id, preflight.real_features, "features/real.npy")

    n_before = len(study.get_trials(deepcopy=False))  # trials this run adds include the cells it queues
    recover(study, tracking_uri, experiment_id)
    _enqueue_pending(study, config)
    errors: list[str] = []
    status = "FINISHED"
    try:
        errors = _run_workers(
            study, config, root, (tracking_uri, experiment_id, parent_run_id), data, cell_fn, progress
        )
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        recover(study, tracking_uri, experiment_id)
        _enqueue_pending(study, config)  # cells left by dead workers wait for the next run
        states = cell_states(study)
        counts = _describe(states, grid_cells(config) if config.search == "grid" else sorted(states))
        if status == "FINISHED" and (errors or counts["pending"] or counts["queued"]):
            status = "FAILED"
        tracking.end_run(tracking_uri, parent_run_id, status, "; ".join(errors) or None)
    if errors:
        raise LossbenchError(
            f"{'; '.join(errors)}; what was recorded is kept and unfinished cells are queued: "
            "rerun the same command to continue"
        )
    return StudySummary(
        config.name,
        counts,
        len(study.get_trials(deepcopy=False)) - n_before,
        parent_run_id,
        tracking_uri,
        config.storage or str(root / JOURNAL),
    )


def _run_workers(
    study: optuna.Study,
    config: StudyConfig,
    root: Path,
    mlflow_ids: tuple[str, str, str],
    data: Any,
    cell_fn: CellFn,
    progress: bool,
) -> list[str]:
    """Start the workers (spawned processes), show the grid's progress, return what went wrong."""
    if not _work_left(study, config):
        return []
    n_waiting = len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
    n_workers = config.workers if config.search == "tpe" else max(1, min(config.workers, n_waiting))
    threads = max(1, len(os.sched_getaffinity(0)) // n_workers)
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(
            target=_worker_main,
            args=(
                _Job(
                    config,
                    str(root),
                    *mlflow_ids,
                    data,
                    config.devices[i % len(config.devices)],
                    threads,
                    i,
                    cell_fn,
                ),
            ),
            name=f"lossbench-worker-{i}",
        )
        for i in range(n_workers)
    ]
    for w in workers:
        w.start()
    cells = grid_cells(config)
    try:
        with _progress(progress) as bar:
            task = bar.add_task(config.name, total=len(cells) if config.search == "grid" else None, states="")
            while any(w.is_alive() for w in workers):
                states = cell_states(study)
                counts = _describe(states, cells if config.search == "grid" else sorted(states))
                bar.update(
                    task,
                    completed=counts["done"] + counts["failed"] + counts["pruned"],
                    states=", ".join(f"{n} {s}" for s, n in counts.items() if n and s != "done"),
                )
                time.sleep(1.0)
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


# ---------------------------------------------------------------------------------------------
# Reading a study back


def load_study(name: str, storage: str | None = None, root: str | os.PathLike = "mlruns") -> optuna.Study:
    """An existing study; ConfigError (one line) naming the storage and the studies it holds."""
    where = storage or Path(root) / JOURNAL
    if storage is None and not where.exists():
        raise ConfigError(
            f"no study storage at {where}; run 'lossbench study' first, or pass --root or --storage"
        )
    opened = open_storage(storage, root)
    try:
        return optuna.load_study(study_name=name, storage=opened)
    except KeyError:
        names = ", ".join(optuna.get_all_study_names(opened)) or "none"
        raise ConfigError(f"no study named {name!r} in {where} (studies: {names})") from None


def study_cells(study: optuna.Study) -> list[tuple[Cell, str, FrozenTrial | None]]:
    """Every cell of the study's grid (and any other cell tried) with its state and deciding trial."""
    ident = study.user_attrs.get("config", {})
    states = cell_states(study)
    cells = set(states)
    if ident.get("search") == "grid":
        cells |= set(_cells(ident["losses"], ident["lambdas"], ident["seeds"]))
    return [(cell, *states.get(cell, ("pending", None))) for cell in sorted(cells)]


def results_frame(name: str, storage: str | None = None, root: str | os.PathLike = "mlruns") -> pd.DataFrame:
    """One row per COMPLETE trial: study, trial, loss, lambda, seed, state, run_id, every metric, then
    the evaluation settings the metrics depend on (`setting.fid_extractor`, `setting.n_fake`, ...).

    Diverged or unfinished cells have no row: statistics treat them as missing."""
    study = load_study(name, storage, root)
    rows = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        cell = _trial_cell(t)
        if cell is None or "skipped" in t.user_attrs:
            continue
        row = {
            "study": name,
            "trial": t.number,
            "loss": cell.loss,
            "lambda": cell.lam,
            "seed": cell.seed,
            "state": t.state.name,
            "run_id": t.user_attrs.get("mlflow_run_id"),
        }
        row.update({k.removeprefix("metric."): v for k, v in t.user_attrs.items() if k.startswith("metric.")})
        row.update({k: v for k, v in t.user_attrs.items() if k.startswith("setting.")})
        rows.append(row)
    columns = ["study", "trial", "loss", "lambda", "seed", "state", "run_id"]
    frame = pd.DataFrame(rows, columns=list(dict.fromkeys(columns + [k for r in rows for k in r])))
    return frame.sort_values(["loss", "lambda", "seed"], ignore_index=True)
