"""MLflow tracking of studies: one parent run per study, one child run per trial, batched logging.

Conventions (every run made by lossbench follows them):
- experiment = study name; its artifacts live under `<root>/artifacts/<study>` for the default store;
- parent run tags `lossbench.role=study`, `lossbench.study`; it is found again by these tags on resume;
- child run tags `lossbench.role=trial`, `lossbench.study`, `lossbench.trial` (Optuna trial number),
  `lossbench.loss`, `lossbench.lambda`, `lossbench.seed`, `lossbench.weights` ("pretrained" or
  "random"), `lossbench.version`, `lossbench.git_commit`, and `mlflow.parentRunId` set explicitly (MLflow's
  own nesting is thread-local and does not reach worker processes);
- training curves `train/<term>` and evaluations `eval/<key>` are metrics with the generator step;
  final metrics use their plain keys (`fid`, `kid`, ...);
- artifacts: `samples/final.png`, `metrics.json`, `config.json`, `features/fake.npy` per trial,
  `features/real.npy` on the parent run.

Everything goes through `MlflowClient` with explicit run ids, so several worker processes can log to
one store. The store must be initialised (`init_experiment`) once, by one process, before workers
start: MLflow's first initialisation of a SQLite store is not safe under concurrency.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

import lossbench

DB_NAME = "mlflow.db"
ARTIFACTS_DIR = "artifacts"
MAX_FEATURE_ROWS = 500  # rows of fake features kept as an artifact
FLUSH_EVERY = 1000  # buffered metric values before an automatic flush

# Alembic and MLflow print every step of a new SQLite store's creation at INFO level.
for _name in ("alembic", "mlflow.store.db.utils"):
    logging.getLogger(_name).setLevel(logging.WARNING)


def default_tracking_uri(root: str | os.PathLike) -> str:
    """The embedded store under `root`: `sqlite:///<root>/mlflow.db` (relative roots stay relative)."""
    return f"sqlite:///{Path(root).as_posix()}/{DB_NAME}"


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """A nested config as flat `a.b.c -> str` pairs (lists as JSON), ready to be MLflow params."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = json.dumps(value) if isinstance(value, (list, tuple, dict)) else str(value)
    return flat


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
    return {"lossbench.version": lossbench.__version__, "lossbench.git_commit": git_commit()}


def init_experiment(tracking_uri: str, name: str, artifact_root: str | os.PathLike | None) -> str:
    """Create (or find) the experiment `name` and return its id; creates the store on first use.

    `artifact_root` None leaves the artifact location to the tracking server.
    """
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = Path(artifact_root, name).resolve().as_uri() if artifact_root is not None else None
    return client.create_experiment(name, artifact_location=location)


def study_run(
    tracking_uri: str, experiment_id: str, study: str, params: Mapping[str, str], tags: Mapping[str, str]
) -> str:
    """The id of the study's parent run, created on first call and reopened (RUNNING) on resume."""
    client = MlflowClient(tracking_uri)
    found = client.search_runs(
        [experiment_id],
        f"tags.`lossbench.role` = 'study' AND tags.`lossbench.study` = '{study}'",
        max_results=1,
        order_by=["attributes.start_time ASC"],
    )
    if found:
        run_id = found[0].info.run_id
        client.update_run(run_id, status="RUNNING")
    else:
        all_tags = {"lossbench.role": "study", "lossbench.study": study, **tags}
        run_id = client.create_run(experiment_id, tags=all_tags, run_name=study).info.run_id
        client.log_batch(run_id, params=[Param(k, v) for k, v in params.items()])
    client.log_batch(run_id, tags=[RunTag(k, v) for k, v in {**tags, **provenance_tags()}.items()])
    return run_id


def end_run(tracking_uri: str, run_id: str, status: str, reason: str | None = None) -> None:
    """Mark a run FINISHED, FAILED or KILLED; `reason` is kept as tag `lossbench.fail_reason`."""
    client = MlflowClient(tracking_uri)
    if reason:
        client.set_tag(run_id, "lossbench.fail_reason", reason)
    client.set_terminated(run_id, status)


def running_child_runs(tracking_uri: str, experiment_id: str) -> list[Any]:
    """The experiment's child (trial) runs still marked RUNNING."""
    return MlflowClient(tracking_uri).search_runs(
        [experiment_id], "tags.`lossbench.role` = 'trial' AND attributes.status = 'RUNNING'"
    )


def has_artifact(tracking_uri: str, run_id: str, path: str) -> bool:
    """Whether the run already holds the artifact `path` (e.g. "features/real.npy")."""
    folder = os.path.dirname(path) or None
    return any(f.path == path for f in MlflowClient(tracking_uri).list_artifacts(run_id, folder))


def log_features(tracking_uri: str, run_id: str, features: np.ndarray, path: str) -> None:
    """Store at most MAX_FEATURE_ROWS rows of a feature matrix as the `.npy` artifact `path`."""
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp, os.path.basename(path))
        np.save(local, np.asarray(features)[:MAX_FEATURE_ROWS])
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
        cls, tracking_uri: str, experiment_id: str, parent_run_id: str, name: str, tags: Mapping[str, str]
    ) -> TrialRun:
        """Create a child run of `parent_run_id` with the trial tags (role and provenance added)."""
        client = MlflowClient(tracking_uri)
        all_tags = {
            MLFLOW_PARENT_RUN_ID: parent_run_id,
            "lossbench.role": "trial",
            **provenance_tags(),
            **tags,
        }
        run = client.create_run(experiment_id, tags=all_tags, run_name=name)
        return cls(tracking_uri, run.info.run_id)

    def log_params(self, params: Mapping[str, Any]) -> None:
        self.client.log_batch(self.run_id, params=[Param(k, str(v)) for k, v in params.items()])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

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
