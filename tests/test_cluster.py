"""Several machines: worker identity and liveness (pid reuse), re-queueing a dead machine's cell once,
and, with real servers (marker `servers`: PostgreSQL + `mlflow server`), two "machines" (process trees
started from different folders with different host identities) sharing one grid; one killed with
SIGKILL mid-trial (and, with cells that really train, the other resuming its checkpoint);
PostgreSQL restarted mid-study; the MLflow server killed mid-study, back within MLflow's retries or
after them. Cells are `cluster_machine.slow_cell` (1 s sleeps),
so the server tests measure the machinery, not training."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import torch
from mlflow import MlflowClient
from optuna.exceptions import StorageInternalError
from optuna.trial import TrialState
from servers import MlflowServer, free_port
from sqlalchemy.exc import IntegrityError, OperationalError, PendingRollbackError

from lossbench import tracking
from lossbench.config import StudyConfig
from lossbench.errors import ConfigError, StorageUnavailable, TrackingUnavailable, lossbench_error_in
from lossbench.files import load_tensors
from lossbench.study import grid_cells, handover, open_storage, rdb
from lossbench.study.grid import Cell
from lossbench.study.liveness import HOST_ENV, Worker, current_worker
from lossbench.study.queue import Requeue, cell_states, enqueue, recover, trial_cell

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent


def _local_study(name: str, tmp_path: Path) -> tuple[optuna.Study, str, str, str]:
    """A study in a journal under `tmp_path`, with its MLflow store, experiment and parent run:
    (study, tracking URI, experiment id, parent run id)."""
    study = optuna.create_study(study_name=name, storage=open_storage(None, tmp_path))
    uri = tracking.default_tracking_uri(tmp_path)
    exp = tracking.init_experiment(uri, name, tmp_path / "artifacts")
    return study, uri, exp, tracking.study_run(uri, exp, name, {}, {})


def _running_trial(study: optuna.Study, cell: Cell, worker: Worker, uri: str, exp: str, parent: str):
    """A queued cell taken by `worker` (RUNNING, with an MLflow run), as a worker would leave it."""
    enqueue(study, cell)
    trial = study.ask()
    for key, value in worker.attrs().items():
        trial.set_user_attr(key, value)
    run = tracking.TrialRun.start(uri, exp, parent, cell.key, {tracking.TRIAL_TAG: trial.number})
    trial.set_user_attr("mlflow_run_id", run.run_id)
    return trial, run.run_id


def test_the_retrying_storage_wraps_every_database_method_of_optuna():
    """Issue #27: the wrapper names RDBStorage's methods one by one; a method Optuna adds or renames
    (get_trial_user_attrs was missed on Optuna 5.1) would reach the database unprotected."""
    public = {n for n, f in vars(optuna.storages.RDBStorage).items() if callable(f) and not n.startswith("_")}
    assert public - set(rdb.NOT_DATABASE) <= set(rdb._CALLS), sorted(
        public - set(rdb.NOT_DATABASE) - set(rdb._CALLS)
    )
    for name in rdb._CALLS:  # every wrapped name still exists and is wrapped
        assert getattr(rdb.RetryingRDBStorage, name) is not getattr(optuna.storages.RDBStorage, name), name


def test_worker_identity_round_trips_and_other_hosts_are_not_judged_here(monkeypatch):
    me = current_worker()
    assert me.pid == os.getpid() and me.started is not None and len(me.token) == 8
    assert Worker.from_attrs(me.attrs()) == me and me.alive_here() is True
    assert Worker.from_attrs({"pid": 3}) is None
    monkeypatch.setenv(HOST_ENV, "elsewhere")
    assert me.alive_here() is None  # another host: only a heartbeat can tell


def test_a_reused_pid_is_a_dead_worker_and_its_cell_is_requeued_once(tmp_path):
    """A RUNNING trial whose recorded pid is alive but started at another time (the pid was reused)."""
    study, uri, exp, parent = _local_study("reuse", tmp_path)
    me = current_worker()
    reused = Worker(me.host, me.pid, "deadbeef", me.started - 5.0)
    dead, dead_run = _running_trial(study, Cell("bce", 1.0, 0), reused, uri, exp, parent)
    live, live_run = _running_trial(study, Cell("bce", 1.0, 1), me, uri, exp, parent)

    recover(study, uri, exp)
    recover(study, uri, exp)  # a second recovery changes nothing
    trials = study.get_trials()
    assert trials[dead.number].state == TrialState.FAIL
    assert trials[dead.number].user_attrs["fail_reason"].startswith(f"worker pid {me.pid} died")
    assert trials[live.number].state == TrialState.RUNNING
    client = MlflowClient(uri)
    assert client.get_run(dead_run).info.status == "KILLED"
    assert "deadbeef" in client.get_run(dead_run).data.tags[tracking.FAIL_REASON_TAG]
    assert client.get_run(live_run).info.status == "RUNNING"
    (retry,) = [t for t in trials if t.state == TrialState.WAITING]
    assert retry.user_attrs["retry_of"] == dead.number and trial_cell(retry) == Cell("bce", 1.0, 0)


def test_a_retried_cell_is_taken_before_the_cells_that_never_ran(tmp_path):
    """Optuna takes WAITING trials in creation order: a retry (its cell has a checkpoint) queued
    behind 20 new cells waited hours on BUSI (#24). A new cell a worker already took is left alone."""
    study, uri, exp, parent = _local_study("order", tmp_path)
    me = current_worker()
    dead, _ = _running_trial(
        study, Cell("bce", 1.0, 0), Worker(me.host, me.pid, "gone", me.started - 5), uri, exp, parent
    )
    for seed in (1, 2, 3):
        enqueue(study, Cell("bce", 1.0, seed))
    taken = study.ask()  # a worker took seed 1 meanwhile
    assert trial_cell(taken) == Cell("bce", 1.0, 1)

    recover(study, uri, exp)
    recover(study, uri, exp)  # nothing left to move
    trials = study.get_trials()
    waiting = [t for t in trials if t.state == TrialState.WAITING]
    assert [trial_cell(t).seed for t in waiting] == [0, 2, 3]
    assert waiting[0].user_attrs["retry_of"] == dead.number
    moved = [t for t in trials if t.state == TrialState.PRUNED]
    assert [trial_cell(t).seed for t in moved] == [2, 3]
    assert all(t.user_attrs["skipped"] == "queued again behind retried cells" for t in moved)
    assert trials[taken.number].state == TrialState.RUNNING
    states = {c.seed: s for c, (s, _) in cell_states(study).items()}
    assert states == {0: "queued", 1: "running", 2: "queued", 3: "queued"}


def test_two_dead_workers_move_each_new_cell_behind_the_retries_once(tmp_path):
    """A machine restarted after both its workers died: `recover` queues two retries, and each cell
    that never ran is queued again once behind both (not once per retry: 2 x the queue of pruned
    copies in the journal)."""
    study, uri, exp, parent = _local_study("twice", tmp_path)
    me = current_worker()
    gone = Worker(me.host, me.pid, "gone", me.started - 5)
    dead = [_running_trial(study, Cell("bce", 1.0, seed), gone, uri, exp, parent)[0] for seed in (0, 1)]
    for seed in (2, 3, 4):
        enqueue(study, Cell("bce", 1.0, seed))

    recover(study, uri, exp)
    trials = study.get_trials()
    waiting = [
        (trial_cell(t).seed, t.user_attrs.get("retry_of")) for t in trials if t.state == TrialState.WAITING
    ]
    assert waiting == [(0, dead[0].number), (1, dead[1].number), (2, None), (3, None), (4, None)]
    moved = [trial_cell(t).seed for t in trials if t.state == TrialState.PRUNED]
    assert moved == [2, 3, 4]


def test_a_cell_requeued_by_heartbeat_waits_before_the_cells_that_never_ran(tmp_path):
    """Optuna fails another machine's stale trial from inside a worker's loop and calls `Requeue`
    (no `recover` runs then): its retry too goes ahead of the new cells. Two machines that queued at
    once leave a duplicate of the dead cell waiting; run first, it took the cell from the retry."""
    study, uri, exp, parent = _local_study("stale", tmp_path)
    dead, _ = _running_trial(study, Cell("bce", 1.0, 0), current_worker(), uri, exp, parent)
    for seed in (0, 1):  # seed 0: the duplicate
        enqueue(study, Cell("bce", 1.0, seed))
    study._storage.set_trial_state_values(dead._trial_id, TrialState.FAIL)
    Requeue(uri)(study, study.get_trials()[dead.number])
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert [(trial_cell(t).seed, t.user_attrs.get("retry_of")) for t in waiting] == [
        (0, dead.number),
        (0, None),
        (1, None),
    ]


def test_storage_retries_an_unreachable_database_then_gives_up_in_one_line(monkeypatch):
    monkeypatch.setattr(rdb, "FIRST_DELAY_S", 0.01)
    calls = []

    def flaky(self, n):
        calls.append(n)
        if len(calls) < 3:
            raise StorageInternalError("commit") from OperationalError("SELECT 1", {}, Exception("refused"))
        return n

    def down(self):
        calls.append("down")
        raise OperationalError("SELECT 1", {}, Exception("server closed the connection"))

    def invalid(self):
        raise StorageInternalError("value too long") from ValueError("too long")

    def rolled_back(self):  # seen in a PostgreSQL restart: the rollback itself fails
        calls.append(0)
        if len(calls) < 2:
            try:
                raise OperationalError("SELECT 1", {}, Exception("server closed the connection"))
            except OperationalError:
                try:
                    raise PendingRollbackError("Can't reconnect until invalid transaction is rolled back")  # noqa: B904
                except PendingRollbackError as e:
                    raise StorageInternalError("commit") from e
        return "ok"

    storage = SimpleNamespace(retry_s=0.2)
    assert rdb._retrying(flaky)(storage, 5) == 5 and len(calls) == 3
    calls.clear()
    assert rdb._retrying(rolled_back)(storage) == "ok" and len(calls) == 2
    calls.clear()
    with pytest.raises(StorageInternalError):  # not a lost connection: not retried
        rdb._retrying(invalid)(storage)
    calls.clear()
    with pytest.raises(StorageUnavailable, match=r"did not answer for 0.2 s \(.*server closed"):
        rdb._retrying(down)(storage)
    # 0.01 s doubling: attempts at about 0, 0.01, 0.03, 0.07 and 0.15 s, the next would start after
    # 0.2 s; a loaded machine may lose the last one or two (counted, not timed)
    assert 3 <= len(calls) <= 5
    calls.clear()
    with pytest.raises(StorageUnavailable):  # once given up, one try until a call succeeds
        rdb._retrying(down)(storage)
    assert calls == ["down"]
    assert rdb._retrying(lambda self: 7)(storage) == 7 and storage._gave_up is False
    calls.clear()
    assert rdb._retrying(flaky)(storage, 1) == 1 and len(calls) == 3  # back: retried again


def test_a_machine_losing_the_race_to_create_the_tables_retries_until_they_exist(monkeypatch):
    """Seen on CI: two machines opening a fresh database, the loser collided twice (tables, then
    Alembic's version table); one retry was not enough."""
    monkeypatch.setattr(rdb, "FIRST_DELAY_S", 0.01)
    attempts = []

    def racing(self, url, **kwargs):
        attempts.append(url)
        if len(attempts) < 4:
            raise IntegrityError("CREATE TABLE alembic_version", {}, Exception("duplicate key value"))

    monkeypatch.setattr(rdb.RDBStorage, "__init__", racing)
    rdb.RetryingRDBStorage("postgresql://db/x", retry_s=1)
    assert len(attempts) == 4
    monkeypatch.setattr(rdb, "TABLES_RACE_S", 0.05)
    attempts.clear()
    with pytest.raises(StorageUnavailable, match="cannot create Optuna's tables in postgresql://db/x"):
        rdb.RetryingRDBStorage("postgresql://db/x", retry_s=0)
    assert 1 < len(attempts) < 4


def test_a_worker_finds_our_error_behind_the_one_optuna_raises_while_handling_it():
    try:
        try:
            raise StorageUnavailable("the study database did not answer for 4 s")
        except StorageUnavailable:
            raise UnboundLocalError("updated_state") from None  # Optuna's tell, when get_trial fails too
    except UnboundLocalError as e:
        assert str(lossbench_error_in(e)).startswith("the study database did not answer")
    assert lossbench_error_in(ValueError("other")) is None


def test_a_handed_over_checkpoint_is_the_furthest_intact_one(tmp_path):
    """study/handover.py on a file store (the server only carries the files): a trial takes the
    furthest upload of the earlier trials of its cell (retried or not: two machines that queued one
    cell at once can leave a dead trial's cell to the duplicate rather than to its retry), never
    another cell's, never a slot being written, never a file that fails its digest, and keeps a local
    checkpoint that is further."""
    uri = tracking.default_tracking_uri(tmp_path)
    exp = tracking.init_experiment(uri, "h", tmp_path / "artifacts")
    study = optuna.create_study()
    client = MlflowClient(uri)

    def attempt(retry_of: int | None, seed: int = 0) -> tuple[optuna.Trial, str]:
        trial = study.ask()
        run_id = client.create_run(exp).info.run_id
        for key, value in {"mlflow_run_id": run_id, "loss": "bce", "lambda": 0.5, "seed": seed}.items():
            trial.set_user_attr(key, value)
        if retry_of is not None:
            trial.set_user_attr("retry_of", retry_of)
        return trial, run_id

    def checkpoint(folder: Path, step: int) -> list[Path]:
        folder.mkdir(parents=True, exist_ok=True)
        torch.save({"step": step}, folder / "checkpoint.pt")
        torch.save({"step": step, "best": {"fid": 1.0}}, folder / "best.pt")
        return [folder / "checkpoint.pt", folder / "best.pt"]

    first, first_run = attempt(None)
    second, second_run = attempt(first.number)
    handover.upload(client, first_run, 20, checkpoint(tmp_path / "a", 20))
    handover.upload(client, first_run, 30, checkpoint(tmp_path / "a", 30))  # the other slot
    handover.upload(client, second_run, 10, checkpoint(tmp_path / "b", 10))  # a lesser later attempt
    slots = {json.loads(client.get_run(first_run).data.tags[handover.HANDOVER_TAG])["slot"]}
    torch.save({"step": 40}, tmp_path / "a" / "checkpoint.pt")  # an upload of step 40 killed halfway:
    client.log_artifact(first_run, str(tmp_path / "a" / "checkpoint.pt"), handover.SLOTS[0])  # tag unchanged
    other_cell, other_run = attempt(None, seed=1)
    handover.upload(client, other_run, 50, checkpoint(tmp_path / "o", 50))
    third, _ = attempt(None)  # a duplicate of the cell, not a retry
    local = tmp_path / "c" / "checkpoint.pt"
    (local.parent / f"{handover.PARTIAL}killed").mkdir(parents=True)  # a download killed with -9
    assert (
        handover.take_over(third, uri, local) == f"took over the checkpoint of step 30 from run {first_run}"
    )
    assert load_tensors(local)["step"] == 30 and load_tensors(local.parent / "best.pt")["step"] == 30
    assert not list(local.parent.glob(f"{handover.PARTIAL}*"))
    assert slots == {handover.SLOTS[1]} and handover.take_over(third, uri, local) is None  # nothing further
    local.unlink()
    artifact = Path(client.download_artifacts(first_run, handover.SLOTS[1], str(tmp_path / "d")))
    stored = Path(client.get_run(first_run).info.artifact_uri.removeprefix("file://"))
    (stored / handover.SLOTS[1] / "best.pt").write_bytes(b"x")
    assert artifact.exists() and handover.take_over(third, uri, local).endswith(
        "does not match its digest; not taken"
    )
    assert not local.exists()


def test_a_tracking_server_that_does_not_answer_is_one_line_naming_it(monkeypatch):
    """MLflow wraps the refused connection in its own error; the chain is searched (errors.py)."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    server = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(Exception) as caught:
        MlflowClient(server).get_run("0" * 32)
    known = lossbench_error_in(caught.value)
    assert isinstance(known, TrackingUnavailable) and "\n" not in str(known)
    assert str(known).startswith(f"the tracking server {server} did not answer (connection refused); rerun")
    assert lossbench_error_in(OSError("disk")) is None


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql+psycopg://me:secret@127.0.0.1:1/x", r"cannot open .*me:\*\*\*@127.0.0.1:1/x: .*refused"),
        ("notadb://x", "cannot open the study database notadb://x"),
    ],
)
def test_an_unreachable_or_unknown_database_is_one_line_without_the_password(url, message):
    pytest.importorskip("psycopg")
    with pytest.raises(StorageUnavailable, match=message) as caught:
        open_storage(url)
    assert "secret" not in str(caught.value) and "\n" not in str(caught.value)


def test_heartbeat_settings_are_checked():
    with pytest.raises(ConfigError, match="grace_s"):
        StudyConfig(heartbeat_s=10, grace_s=10)
    with pytest.raises(ConfigError, match="heartbeat_s"):
        StudyConfig(heartbeat_s=0)


# ------------------------------------------------------------------------------- with real servers


def _config(storage: str, tracking_uri: str) -> StudyConfig:
    sys.path.insert(0, str(TESTS))
    import cluster_machine

    return cluster_machine.config("x", storage, tracking_uri)


@pytest.mark.servers
def test_two_machines_recovering_one_stale_trial_at_once_requeue_it_once(postgres, mlflow_url, tmp_path):
    url = postgres.create_database("race")
    config = _config(url, mlflow_url)
    study = optuna.create_study(study_name="race", storage=open_storage(url, tmp_path, config, mlflow_url))
    exp = tracking.init_experiment(mlflow_url, "race", None)
    parent = tracking.study_run(mlflow_url, exp, "race", {}, {})
    gone = Worker("machine-gone", 1, "0badc0de", 0.0)
    trial, run_id = _running_trial(study, Cell("bce", 3.0, 2), gone, mlflow_url, exp, parent)
    study._storage.record_heartbeat(trial._trial_id)
    time.sleep(config.grace_s + 1)

    def machine() -> None:
        mine = optuna.load_study(study_name="race", storage=open_storage(url, tmp_path, config, mlflow_url))
        recover(mine, mlflow_url, exp)

    threads = [threading.Thread(target=machine) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    trials = study.get_trials()
    assert trials[trial.number].state == TrialState.FAIL
    assert [t.user_attrs.get("retry_of") for t in trials if t.state == TrialState.WAITING] == [trial.number]
    assert MlflowClient(mlflow_url).get_run(run_id).info.status == "KILLED"


def _machine(folder: Path, host: str, url: str, mlflow_url: str, name: str, *args: str) -> subprocess.Popen:
    """`cluster_machine.main` in `folder` as host `host`, with `args` after the study name: its own
    process group (parent + workers)."""
    folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, HOST_ENV: host, "PYTHONPATH": f"{REPO}{os.pathsep}{TESTS}", "OMP_NUM_THREADS": "1"}
    env["PYTHONFAULTHANDLER"] = "1"  # a crash in C (seen once: SIGABRT during a restart) shows its stacks
    argv = [
        sys.executable,
        "-c",
        "import cluster_machine; cluster_machine.main()",
        url,
        mlflow_url,
        name,
        *args,
    ]
    out = (folder / "out.log").open("w")
    machine = subprocess.Popen(
        argv, cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
    )
    machine.log = Path(out.name)  # read by _wait when the machine fails
    return machine


def _completed(trials: list, dead) -> list:
    """The COMPLETE trials of dead's cell: its retry's, or a duplicate's that two machines queued at
    once and that ran first (both take over the cell's checkpoint, study/handover.py)."""
    return [t for t in trials if t.state == TrialState.COMPLETE and trial_cell(t) == trial_cell(dead)]


def _poll(url: str, name: str, state: TrialState, enough: int, timeout: float = 120) -> list:
    """Wait until the study `name` has `enough` trials in `state` that have an MLflow run; those trials."""
    storage = open_storage(url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            trials = optuna.load_study(study_name=name, storage=storage).get_trials(states=(state,))
        except KeyError:  # the study is not created yet
            trials = []
        trials = [t for t in trials if "mlflow_run_id" in t.user_attrs]
        if len(trials) >= enough:
            return trials
        time.sleep(0.1)
    raise AssertionError(f"{name}: fewer than {enough} {state.name} trials after {timeout} s")


def _wait(machines: list[subprocess.Popen], timeout: float = 150) -> None:
    """Every machine exits 0; else the assertion shows the failed machine's output."""
    for m in machines:
        assert m.wait(timeout=timeout) == 0, f"{m.log.parent.name} failed:\n{m.log.read_text()[-4000:]}"


def _check_grid(url: str, mlflow_url: str, name: str) -> tuple[list, list]:
    """Exactly one COMPLETE trial and one FINISHED child run per cell; nothing left RUNNING."""
    config = _config(url, mlflow_url)
    trials = optuna.load_study(study_name=name, storage=open_storage(url)).get_trials()
    complete = Counter(trial_cell(t) for t in trials if t.state == TrialState.COMPLETE)
    assert complete == Counter(grid_cells(config))
    assert not [t.number for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    client = MlflowClient(mlflow_url)
    runs = client.search_runs([client.get_experiment_by_name(name).experiment_id])
    children = [r for r in runs if r.data.tags.get(tracking.ROLE_TAG) == "trial"]
    tags = [r.data.tags for r in children if r.info.status == "FINISHED"]
    finished = Counter(
        Cell(t[tracking.LOSS_TAG], float(t[tracking.LAMBDA_TAG]), int(t[tracking.SEED_TAG])) for t in tags
    )
    assert finished == Counter(grid_cells(config))
    left_running = [(r.info.run_id, r.info.run_name, r.data.tags) for r in runs if r.info.status == "RUNNING"]
    assert not left_running, left_running  # which run, should this fail again (it did once on CI)
    return trials, children


@pytest.mark.servers
def test_machines_opening_a_fresh_database_at_once_all_get_the_tables(postgres):
    url = postgres.create_database("fresh")
    barrier = threading.Barrier(6)
    errors: list[BaseException] = []

    def machine() -> None:
        barrier.wait()
        try:
            open_storage(url).get_all_studies()
        except BaseException as e:  # noqa: BLE001 - collected and asserted on below
            errors.append(e)

    threads = [threading.Thread(target=machine) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


@pytest.mark.servers
def test_two_machines_share_one_grid_each_cell_once(postgres, mlflow_url, tmp_path):
    url = postgres.create_database("two")
    start = time.monotonic()
    machines = [_machine(tmp_path / h, h, url, mlflow_url, "two") for h in ("machine-a", "machine-b")]
    _wait(machines)
    print(f"\ntiny grid (12 cells x 1 s) on two machines: {time.monotonic() - start:.1f} s wall")
    trials, children = _check_grid(url, mlflow_url, "two")
    hosts = Counter(t.user_attrs["host"] for t in trials if t.state == TrialState.COMPLETE)
    assert set(hosts) <= {"machine-a", "machine-b"}
    for run in children:
        trial = trials[int(run.data.tags[tracking.TRIAL_TAG])]
        assert run.data.tags[tracking.WORKER_TAG] == str(Worker.from_attrs(trial.user_attrs))
    assert not (tmp_path / "machine-a" / "mlruns" / "optuna-journal.log").exists()  # servers only
    assert not [m.log for m in machines if "View run" in m.log.read_text()]  # MLflow's lines per run ended


@pytest.mark.servers
def test_a_machine_killed_mid_trial_is_taken_over(postgres, mlflow_url, tmp_path):
    url = postgres.create_database("kill")
    hosts = ("machine-a", "machine-b")
    victim, survivor = [_machine(tmp_path / h, h, url, mlflow_url, "kill") for h in hosts]
    busy: set[str] = set()
    while busy != set(hosts):  # both at work, A in a cell whose MLflow run exists
        running = _poll(url, "kill", TrialState.RUNNING, 1)
        busy = {t.user_attrs["host"] for t in running}
    os.killpg(victim.pid, signal.SIGKILL)
    killed_at = time.time()
    victim.wait()
    # The cell A was in when killed: read after the kill, since a 1 s cell may have ended (and A taken
    # the next) between the poll above and the kill on a loaded machine. No other machine can have
    # failed it yet: that takes grace_s without a heartbeat.
    running = optuna.load_study(study_name="kill", storage=open_storage(url)).get_trials(
        states=(TrialState.RUNNING,)
    )
    (dead,) = [t for t in running if t.user_attrs.get("host") == "machine-a"]
    _wait([survivor])
    trials, _ = _check_grid(url, mlflow_url, "kill")
    assert trials[dead.number].state == TrialState.FAIL
    assert MlflowClient(mlflow_url).get_run(dead.user_attrs["mlflow_run_id"]).info.status == "KILLED"
    assert any(t.user_attrs.get("retry_of") == dead.number for t in trials)
    (retry,) = _completed(trials, dead)  # the retry, or a duplicate queued at the start
    assert retry.user_attrs["host"] == "machine-b"
    took = retry.datetime_start.timestamp() - killed_at
    print(f"\ntake-over: the dead machine's cell restarted on the other {took:.1f} s after the kill")


@pytest.mark.servers
def test_postgres_restarted_mid_study(postgres, mlflow_url, tmp_path):
    url = postgres.create_database("restart")
    machine = _machine(tmp_path / "a", "machine-a", url, mlflow_url, "restart")
    _poll(url, "restart", TrialState.COMPLETE, 2)
    postgres.restart()
    _wait([machine])
    _check_grid(url, mlflow_url, "restart")


def _handed_over(mlflow_url: str, trials: list) -> list:
    """Those of `trials` whose MLflow run has uploaded a checkpoint after step 10."""
    client = MlflowClient(mlflow_url)
    tags = [
        client.get_run(t.user_attrs["mlflow_run_id"]).data.tags.get(handover.HANDOVER_TAG) for t in trials
    ]
    return [t for t, tag in zip(trials, tags, strict=True) if tag and json.loads(tag)["step"] > 10]


@pytest.mark.servers
def test_a_cell_taken_over_by_another_machine_resumes_from_its_last_checkpoint(
    postgres, mlflow_url, tmp_path
):
    """Issue #26: two machines with separate folders; the one in a cell that has uploaded a checkpoint
    is killed; the other resumes that cell from the checkpoint, and its numbers and weights equal an
    uninterrupted run's (a third machine's, alone on its own study)."""
    url = postgres.create_database("handover")
    hosts = ("machine-a", "machine-b")
    machines = {h: _machine(tmp_path / h, h, url, mlflow_url, "handover", "training") for h in hosts}
    reference_url = postgres.create_database("reference")
    reference = _machine(tmp_path / "ref", "machine-r", reference_url, mlflow_url, "reference", "training")
    victim: list = []
    while not victim:
        victim = _handed_over(mlflow_url, _poll(url, "handover", TrialState.RUNNING, 1))
    (dead,) = victim[:1]
    os.killpg(machines[dead.user_attrs["host"]].pid, signal.SIGKILL)
    survivor = machines[next(h for h in hosts if h != dead.user_attrs["host"])]
    _wait([survivor, reference])

    study = optuna.load_study(study_name="handover", storage=open_storage(url))
    (retry,) = _completed(study.get_trials(), dead)
    run = MlflowClient(mlflow_url).get_run(retry.user_attrs["mlflow_run_id"])
    uploaded = json.loads(
        MlflowClient(mlflow_url).get_run(dead.user_attrs["mlflow_run_id"]).data.tags[handover.HANDOVER_TAG]
    )
    assert run.data.tags[tracking.HANDOVER_FROM_TAG].startswith(
        f"took over the checkpoint of step {uploaded['step']}"
    )
    assert int(run.data.tags[tracking.RESUMED_FROM_TAG]) == uploaded["step"] > 10
    (alone,) = [
        t
        for t in optuna.load_study(study_name="reference", storage=open_storage(reference_url)).get_trials()
        if t.state == TrialState.COMPLETE and trial_cell(t) == trial_cell(retry)
    ]
    assert retry.value == alone.value and retry.user_attrs["best"] == alone.user_attrs["best"]
    cell = trial_cell(retry).key
    resumed = load_tensors(
        tmp_path / retry.user_attrs["host"] / "mlruns" / "checkpoints" / "handover" / cell / "checkpoint.pt"
    )
    uninterrupted = load_tensors(
        tmp_path / "ref" / "mlruns" / "checkpoints" / "reference" / cell / "checkpoint.pt"
    )
    for part in ("G", "D", "G_ema"):
        for name, tensor in uninterrupted[part].items():
            assert torch.equal(resumed[part][name], tensor), (part, name)


@pytest.fixture
def own_mlflow(postgres, tmp_path) -> Iterator[MlflowServer]:
    """An MLflow server of the test's own, which it may stop and start again; stopped at the end."""
    server = MlflowServer(postgres.create_database(f"mlflow_{tmp_path.name}"), tmp_path / "mlflow-artifacts")
    yield server
    server.stop()


@pytest.mark.servers
def test_the_tracking_server_hung_killed_or_gone_past_mlflows_retries(
    postgres, own_mlflow, tmp_path, monkeypatch
):
    """Issue #26, one server for two studies. MLflow's client waits for a hung server up to its
    request timeout (120 s) and retries a refused request for about 4 minutes (its defaults): the
    first study goes on through a hang (8 s here; a minute tried by hand, docs/cluster.md) and a
    kill and restart. Past the retries (cut to about a second for the second study), the machine
    stops with one line and exit 2; rerun once the server is back, it finishes with every cell once."""
    monkeypatch.setenv("CELL_S", "0.3")
    mlflow_url = own_mlflow.start()
    url = postgres.create_database("outage")
    machine = _machine(tmp_path / "a", "machine-a", url, mlflow_url, "outage")
    _poll(url, "outage", TrialState.COMPLETE, 2)
    own_mlflow.signal(signal.SIGSTOP)
    time.sleep(8)
    own_mlflow.signal(signal.SIGCONT)
    _poll(url, "outage", TrialState.COMPLETE, 5)
    own_mlflow.stop()
    own_mlflow.start()
    _wait([machine])
    _check_grid(url, mlflow_url, "outage")

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    url = postgres.create_database("gone")
    machine = _machine(tmp_path / "b", "machine-a", url, mlflow_url, "gone")
    _poll(url, "gone", TrialState.COMPLETE, 2)
    own_mlflow.stop()
    assert machine.wait(timeout=150) == 2
    errors = [line for line in machine.log.read_text().splitlines() if "error" in line.lower()]
    # one line per process (the worker, the parent); a request in flight when the server went away
    # gets no answer, a later one is refused: which a process met depends on timing (seen on CI)
    said = re.compile(
        rf"error: the tracking server {re.escape(mlflow_url)} did not answer "
        r"\((connection refused|no answer)\); rerun the same command once it is back: finished cells are "
        r"kept and the others run again"
    )
    shown = machine.log.read_text()[-3000:]
    assert errors and all(said.fullmatch(e) for e in errors), shown
    assert any("(connection refused)" in e for e in errors), shown  # the parent, after the server went away
    own_mlflow.start()
    _wait([_machine(tmp_path / "b", "machine-a", url, mlflow_url, "gone")])
    _check_grid(url, mlflow_url, "gone")
