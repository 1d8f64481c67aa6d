"""Faults a hostile user met (issue #10), each reproduced and held: kills, damaged storage, damaged
checkpoints, bad values. The crafted weight file is held in test_weights.py (item 1).

Machinery tests use `test_study.fake_cell`; the kill + resume test trains for real at tiny settings.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import pickle
import random
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import optuna
import pandas as pd
import psutil
import pytest
from conftest import assert_one_line_error
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from test_report import results, tracked  # noqa: F401  (the `tracked` fixture: a small MLflow store)
from test_study import _Killer, complete_cells, fake_cell, tiny, trials

from lossbench import cli, tracking
from lossbench.analysis import stats
from lossbench.errors import ConfigError, LossbenchError, StorageError
from lossbench.study import Cell, CellResult, checkpoint_dir, grid_cells, open_storage, run_study
from lossbench.study.journal import JOURNAL, TORN_SUFFIX, check_journal
from lossbench.study.queue import enqueue
from lossbench.study.results import results_frame

REPO = Path(__file__).resolve().parents[1]


def small(name: str, **changes):
    """2 losses × 1 λ × 2 seeds of `tiny`: 4 cells."""
    return tiny(name, lambdas=(0.5,), **changes)


# ------------------------------------------------------------------------------ kills (items 2, 4)

_PARENT = """
import sys, time
sys.path[:0] = [{repo!r}, {tests!r}]
from test_faults import small
from test_study import fake_cell
from lossbench.study import run_study

def slow(cell, ctx):
    time.sleep(30)
    return fake_cell(cell, ctx)

run_study(small("orphans", workers=2), root={root!r}, cell_fn=slow)
"""


def _workers(process: psutil.Process) -> list[psutil.Process]:
    """The spawned workers among `process`'s descendants (not multiprocessing's resource tracker)."""
    found = []
    for child in process.children(recursive=True):
        try:
            if "resource_tracker" not in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:  # gone, or a zombie, meanwhile
            pass
    return found


@pytest.mark.slow
def test_parent_killed_while_workers_start_leaves_no_process(tmp_path):
    script = _PARENT.format(repo=str(REPO), tests=str(REPO / "tests"), root=str(tmp_path))
    parent = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.DEVNULL)
    process = psutil.Process(parent.pid)
    deadline = time.monotonic() + 120
    children: list[psutil.Process] = []
    while not children:  # the first worker has been spawned: it is importing, not yet watching
        assert time.monotonic() < deadline and parent.poll() is None, "no worker was started"
        children = _workers(process)
        time.sleep(0.01)
    descendants = process.children(recursive=True)
    parent.kill()
    parent.wait()
    # The spawned target (`worker_entry.main`) imports nothing heavy before it watches the parent:
    # the kernel (PR_SET_PDEATHSIG) or the watch ends the worker within the 5 s, not after
    # its torch/optuna/mlflow imports (15-30 s on a loaded 2-core machine).
    gone, alive = psutil.wait_procs(descendants, timeout=5)
    assert not alive, f"left running 5 s after the parent was killed: {[p.cmdline() for p in alive]}"


_FRESH = """
import sys
sys.path[:0] = [{repo!r}, {tests!r}]
from test_faults import small
from test_study import fake_cell
from lossbench.study import run_study

run_study(small("killloop", workers=2), root={root!r}, cell_fn=fake_cell)
"""


@pytest.mark.slow
def test_a_first_run_killed_at_random_moments_ten_times_then_completes_every_cell_once(tmp_path):
    """Issue #26: kill -9 of the parent in the first seconds of a fresh study (store, journal and
    experiment being made, workers starting), ten times at random moments; the next run completes
    every cell, once each."""
    script = _FRESH.format(repo=str(REPO), tests=str(REPO / "tests"), root=str(tmp_path))
    rng = random.Random(26)
    for _ in range(10):
        parent = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.5, 6.0))
        descendants = psutil.Process(parent.pid).children(recursive=True)
        parent.kill()
        parent.wait()
        psutil.wait_procs(descendants, timeout=10)
    summary = run_study(small("killloop"), root=tmp_path, cell_fn=fake_cell)
    assert summary.counts["done"] == 4
    done = [t for t in trials(tmp_path, "killloop") if t.state.name == "COMPLETE"]
    assert sorted(complete_cells(tmp_path, "killloop")) == sorted(set(complete_cells(tmp_path, "killloop")))
    assert len(done) == 4
    runs = MlflowClient(summary.tracking_uri).search_runs(
        [summary.experiment_id], "tags.`lossbench.role` = 'trial' AND attributes.status = 'FINISHED'"
    )
    assert len(runs) == 4  # one finished MLflow run per cell


def _take_cell(study: optuna.Study, cell: Cell, pid: int) -> None:
    """Mark `cell` RUNNING in another (simulated) worker with pid `pid` on this host."""
    enqueue(study, cell)
    trial = study.ask()
    trial.set_user_attr("pid", pid)
    trial.set_user_attr("host", socket.gethostname())


@pytest.mark.slow
def test_a_cell_running_elsewhere_makes_the_run_exit_nonzero_and_the_study_stay_running(tmp_path):
    config = small("elsewhere")
    study = optuna.create_study(study_name="elsewhere", storage=open_storage(None, tmp_path))
    _take_cell(study, Cell("bce", 0.5, 1), os.getpid())  # alive: this process
    with pytest.raises(LossbenchError, match=r"1 cell\(s\) of study 'elsewhere' are still running"):
        run_study(config, root=tmp_path, cell_fn=fake_cell)
    assert len(complete_cells(tmp_path, "elsewhere")) == 3
    client = MlflowClient(tracking.default_tracking_uri(tmp_path))
    (parent,) = client.search_runs(["1"], "tags.`lossbench.role` = 'study'")
    assert parent.info.status == "RUNNING"


@pytest.mark.slow
def test_kill_and_resume_gives_the_uninterrupted_numbers_exactly(tmp_path):
    config = tiny("resume", losses=("wgangp",), lambdas=(0.5,), threads=2, workers=2)
    config.train.steps = 6
    run_study(dataclasses.replace(config, name="straight"), root=tmp_path)
    killer = _Killer(tmp_path, "resume")
    killer.start()
    with pytest.raises(LossbenchError, match="exited with code -9"):
        run_study(config, root=tmp_path)
    killer.done.set()
    assert killer.killed is not None
    run_study(config, root=tmp_path)
    resumed = {t.number: t for t in trials(tmp_path, "resume") if t.state == TrialState.COMPLETE}
    assert any(t.user_attrs.get("retry_of") == killer.killed[0] for t in resumed.values())
    straight = {
        Cell(t.params["loss"], t.params["lambda"], t.user_attrs["seed"]): t
        for t in trials(tmp_path, "straight")
        if t.state == TrialState.COMPLETE
    }
    assert len(straight) == len(resumed) == len(grid_cells(config))
    for t in resumed.values():
        twin = straight[Cell(t.params["loss"], t.params["lambda"], t.user_attrs["seed"])]
        metrics = {k: v for k, v in t.user_attrs.items() if k.startswith("metric.")}
        assert metrics == {k: v for k, v in twin.user_attrs.items() if k.startswith("metric.")}
        assert t.user_attrs["setting.threads"] == 2


# ------------------------------------------------------------------------------ journal (item 5)


@pytest.mark.slow
def test_torn_journal_tail_is_removed_and_kept(tmp_path):
    run_study(small("torn"), root=tmp_path, cell_fn=fake_cell)
    journal = tmp_path / JOURNAL
    whole = journal.read_bytes()
    journal.write_bytes(whole + b'{"op_code": 5, "worker_id": "x", "tri')  # a write cut short
    with pytest.warns(UserWarning, match="torn line"):
        backup = check_journal(journal)
    assert journal.read_bytes() == whole
    assert backup.name.startswith(JOURNAL + TORN_SUFFIX) and backup.read_bytes().endswith(b'"tri')
    journal.write_bytes(whole + b'{"op_code": 5')
    with pytest.warns(UserWarning, match="torn line"):
        again = run_study(small("torn"), root=tmp_path, cell_fn=fake_cell)
    assert again.new_trials == 0 and again.counts["done"] == 4


@pytest.mark.slow
def test_garbled_journal_line_is_one_line_naming_file_and_line(tmp_path, capsys):
    run_study(small("garbled"), root=tmp_path, cell_fn=fake_cell)
    journal = tmp_path / JOURNAL
    lines = journal.read_bytes().splitlines(keepends=True)
    lines[3] = b"\x00\x17garbage}\n"
    journal.write_bytes(b"".join(lines))
    for args in (
        ["study", "status", "garbled"],
        ["study", "export", "garbled", "--out", str(tmp_path / "x.csv")],
    ):
        assert cli.main([*args, "--root", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert_one_line_error(err, f"Optuna journal {journal}, line 4, is corrupt")
    with pytest.raises(StorageError, match="line 4"):
        run_study(small("garbled"), root=tmp_path, cell_fn=fake_cell)


@pytest.mark.slow
def test_emptied_journal_is_refused_unless_forced(tmp_path):
    config = small("emptied")
    run_study(config, root=tmp_path, cell_fn=fake_cell)
    (tmp_path / JOURNAL).write_bytes(b"")
    with pytest.raises(StorageError, match="MLflow holds 4 finished trial run"):
        run_study(config, root=tmp_path, cell_fn=fake_cell)
    assert (tmp_path / JOURNAL).read_bytes() == b""  # nothing recorded
    summary = run_study(config, root=tmp_path, cell_fn=fake_cell, force=True)
    assert summary.counts["done"] == 4
    client = MlflowClient(summary.tracking_uri)
    runs = client.search_runs(["1"], "tags.`lossbench.role` = 'trial'")
    assert sum(tracking.FORGOTTEN_TAG in r.data.tags for r in runs) == 4 and len(runs) == 8
    assert run_study(config, root=tmp_path, cell_fn=fake_cell).new_trials == 0  # no refusal again


@pytest.mark.slow
def test_an_emptied_mlflow_store_is_named_and_repaired_from_the_records(tmp_path, capsys):
    config = small("lostruns")
    first = run_study(config, root=tmp_path, cell_fn=fake_cell)
    frame = results_frame("lostruns", root=tmp_path)
    (tmp_path / tracking.DB_NAME).write_bytes(b"")  # emptied: set aside, a new store made
    capsys.readouterr()
    again = run_study(config, root=tmp_path, cell_fn=fake_cell)
    err = capsys.readouterr().err
    assert again.new_trials == 0
    assert "the MLflow store lacks the runs of 4 finished cell(s)" in err and "--repair-tracking" in err
    client = MlflowClient(again.tracking_uri)
    experiment = client.get_experiment_by_name("lostruns").experiment_id
    assert not client.search_runs([experiment], "tags.`lossbench.role` = 'trial'")
    run_study(config, root=tmp_path, cell_fn=fake_cell, repair_tracking=True)
    assert "restored the MLflow runs of 4 finished cell(s)" in capsys.readouterr().err
    runs = client.search_runs([experiment], "tags.`lossbench.role` = 'trial'")
    assert len(runs) == 4
    lost_ids = set(frame["run_id"])
    for run in runs:  # every number from the records, nothing invented
        assert run.data.tags[tracking.RESTORED_TAG] in lost_ids
        row = frame[frame["run_id"] == run.data.tags[tracking.RESTORED_TAG]].iloc[0]
        assert (
            run.data.tags[tracking.LOSS_TAG] == row["loss"]
            and int(run.data.tags[tracking.SEED_TAG]) == row["seed"]
        )
        assert run.data.metrics["fid"] == row["fid"]
        assert "Restored from the Optuna records" in run.data.tags[tracking.DESCRIPTION_TAG]
    run_study(config, root=tmp_path, cell_fn=fake_cell)  # neither a warning nor a refusal now
    assert "lacks the runs" not in capsys.readouterr().err
    assert first.counts["done"] == 4


# ------------------------------------------------------------------------- MLflow store (item 6)


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncate", "random"])
def test_damaged_mlflow_store_is_one_line(tmp_path, capsys, damage):
    run_study(small("store"), root=tmp_path, cell_fn=fake_cell)
    db = tmp_path / tracking.DB_NAME
    data = bytearray(db.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:  # 8 KiB of random bytes over the first pages (the schema and the first tables)
        data[100 : 100 + 8192] = os.urandom(8192)
    db.write_bytes(bytes(data))
    before = db.read_bytes()
    with pytest.raises(StorageError, match=f"MLflow store {db} is corrupt") as refused:
        run_study(small("store"), root=tmp_path, cell_fn=fake_cell)
    assert "\n" not in str(refused.value)  # one line, whatever SQLite's report holds
    assert cli.main(["report", "store", "--root", str(tmp_path), "--out", str(tmp_path / "rep")]) == 2
    err = capsys.readouterr().err
    assert_one_line_error(err, "is corrupt")
    assert db.read_bytes() == before


def _init(uri: str, artifacts: str, out: str) -> None:
    Path(out).write_text(tracking.init_experiment(uri, "race", artifacts))


@pytest.mark.slow
def test_two_commands_creating_the_store_at_once_both_succeed(tmp_path):
    uri = tracking.default_tracking_uri(tmp_path)
    context = multiprocessing.get_context("spawn")
    procs = [
        context.Process(target=_init, args=(uri, str(tmp_path / "artifacts"), str(tmp_path / f"id{i}")))
        for i in range(2)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    assert (tmp_path / "id0").read_text() == (tmp_path / "id1").read_text()


@pytest.mark.slow
def test_a_moved_study_folder_is_detected(tmp_path):
    import shutil

    run_study(small("moved"), root=tmp_path / "a", cell_fn=fake_cell)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    with pytest.raises(ConfigError, match="moved or copied"):
        run_study(small("moved"), root=tmp_path / "b", cell_fn=fake_cell)


@pytest.mark.parametrize(
    "message",
    [  # MLflow's SQLite store (seen with --force); an MLflow server on PostgreSQL (seen on CI)
        "(sqlite3.IntegrityError) UNIQUE constraint failed: datasets.experiment_id, datasets.name, "
        "datasets.digest",
        "BAD_REQUEST: (psycopg.errors.UniqueViolation) duplicate key value violates unique constraint "
        '"dataset_pk"',
    ],
)
def test_two_workers_logging_the_same_new_dataset_at_once_both_record_it(tmp_path, monkeypatch, message):
    """MLflow looks a dataset up, then inserts it: two workers starting their first cells at once
    both insert, and the slower one broke the unique key (a worker crash)."""
    from mlflow.exceptions import MlflowException

    uri = tracking.default_tracking_uri(tmp_path)
    experiment = tracking.init_experiment(uri, "race", tmp_path / tracking.ARTIFACTS_DIR)
    client = MlflowClient(uri)
    other, mine = (client.create_run(experiment).info.run_id for _ in range(2))
    real = MlflowClient.log_inputs

    def racing(self, run_id, datasets=None, models=None):  # the other worker's insert wins the race
        monkeypatch.setattr(MlflowClient, "log_inputs", real)
        real(self, other, datasets=datasets)
        raise MlflowException(message)

    monkeypatch.setattr(MlflowClient, "log_inputs", racing)
    tracking.log_dataset(uri, mine, "phantom:64", "ab" * 32, "train", 64)
    for run_id in (other, mine):
        (entry,) = client.get_run(run_id).inputs.dataset_inputs
        assert entry.dataset.name == "phantom:64"


# ----------------------------------------------------------------------------- checkpoints (item 7)


@pytest.mark.parametrize("damage", ["truncated", "raw pickle"])
def test_damaged_checkpoint_is_one_line_in_train_and_evaluate(tmp_path, capsys, damage):
    out = tmp_path / "run"
    args = ["train", "--data", "phantom:16", "--resolution", "32", "--steps", "2", "--batch-size", "4"]
    args += [
        "--random-weights",
        "--perceptual",
        "none",
        "--g-width",
        "4",
        "--d-width",
        "4",
        "--out",
        str(out),
    ]
    assert cli.main(args) == 0
    checkpoint = out / "checkpoint.pt"
    if damage == "truncated":
        checkpoint.write_bytes(checkpoint.read_bytes()[:3000])
    else:  # a plain pickle (protocol 4): torch refuses it, and used to warn in two extra lines
        checkpoint.write_bytes(pickle.dumps({"config": {}, "note": "not a torch file"}, protocol=4))
    capsys.readouterr()
    evaluate = ["evaluate", "--checkpoint", str(checkpoint), "--data", "phantom:16", "--random-weights"]
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        for command in ([*args, "--resume"], evaluate):
            assert cli.main(command) == 2
            err = capsys.readouterr().err
            assert_one_line_error(err, f"checkpoint {checkpoint} cannot be loaded")
    assert not [w for w in shown if issubclass(w.category, UserWarning)]


@pytest.mark.slow
def test_a_study_cell_with_a_damaged_checkpoint_restarts_from_scratch(tmp_path, capsys):
    config = tiny("damaged", losses=("bce",), lambdas=(0.5,), seeds=(0,))
    folder = checkpoint_dir(tmp_path, "damaged", Cell("bce", 0.5, 0))
    folder.mkdir(parents=True)
    (folder / "checkpoint.pt").write_bytes(b"PK\x03\x04 not a checkpoint")
    summary = run_study(config, root=tmp_path)
    assert summary.counts["done"] == 1
    (aside,) = folder.glob("checkpoint.pt.bad-*")
    assert aside.read_bytes() == b"PK\x03\x04 not a checkpoint"
    (t,) = trials(tmp_path, "damaged")
    run = MlflowClient(summary.tracking_uri).get_run(t.user_attrs["mlflow_run_id"])
    assert run.data.tags[tracking.BAD_CHECKPOINT_TAG] == str(aside)
    assert int(run.data.tags[tracking.RESUMED_FROM_TAG]) == 0  # from scratch


# ----------------------------------------------------------------------------- bad values (item 8)


@pytest.mark.parametrize(
    ("toml", "args", "message"),
    [
        ("", ["--seeds", "-1"], "--seeds must be at least 1"),
        ("[train]\nbatch_size = 1.5\n", [], "batch_size must be an integer, got 1.5"),
        ('seeds = "01"\n', [], "seeds must be a list of integers"),
        ('lambdas = "abc"\n', [], "lambdas must be a list of numbers"),
        ('losses = "bce"\n', [], "losses must be a list of strings"),
        ("", ["--devices", "cuda:99"], "cuda:99"),
        ("", ["--threads", "0"], "threads must be at least 1"),
        ("", ["--root", "FILE"], "is a file, not a folder"),
    ],
)
def test_bad_values_are_one_line_exit_2_and_create_nothing(tmp_path, capsys, toml, args, message):
    (tmp_path / "file").write_text("x")
    (tmp_path / "s.toml").write_text(toml)
    root = tmp_path / "mlruns"
    args = [str(tmp_path / "file") if a == "FILE" else a for a in args]
    argv = ["study", "--config", str(tmp_path / "s.toml"), "--data", "phantom:16", "--root", str(root), *args]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") <= 3 and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "s.toml"]


def test_output_folders_that_are_files_are_one_line(tmp_path, capsys):
    file = tmp_path / "file"
    file.write_text("x")
    train = ["train", "--data", "phantom:16", "--resolution", "32", "--steps", "1", "--out", str(file)]
    assert cli.main(train) == 2
    assert "training output" in capsys.readouterr().err
    csv = tmp_path / "r.csv"
    results().to_csv(csv, index=False)
    assert cli.main(["report", str(csv), "--out", str(file)]) == 2
    err = capsys.readouterr().err
    assert_one_line_error(err, "report output")
    assert file.read_text() == "x"


def _config_error_cell(cell: Cell, ctx) -> CellResult:
    if cell.seed == 1:
        raise ConfigError("a setting this cell cannot use")
    return fake_cell(cell, ctx)


@pytest.mark.slow
def test_a_cell_failing_from_a_config_error_is_never_retried(tmp_path):
    config = small("config-error")
    first = run_study(config, root=tmp_path, cell_fn=_config_error_cell)
    assert first.counts == {**first.counts, "done": 2, "failed": 2}
    again = run_study(config, root=tmp_path, cell_fn=_config_error_cell)
    assert again.new_trials == 0
    failed = [t for t in trials(tmp_path, "config-error") if t.state == TrialState.FAIL]
    assert len(failed) == 2 and all(t.user_attrs["fail_reason"].startswith("config error:") for t in failed)


def test_report_into_a_busy_folder_logs_only_its_own_files(tracked, tmp_path, monkeypatch):  # noqa: F811
    uri, client, parent, df = tracked
    from lossbench.study import results as study_results

    frame = df.drop(columns=["run_id"]).assign(run_id=df["run_id"])
    monkeypatch.setattr(study_results, "results_frame", lambda name, storage=None, root="mlruns": frame)
    no_problems = pd.DataFrame(columns=stats.PROBLEM_COLUMNS)
    monkeypatch.setattr(study_results, "cell_problems", lambda *a: no_problems)
    busy = tmp_path / "busy"
    (busy / "mlruns").mkdir(parents=True)
    (busy / "mlruns" / "secret.db").write_bytes(b"x")
    (busy / "notes.txt").write_text("mine")
    monkeypatch.chdir(busy)
    assert cli.main(["report", "demo", "--out", ".", "--tracking-uri", uri]) == 0
    logged = {f.path for f in client.list_artifacts(parent, "report")}
    assert "report/notes.txt" not in logged and "report/mlruns" not in logged
    assert {"report/report.html", "report/report.md", "report/stats.json", "report/figures"} <= logged
