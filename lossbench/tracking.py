"""The MLflow layout of studies, writing and reading: one parent run per study, one child run per trial.

The layout (every run made by lossbench follows it; each name below is a constant of this module):
- experiment = study name; its artifacts live under `<root>/artifacts/<study>` for the default store;
- parent run tags `lossbench.role=study`, `lossbench.study`; it is found again by these tags on resume;
- child run tags `lossbench.role=trial`, `lossbench.study`, `lossbench.trial` (Optuna trial number),
  `lossbench.loss`, `lossbench.lambda`, `lossbench.seed`, `lossbench.weights` ("pretrained" or
  "random", from `weights_kind`), `lossbench.state` (COMPLETE or FAIL), `lossbench.version`,
  `lossbench.git_commit`, `lossbench.worker` (host, pid, token and start time of the worker process,
`lossbench.study.liveness`), and `mlflow.parentRunId` set explicitly (MLflow's own nesting is
  thread-local and does not reach worker processes); a failed run says why in `lossbench.fail_reason`;
- child runs are named `<loss> λ=<λ> s<seed>` and described (`mlflow.note.content`, shown as the
  run's description: loss, λ, seed, weights kind, settings); the dataset is a run input
  (`log_inputs`: name = data spec, digest = content fingerprint, context tag = split);
- training curves `train/<term>` and intermediate evaluations `eval/<key>` are metrics with the
  generator step; final metrics are logged once, with their plain keys (`fid`, `kid`, ...) at
  step 0, so MLflow's charts show one bar per run; evaluation settings are tags `setting.<key>`;
- the parent run holds the study's summary once cells are done: the table `summary.json` (metric,
  loss, λ, mean, sd, n over seeds; an MLflow table artifact), the tag `lossbench.best.<key>`
  naming the best cell and its mean, and a description (the verdict first);
  runs made with random network weights carry WARNING_TAG (`weights_warning`) and say so first in
  their description;
- λ is written by `config.lambda_text` everywhere (tags, params, names);
- artifacts: `samples/final.png`, `metrics.json`, `config.json`, `features/fake.npy` (and
  `features/fake_classes.npy`, conditional runs) per trial, `features/real.npy` (and
  `features/real_classes.npy`), `samples/real.png` (training images laid out as the sample grids), the
  verdict (`verdict.md`, also in the description) and the report (`report/`) on the parent run.

Everything goes through `MlflowClient` with explicit run ids, so several worker processes can log to
one store. The store must be initialised (`init_experiment`) once, by one process, before workers
start: MLflow's first initialisation of a SQLite store is not safe under concurrency. Reading
(`tracking_client`, `fetch_artifacts`) never creates a store.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from filelock import FileLock
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, Run, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_LOGGED_ARTIFACTS, MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NOTE

import lossbench
from lossbench.config import lambda_label, lambda_text
from lossbench.errors import ConfigError, DivergedError, StorageError
from lossbench.files import set_aside

DB_NAME = "mlflow.db"
ARTIFACTS_DIR = "artifacts"
# Metric prefixes (a final metric has its plain key).
TRAIN_PREFIX = "train/"
EVAL_PREFIX = "eval/"
# Artifacts.
SAMPLE_GRID = "samples/final.png"
REAL_GRID = "samples/real.png"  # on the parent run: training images laid out as the sample grids
REAL_CLASSES = "features/real_classes.npy"  # on the parent run: class name per row of REAL_FEATURES
METRICS_JSON = "metrics.json"
CONFIG_JSON = "config.json"
FAKE_FEATURES = "features/fake.npy"
FAKE_CLASSES = "features/fake_classes.npy"  # class name per row of FAKE_FEATURES (conditional runs)
CLOSEST_FAKES = "copies/closest.png"  # the fakes nearest a training image, above those images
REAL_FEATURES = "features/real.npy"  # on the parent run
REPORT_DIR = "report"  # on the parent run
VERDICT_FILE = "verdict.md"  # on the parent run: the verdict's tables (lossbench.analysis.verdict)
SUMMARY_TABLE = "summary.json"  # on the parent run: mean, sd and n over seeds per metric and cell
# Tags.
ROLE_TAG = "lossbench.role"  # "study" (parent run) or "trial" (child run)
STUDY_TAG = "lossbench.study"
TRIAL_TAG = "lossbench.trial"
LOSS_TAG = "lossbench.loss"
LAMBDA_TAG = "lossbench.lambda"
SEED_TAG = "lossbench.seed"
STATE_TAG = "lossbench.state"  # "COMPLETE" or "FAIL" (diverged), the trial's final state
WEIGHTS_TAG = "lossbench.weights"
STORAGE_TAG = "lossbench.storage"
DEVICE_TAG = "lossbench.device"
WORKER_TAG = "lossbench.worker"
RESUMED_FROM_TAG = "lossbench.resumed_from_step"
FAIL_REASON_TAG = "lossbench.fail_reason"
FUSED_TAG = "lossbench.fused"  # the number of cells trained in one fused group with this one
HANDOVER_FROM_TAG = "lossbench.handover_from"  # the checkpoint a retried cell took from another machine's run
BAD_CHECKPOINT_TAG = "lossbench.bad_checkpoint"  # a damaged checkpoint set aside; the cell restarted
BEST_CHECKPOINT_TAG = "lossbench.best_checkpoint"  # where, at which step and objective value
HEALTH_TAG = "lossbench.health"  # the run's training-health warnings (lossbench.health), "; "-joined
FORGOTTEN_TAG = "lossbench.forgotten"  # a finished trial run its Optuna storage lost (rerun with --force)
RESTORED_TAG = "lossbench.restored_from"  # a trial run rewritten from the Optuna records: the lost run's id
TAG_PREFIX = "lossbench."
BEST_TAG = "lossbench.best."  # + result key: the best cell, e.g. "wgangp λ=5: mean 31.2 over 5 seeds"
WARNING_TAG = "WARNING"  # on every run made with random network weights (`weights_warning`)
RANDOM_WARNING = "RANDOM NETWORK WEIGHTS: the metrics test the pipeline only, they are not comparable"
RANDOM_PERCEPTUAL_WARNING = (
    "RANDOM-WEIGHT VGG16 IN THE PERCEPTUAL LOSS: λ > 0 is not the paper's perceptual loss; "
    "the evaluation's networks are as its settings say"
)
DESCRIPTION_TAG = MLFLOW_RUN_NOTE  # shown by the MLflow UI as the run's description
SUMMARY_STEP = 0  # the step of final metrics: one value per run, drawn as bars
MAX_FEATURE_ROWS = 500  # rows of a feature matrix (real or fake) kept as an artifact (`kept_rows`)
FLUSH_EVERY = 1000  # buffered metric values before an automatic flush

# Alembic and MLflow print every step of a new SQLite store's creation at INFO level.
for _name in ("alembic", "mlflow.store.db.utils"):
    logging.getLogger(_name).setLevel(logging.WARNING)
# With a tracking server, MLflow prints two "View run ... at" lines on stdout for every run that ends
# (through the progress display); a study prints the link to its parent run once, at its end.
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


def default_tracking_uri(root: str | os.PathLike) -> str:
    """The embedded store under `root`: `sqlite:///<root>/mlflow.db` (relative roots stay relative)."""
    return f"sqlite:///{Path(root).as_posix()}/{DB_NAME}"


def _sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a `sqlite:///` tracking URI, else None."""
    return Path(tracking_uri.removeprefix("sqlite:///")) if tracking_uri.startswith("sqlite:///") else None


def check_store(tracking_uri: str) -> None:
    """StorageError (one line) when the SQLite store of `tracking_uri` exists but fails SQLite's
    `PRAGMA quick_check` (truncated, overwritten); other stores and absent files pass."""
    path = _sqlite_path(tracking_uri)
    if path is None or not path.is_file():
        return
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True)) as db:
            problems = [row[0] for row in db.execute("PRAGMA quick_check")]
    except sqlite3.DatabaseError as e:
        problems = [str(e)]
    if problems != ["ok"]:
        first = " ".join(str(problems[0]).split())[:160]  # quick_check's rows may span lines
        raise StorageError(
            f"MLflow store {path} is corrupt ({first}); restore it from a backup "
            "(the Optuna journal and artifacts beside it are untouched)"
        )


def _has_schema(db: Path) -> bool:
    """Whether the SQLite store `db` holds MLflow's complete schema (an `alembic_version` row)."""
    with contextlib.closing(sqlite3.connect(f"file:{db.resolve()}?mode=ro", uri=True)) as con:
        try:
            return con.execute("SELECT version_num FROM alembic_version").fetchone() is not None
        except sqlite3.OperationalError:  # no such table
            return False


def _ensure_store(db: Path) -> None:
    """Make the SQLite store at `db` unless a complete one is there. MLflow creates its schema in a
    file beside it (`<db>.new`), moved into place when done, so a kill cannot leave a half-made
    store. One without a complete schema (no `alembic_version` row: half-made before this was so,
    or emptied; MLflow refuses it for good, "table ... already exists") is set aside, said in one
    line, and made again. Call under the store's lock."""
    if db.is_file():
        if _has_schema(db):
            return
        aside = set_aside(db)
        print(
            f"warning: the MLflow store {db} has no complete schema (half-made by a first run killed while "
            f"creating it, or emptied); it is made again, the old file kept as {aside.name}",
            file=sys.stderr,
        )
    for stale in db.parent.glob(f"{db.name}.new-*"):  # left by a kill while creating (we hold the lock)
        stale.unlink(missing_ok=True)
    # A fresh name each time: MLflow keeps one engine per URI per process, and one that made a
    # schema before would not make it again in a new file of the same name.
    new = db.with_name(f"{db.name}.new-{uuid.uuid4().hex[:12]}")
    new_uri = f"sqlite:///{new.resolve()}"
    MlflowClient(new_uri).search_experiments(max_results=1)  # creates the schema
    _forget_engine(new_uri)
    os.replace(new, db)
    _forget_engine(f"sqlite:///{db}")
    _forget_engine(f"sqlite:///{db.resolve()}")


def _forget_engine(uri: str) -> None:
    """Close this process's MLflow engine of `uri`, if it has one: MLflow caches one per URI
    (`SqlAlchemyStore._engine_map`), whose open connections would go on reading a file that was
    replaced (a store set aside and made again within one process: tests, notebooks)."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore  # SQLAlchemy: only when needed

    engines = getattr(SqlAlchemyStore, "_engine_map", {})
    engine = engines.pop(uri, None)
    if engine is not None:
        engine.dispose()


def weights_warning(train: Any, eval: Any) -> str | None:
    """The warning a run made with random network weights carries: RANDOM_WARNING when the
    evaluation's networks are random (its numbers test the pipeline only), RANDOM_PERCEPTUAL_WARNING
    when only training's perceptual network is (the metrics, e.g. in a trained domain encoder's
    space, still measure the generators), None otherwise."""
    if eval.random_weights:
        return RANDOM_WARNING
    return RANDOM_PERCEPTUAL_WARNING if train.random_weights else None


def weights_kind(train: Any, eval: Any) -> str:
    """ "random" when the training or evaluation config asks for random network weights (demos,
    tests), else "pretrained": the one place this is decided (`train`/`eval`: TrainConfig/EvalConfig)."""
    return "random" if (train.random_weights or eval.random_weights) else "pretrained"


#: Errors that end a cell for good (never retried), and the start of their recorded reasons.
FINAL_ERRORS = {DivergedError: "diverged", ConfigError: "config error"}


def failure_reason(error: BaseException) -> str:
    """The reason recorded for a run or trial ended by `error`; a final one starts with its
    FINAL_ERRORS prefix ("diverged: ...", "config error: ...")."""
    for kind, prefix in FINAL_ERRORS.items():
        if isinstance(error, kind):
            return f"{prefix}: {error}"
    if isinstance(error, (KeyboardInterrupt, SystemExit)):
        return "interrupted"
    return f"{type(error).__name__}: {error}"


def ending_status(error: BaseException | None) -> str:
    """The MLflow status of a run ended by `error`: FINISHED (None), KILLED (interrupt), else FAILED."""
    if error is None:
        return "FINISHED"
    return "KILLED" if isinstance(error, (KeyboardInterrupt, SystemExit)) else "FAILED"


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """A nested config as flat `a.b.c -> str` pairs (lists as JSON), ready to be MLflow params."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, (list, tuple, dict)):
            flat[name] = json.dumps(value)
        else:
            flat[name] = f"{value:.15g}" if isinstance(value, float) else str(value)  # 5.0 -> "5"
    return flat


def as_strings(values: Mapping[str, Any]) -> dict[str, str]:
    """Tag or param values as strings: the one place lossbench converts them (a tracking server's REST
    store rejects anything else, e.g. an int tag value, where the local store accepted it)."""
    return {str(k): str(v) for k, v in values.items()}


@functools.cache
def git_commit() -> str:
    """The commit of the lossbench checkout (`-dirty` when it has local changes), or "unknown"."""
    here = Path(lossbench.__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}-dirty" if dirty else head


def provenance_tags() -> dict[str, str]:
    """Tags every lossbench run carries: package version and git commit."""
    return {f"{TAG_PREFIX}version": lossbench.__version__, f"{TAG_PREFIX}git_commit": git_commit()}


def init_experiment(tracking_uri: str, name: str, artifact_root: str | os.PathLike | None) -> str:
    """Create (or find) the experiment `name` and return its id; creates the store on first use.

    A SQLite store is checked first (`check_store`), and created under a file lock (`<db>.lock`):
    MLflow's first initialisation is not safe when two commands start at once. `artifact_root` None
    leaves the artifact location to the tracking server; otherwise the experiment's artifacts live
    in `<artifact_root>/<name>`, stored as an absolute path, and an existing experiment whose
    artifacts are elsewhere (the study folder was moved or copied) is a ConfigError.
    """
    check_store(tracking_uri)
    db = _sqlite_path(tracking_uri)
    lock = FileLock(f"{db}.lock") if db is not None else contextlib.nullcontext()
    location = Path(artifact_root, name).resolve().as_uri() if artifact_root is not None else None
    with lock:
        if db is not None:
            _ensure_store(db)
        client = MlflowClient(tracking_uri)
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            try:
                return client.create_experiment(name, artifact_location=location)
            except MlflowException:  # another machine created it at this moment
                experiment = client.get_experiment_by_name(name)
                if experiment is None:
                    raise
    if location is not None and experiment.artifact_location != location:
        raise ConfigError(
            f"the MLflow store {db or tracking_uri} keeps the artifacts of {name!r} in "
            f"{experiment.artifact_location}, not under this folder ({location}): the study folder was "
            "moved or copied; run from the original folder, or start a new study with another --root"
        )
    return experiment.experiment_id


def study_run(
    tracking_uri: str, experiment_id: str, study: str, params: Mapping[str, Any], tags: Mapping[str, Any]
) -> str:
    """The id of the study's parent run, created on first call and reopened (RUNNING) on resume; of
    two machines creating it at once, both end up with the first one (by start time, then id)."""
    client = MlflowClient(tracking_uri)

    def first() -> str | None:
        order = ["attributes.start_time ASC", "attributes.run_id ASC"]
        found = client.search_runs([experiment_id], _study_filter(study), max_results=1, order_by=order)
        return found[0].info.run_id if found else None

    run_id = first()
    if run_id is not None:
        client.update_run(run_id, status="RUNNING")
    else:
        all_tags = as_strings({ROLE_TAG: "study", STUDY_TAG: study, **tags})
        mine = client.create_run(experiment_id, tags=all_tags, run_name=study).info.run_id
        run_id = first()
        if run_id != mine:  # another machine created the study's run at the same time: the first one wins
            client.delete_run(mine)
        else:
            client.log_batch(run_id, params=[Param(k, v) for k, v in as_strings(params).items()])
    all_tags = as_strings({**tags, **provenance_tags()})
    client.log_batch(run_id, tags=[RunTag(k, v) for k, v in all_tags.items()])
    return run_id


def end_run(tracking_uri: str, run_id: str, status: str, reason: str | None = None) -> None:
    """Mark a run FINISHED, FAILED or KILLED; `reason` is kept as tag `lossbench.fail_reason`."""
    client = MlflowClient(tracking_uri)
    if reason:
        client.set_tag(run_id, FAIL_REASON_TAG, reason)
    client.set_terminated(run_id, status)


def running_child_runs(tracking_uri: str, experiment_id: str) -> list[Any]:
    """The experiment's child (trial) runs still marked RUNNING."""
    return MlflowClient(tracking_uri).search_runs(
        [experiment_id], f"tags.`{ROLE_TAG}` = 'trial' AND attributes.status = 'RUNNING'"
    )


def completed_trial_runs(client: MlflowClient, study: str) -> list[Any]:
    """The study's trial runs that finished COMPLETE and are not tagged forgotten (`FORGOTTEN_TAG`)."""
    experiment = client.get_experiment_by_name(study)
    if experiment is None:
        return []
    runs = client.search_runs(
        [experiment.experiment_id],
        f"tags.`{ROLE_TAG}` = 'trial' AND tags.`{STATE_TAG}` = 'COMPLETE' AND attributes.status = 'FINISHED'",
        max_results=50_000,
    )
    return [r for r in runs if FORGOTTEN_TAG not in r.data.tags]


def recorded_run_id(run: Any) -> str:
    """The run id the Optuna records name for a trial run: its own, or for a run restored from the
    records (`restore_trial_run`) the id of the run it replaces."""
    return run.data.tags.get(RESTORED_TAG, run.info.run_id)


def trial_run_name(loss: str, lam: float, seed: int) -> str:
    """A trial run's name: "wgangp λ=5 s0"."""
    return f"{loss} {lambda_label(lam)} s{seed}"


def trial_tags(study: str, number: int, loss: str, lam: float, seed: int) -> dict[str, Any]:
    """The tags that say which study, Optuna trial and cell a trial run belongs to."""
    return {STUDY_TAG: study, TRIAL_TAG: number, LOSS_TAG: loss, LAMBDA_TAG: lambda_text(lam), SEED_TAG: seed}


def restore_trial_run(
    tracking_uri: str,
    experiment_id: str,
    parent_run_id: str,
    name: str,
    tags: Mapping[str, Any],
    metrics: Mapping[str, float],
    lost_run_id: str,
) -> str:
    """Write a finished trial's run again from its Optuna records, after the store lost it: `name`,
    `tags` (cell, trial, settings), final `metrics` at SUMMARY_STEP, state COMPLETE, and RESTORED_TAG
    naming the lost run. Nothing else is invented: its description says what was lost with the store."""
    lost = "samples, features, training curves, config.json and params were lost with the store"
    description = (
        f"**Restored from the Optuna records** (run {lost_run_id} was lost): metrics and settings; {lost}."
    )
    all_tags = {**tags, RESTORED_TAG: lost_run_id, DESCRIPTION_TAG: description, STATE_TAG: "COMPLETE"}
    run = TrialRun.start(tracking_uri, experiment_id, parent_run_id, name, all_tags)
    run.log_metrics(metrics, SUMMARY_STEP)
    run.end("FINISHED")
    return run.run_id


def run_trial_number(run: Any) -> int:
    """The Optuna trial number of a child run (-1 when it has none)."""
    return int(run.data.tags.get(TRIAL_TAG, -1))


def _study_filter(study: str) -> str:
    return f"tags.`{ROLE_TAG}` = 'study' AND tags.`{STUDY_TAG}` = '{study}'"


def run_view_url(server: str, experiment_id: str, run_id: str) -> str:
    """The MLflow UI's page of one run (its description, metrics and artifacts)."""
    return f"{server.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def runs_view_url(server: str, experiment_id: str, order_by: str | None = None) -> str:
    """The MLflow UI's runs table of an experiment (it otherwise opens on its GenAI pages), sorted
    best first by `order_by` (a metric key) when given."""
    from lossbench.metrics import DIRECTIONS

    url = f"{server.rstrip('/')}/#/experiments/{experiment_id}/runs"
    if order_by is None:
        return url
    ascending = "true" if DIRECTIONS[order_by] == "min" else "false"
    return f"{url}?orderByKey=metrics.%60{order_by}%60&orderByAsc={ascending}"


def describe(lines: list[str], warning: str | None) -> str:
    """A run description (markdown): the run's `weights_warning` first when it has one."""
    return "\n\n".join(([f"**{warning}**"] if warning else []) + lines)


#: How MLflow's stores report a dataset inserted twice: SQLite, PostgreSQL (key "dataset_pk"), MySQL.
_DUPLICATE_DATASET = ("UNIQUE constraint failed: datasets", '"dataset_pk"', "for key 'datasets.PRIMARY'")


def log_dataset(tracking_uri: str, run_id: str, name: str, digest: str, split: str, n_images: int) -> None:
    """Record the training data as the run's input: name, content digest, split (context tag)."""
    profile = json.dumps({"num_images": n_images, "fingerprint": digest})
    dataset = Dataset(name=name, digest=digest[:36], source_type="local", source=name, profile=profile)
    tags = [InputTag("mlflow.data.context", split)]
    client = MlflowClient(tracking_uri)
    for attempt in range(3):
        try:
            client.log_inputs(run_id, datasets=[DatasetInput(dataset, tags)])
            return
        except MlflowException as e:
            # Two workers logging the same new dataset at once: MLflow looks it up, then inserts
            # it, and the slower insert breaks the (experiment, name, digest) key. Once inserted,
            # the next attempt finds it and only links it to this run.
            if not any(m in str(e) for m in _DUPLICATE_DATASET) or attempt == 2:
                raise


def log_study_summary(tracking_uri: str, run_id: str, summary: pd.DataFrame, best: pd.DataFrame) -> None:
    """The study's per-cell summary on its parent run (see the module docstring): `summary` and `best`
    as from `lossbench.analysis.stats.summarize` / `best_cells` (metric, loss, lambda, mean, sd, n). Neither
    is logged as metrics: MLflow's chart view draws a section per metric prefix, and a section of
    the parent's metrics alone is empty whenever the parent is not among the runs it shows (the
    runs table sorted by a metric lists the children first)."""
    first = ["metric", "loss", "lambda", "mean", "sd", "n"]
    table = summary.assign(**{"lambda": summary["lambda"].map(lambda_text)})
    table = table[first + [c for c in table.columns if c not in first]]
    # Written as MLflow's log_table writes a table (JSON, orient "split", and the tag that makes the
    # UI show it as one), but replaced on every call: log_table appends to an existing file, so each
    # rerun of the study would add its rows again.
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, SUMMARY_TABLE)
        table.to_json(path, orient="split", index=False)
        MlflowClient(tracking_uri).log_artifact(run_id, str(path))
    tags = [RunTag(MLFLOW_LOGGED_ARTIFACTS, json.dumps([{"path": SUMMARY_TABLE, "type": "table"}]))]
    tags += [
        RunTag(
            f"{BEST_TAG}{r['metric']}",
            f"{r['loss']} {lambda_label(r['lambda'])}: mean {r['mean']:.6g} over {r['n']:g} seeds",
        )
        for r in best.to_dict("records")
    ]
    MlflowClient(tracking_uri).log_batch(run_id, tags=tags)


def log_verdict(tracking_uri: str, run_id: str, description: str, document: str) -> None:
    """The study's verdict on its parent run: the run's description, and `VERDICT_FILE` (markdown,
    every verdict table) when `document` is not empty."""
    client = MlflowClient(tracking_uri)
    client.set_tag(run_id, DESCRIPTION_TAG, description)
    if document:
        client.log_text(run_id, document, VERDICT_FILE)


def has_artifact(tracking_uri: str, run_id: str, path: str) -> bool:
    """Whether the run already holds the artifact `path` (e.g. "features/real.npy")."""
    folder = os.path.dirname(path) or None
    return any(f.path == path for f in MlflowClient(tracking_uri).list_artifacts(run_id, folder))


def kept_rows(n: int) -> np.ndarray:
    """Indices of the rows of an n-row feature matrix that are logged: all of them up to
    MAX_FEATURE_ROWS, else that many spread evenly over the rows. Real images and fakes come class
    by class, so every class keeps its share (the first rows alone would drop the last classes)."""
    if n <= MAX_FEATURE_ROWS:
        return np.arange(n)
    return np.linspace(0, n - 1, MAX_FEATURE_ROWS).round().astype(int)


def log_features(tracking_uri: str, run_id: str, features: np.ndarray, path: str) -> None:
    """Store at most MAX_FEATURE_ROWS rows of a feature matrix (or of its class names) as the `.npy`
    artifact `path`: the rows `kept_rows` picks, the same for any two arrays of one length."""
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp, os.path.basename(path))
        values = np.asarray(features)
        np.save(local, values[kept_rows(len(values))])
        MlflowClient(tracking_uri).log_artifact(run_id, str(local), os.path.dirname(path) or None)


class TrialRun:
    """The MLflow child run of one trial. Metrics are buffered and written with `log_batch`."""

    def __init__(self, tracking_uri: str, run_id: str) -> None:
        self.client = MlflowClient(tracking_uri)
        self.tracking_uri = tracking_uri
        self.run_id = run_id
        self._buffer: list[Metric] = []

    @classmethod
    def start(
        cls, tracking_uri: str, experiment_id: str, parent_run_id: str, name: str, tags: Mapping[str, Any]
    ) -> TrialRun:
        """Create a child run of `parent_run_id` with the trial tags (role and provenance added; any
        value, converted by `as_strings`)."""
        client = MlflowClient(tracking_uri)
        all_tags = as_strings(
            {
                MLFLOW_PARENT_RUN_ID: parent_run_id,
                ROLE_TAG: "trial",
                **provenance_tags(),
                **tags,
            }
        )
        run = client.create_run(experiment_id, tags=all_tags, run_name=name)
        return cls(tracking_uri, run.info.run_id)

    def log_params(self, params: Mapping[str, Any]) -> None:
        self.client.log_batch(self.run_id, params=[Param(k, v) for k, v in as_strings(params).items()])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self.client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in as_strings(tags).items()])

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Buffer metric values at `step`; flushed every FLUSH_EVERY values and by `flush`/`end`."""
        now = int(time.time() * 1000)
        self._buffer.extend(Metric(k, float(v), now, int(step)) for k, v in metrics.items())
        if len(self._buffer) >= FLUSH_EVERY:
            self.flush()

    def flush(self) -> None:
        if self._buffer:
            self.client.log_batch(self.run_id, metrics=self._buffer)
            self._buffer = []

    def log_dict(self, data: Mapping[str, Any], artifact_file: str) -> None:
        self.client.log_dict(self.run_id, dict(data), artifact_file)

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def end(self, status: str = "FINISHED", reason: str | None = None) -> None:
        """Flush, then mark the run FINISHED, FAILED or KILLED (with `reason` as a tag)."""
        self.flush()
        end_run(self.tracking_uri, self.run_id, status, reason)


@contextlib.contextmanager
def ending(run: TrialRun) -> Iterator[TrialRun]:
    """Use `run`, then end it: FINISHED on a normal exit, KILLED on KeyboardInterrupt/SystemExit,
    FAILED on any other exception (with `failure_reason` as the reason); the exception goes on."""
    try:
        yield run
    except BaseException as e:
        run.end(ending_status(e), failure_reason(e))
        raise
    run.end("FINISHED")


# ------------------------------------------------------------------------------------- reading


@dataclass
class Artifacts:
    """What MLflow holds for the trials of a results frame; every part may be empty."""

    grids: dict[tuple[str, float], bytes] = field(default_factory=dict)  # PNG bytes per cell (lowest seed)
    # term -> (loss, lambda, steps, values) per trial run: training terms (`train/`) and quality
    # curves (`eval/`, without their _std), each whole across the runs that trained the cell in turn
    curves: dict[str, list[tuple[str, float, list[int], list[float]]]] = field(default_factory=dict)
    quality: dict[str, list[tuple[str, float, list[int], list[float]]]] = field(default_factory=dict)
    real_features: np.ndarray | None = None
    real_classes: np.ndarray | None = None  # class name per row of real_features
    fake_features: dict[tuple[str, float], np.ndarray] = field(default_factory=dict)
    fake_classes: dict[tuple[str, float], np.ndarray] = field(default_factory=dict)
    closest: dict[tuple[str, float], bytes] = field(default_factory=dict)  # PNG per cell (lowest seed)
    real_grid: bytes | None = None  # PNG of training images, laid out as the sample grids
    parent_run_id: str | None = None


def tracking_client(
    tracking_uri: str | None = None, root: str | os.PathLike = "mlruns"
) -> MlflowClient | None:
    """An `MlflowClient` on `tracking_uri` (default: the embedded store under `root`), or None when
    that is a SQLite file that does not exist or holds no schema (emptied, half-made): such a store
    holds no run, and reading never creates or repairs one (`init_experiment` does)."""
    uri = tracking_uri or default_tracking_uri(root)
    path = _sqlite_path(uri)
    if path is not None and not path.is_file():
        return None
    check_store(uri)
    if path is not None and not _has_schema(path):
        return None
    return MlflowClient(tracking_uri=uri)


def _download(client: MlflowClient, run_id: str, path: str, tmp: Path) -> Path | None:
    try:
        return Path(client.download_artifacts(run_id, path, str(tmp)))
    except (MlflowException, OSError):
        return None


def find_study_run(client: MlflowClient, study: str | None, trial_run_ids: list[str]) -> str | None:
    """The study's parent run: the first trial run's `mlflow.parentRunId`, else the run tagged
    role=study of experiment `study`; None when neither is found."""
    for run_id in trial_run_ids[:1]:
        parent = client.get_run(run_id).data.tags.get(MLFLOW_PARENT_RUN_ID)
        if parent:
            return parent
    experiment = client.get_experiment_by_name(study) if study else None
    if experiment is None:
        return None
    runs = client.search_runs([experiment.experiment_id], filter_string=_study_filter(study), max_results=1)
    return runs[0].info.run_id if runs else None


def fetch_artifacts(df: pd.DataFrame, client: MlflowClient | None, study: str | None = None) -> Artifacts:
    """Sample grids, training curves and features of the runs in `df["run_id"]` (missing parts
    skipped); `study` (default: the frame's `study` column) finds the parent run if no trial names it."""
    art = Artifacts()
    if client is None or "run_id" not in df.columns:
        return art
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per file otherwise
    rows = df.dropna(subset=["run_id"]).sort_values(["loss", "lambda", "seed"])
    rows = rows.assign(loss=rows["loss"].astype(str), run_id=rows["run_id"].astype(str))
    if study is None and "study" in df.columns and len(df):
        study = str(df["study"].iloc[0])
    by_cell: dict[str, dict[tuple[str, str, str, str], list[Run]]] = {}  # experiment id -> `_runs_by_cell`
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for r in rows.to_dict("records"):
            cell, run_id = (r["loss"], float(r["lambda"])), r["run_id"]
            try:
                run = client.get_run(run_id)
            except MlflowException:
                continue
            experiment = run.info.experiment_id
            if experiment not in by_cell:
                by_cell[experiment] = _runs_by_cell(experiment, client)
            key = _cell_key(run.data.tags)
            same_cell = by_cell[experiment].get(key, []) if all(key) else []  # untagged: itself only
            turns = [run, *(other for other in same_cell if other.info.run_id != run_id)]  # itself first
            for metric in sorted({k for turn in turns for k in turn.data.metrics}):
                for prefix, curves in ((TRAIN_PREFIX, art.curves), (EVAL_PREFIX, art.quality)):
                    if metric.startswith(prefix) and not metric.endswith("_std"):
                        steps, values = _whole_history(client, turns, metric)
                        if steps:
                            curves.setdefault(metric.removeprefix(prefix), []).append((*cell, steps, values))
            if cell not in art.grids and (png := _download(client, run_id, SAMPLE_GRID, tmp)):
                art.grids[cell] = png.read_bytes()
            if cell not in art.closest and (png := _download(client, run_id, CLOSEST_FAKES, tmp)):
                art.closest[cell] = png.read_bytes()
            if cell not in art.fake_features and (npy := _download(client, run_id, FAKE_FEATURES, tmp)):
                art.fake_features[cell] = np.load(npy)
                if npy := _download(client, run_id, FAKE_CLASSES, tmp):
                    art.fake_classes[cell] = np.load(npy)
        try:
            art.parent_run_id = find_study_run(client, study, list(dict.fromkeys(rows["run_id"])))
        except MlflowException:
            art.parent_run_id = None
        if art.parent_run_id and (npy := _download(client, art.parent_run_id, REAL_FEATURES, tmp)):
            art.real_features = np.load(npy)
            if npy := _download(client, art.parent_run_id, REAL_CLASSES, tmp):
                art.real_classes = np.load(npy)
        if art.parent_run_id and (png := _download(client, art.parent_run_id, REAL_GRID, tmp)):
            art.real_grid = png.read_bytes()
    return art


def _cell_key(tags: dict[str, str]) -> tuple[str, str, str, str]:
    return tags.get(STUDY_TAG, ""), tags.get(LOSS_TAG, ""), tags.get(LAMBDA_TAG, ""), tags.get(SEED_TAG, "")


def _runs_by_cell(experiment_id: str, client: MlflowClient) -> dict[tuple[str, str, str, str], list[Run]]:
    """The trial runs of an experiment by (study, loss, lambda, seed) tags, newest first."""
    runs = client.search_runs(
        [experiment_id], f"tags.`{ROLE_TAG}` = 'trial'", max_results=50_000, order_by=["start_time DESC"]
    )
    out: dict[tuple[str, str, str, str], list[Run]] = {}
    for run in runs:
        out.setdefault(_cell_key(run.data.tags), []).append(run)
    return out


def _started_from(run: Run) -> int | None:
    """The step a trial run's training started from (RESUMED_FROM_TAG), None where not recorded."""
    step = run.data.tags.get(RESUMED_FROM_TAG, "")
    return int(step) if step.isdigit() else None


def _whole_history(client: MlflowClient, runs: list[Run], key: str) -> tuple[list[int], list[float]]:
    """The metric `key` of one cell by step across the runs that trained it in turn (`runs`: the
    finished one first, then the cell's earlier runs, newest first). A run that started from step S
    holds the steps after S; the steps up to S come from the runs before it, down to one that
    started at 0. A run without a start step that logged nothing ran no step (runs before
    2026-12-06 were tagged at their first step only) and is passed over; one that logged steps
    without it ends the search. A step logged twice keeps the later run's value (resumption
    replays it exactly)."""
    by_step: dict[int, float] = {}
    limit = float("inf")
    for run in runs:
        resumed = _started_from(run)
        history = client.get_metric_history(run.info.run_id, key) if key in run.data.metrics else []
        for m in history:
            if m.step <= limit:
                by_step.setdefault(m.step, m.value)
        if resumed is None and not history:
            continue
        if not resumed:  # started from step 0, or from a step not recorded
            break
        limit = min(limit, resumed)
    steps = sorted(by_step)
    return steps, [by_step[k] for k in steps]


def log_report(
    client: MlflowClient, run_id: str, folder: str | os.PathLike, files: list[str | os.PathLike]
) -> None:
    """Log the report's `files` (inside `folder`, which may hold anything else) to the study's
    parent run under `report/`, keeping their paths relative to `folder`."""
    for path in files:
        relative = Path(path).resolve().relative_to(Path(folder).resolve())
        parent = relative.parent.as_posix()
        client.log_artifact(run_id, str(path), f"{REPORT_DIR}/{parent}" if parent != "." else REPORT_DIR)
