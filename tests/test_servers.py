"""Smoke tests against real servers: Optuna on PostgreSQL from two processes, and an MLflow tracking
server (REST store on PostgreSQL, artifacts proxied). Marked `servers`; skipped where PostgreSQL cannot
start. About 30-60 s on two busy cores, most of it the MLflow server's start."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

pytestmark = pytest.mark.servers

WORKER = textwrap.dedent(
    """
    import os, sys, optuna
    storage = optuna.storages.RDBStorage(sys.argv[1], heartbeat_interval=1, grace_period=5)
    study = optuna.load_study(study_name="smoke", storage=storage)
    def objective(trial):
        trial.set_user_attr("pid", os.getpid())
        return trial.suggest_float("x", -1, 1) ** 2
    study.optimize(objective, n_trials=1)
    """
)


def test_optuna_rdb_storage_with_heartbeat_serves_two_processes(postgres):
    url = postgres.create_database("optuna_smoke")
    storage = optuna.storages.RDBStorage(url, heartbeat_interval=1, grace_period=5)
    optuna.create_study(study_name="smoke", storage=storage, direction="minimize")
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, url]) for _ in range(2)]
    assert [w.wait(timeout=120) for w in workers] == [0, 0]
    trials = optuna.load_study(study_name="smoke", storage=storage).get_trials(deepcopy=False)
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2
    assert {t.user_attrs["pid"] for t in trials} == {w.pid for w in workers}


def test_mlflow_server_run_params_tags_metric_and_proxied_artifact(mlflow_url, tmp_path):
    client = MlflowClient(mlflow_url)
    experiment_id = client.create_experiment("smoke")
    # The REST store takes only strings as tag values (the local SQLite store also took an int).
    with pytest.raises(TypeError):
        client.create_run(experiment_id, tags={"lossbench.seed": 3})
    run_id = client.create_run(experiment_id, tags={"lossbench.seed": str(3), "lossbench.lambda": str(0.5)})
    run_id = run_id.info.run_id
    client.log_param(run_id, "train.steps", 7)  # log_param stringifies
    client.log_param(run_id, "train.lr", 1e-4)
    client.log_metric(run_id, "fid", 12.5, step=3)
    (tmp_path / "report.txt").write_text("lossbench")
    client.log_artifact(run_id, str(tmp_path / "report.txt"), "reports")
    client.set_terminated(run_id)

    run = client.get_run(run_id)
    assert run.data.tags["lossbench.seed"] == "3" and run.data.tags["lossbench.lambda"] == "0.5"
    assert run.data.params == {"train.steps": "7", "train.lr": "0.0001"}
    assert [(m.value, m.step) for m in client.get_metric_history(run_id, "fid")] == [(12.5, 3)]
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")  # through the server's proxy
    local = client.download_artifacts(run_id, "reports/report.txt", str(tmp_path / "back"))
    assert Path(local).read_text() == "lossbench"


def test_postgres_restart_keeps_data_and_a_pre_pinging_storage_reconnects(postgres):
    """After `pg_ctl restart` a pooled connection is dead: a storage without `pool_pre_ping` fails
    its next commit (seen: StorageInternalError); with it, the pool reconnects."""
    url = postgres.create_database("optuna_restart")
    storage = optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
    study = optuna.create_study(study_name="restart", storage=storage)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    postgres.restart()
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    assert len(optuna.load_study(study_name="restart", storage=optuna.storages.RDBStorage(url)).trials) == 2
