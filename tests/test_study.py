"""Studies: exactly-once grids with several workers, resume after SIGKILL, failures, TOML files, CLI errors.

The machinery tests use `fake_cell` (a deterministic stand-in for training, importable by the spawned
workers); the end-to-end and kill tests train and evaluate for real at tiny settings.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import signal
import statistics
import threading
import time
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import torch
from conftest import assert_one_line_error
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from PIL import Image

from lossbench import cli, progress, tracking
from lossbench.config import DataConfig, EvalConfig, StudyConfig, TrainConfig
from lossbench.errors import ConfigError, DivergedError, LossbenchError
from lossbench.losses.registry import register_loss
from lossbench.losses.wasserstein import WGANGP
from lossbench.study import (
    Cell,
    CellResult,
    grid_cells,
    load_study,
    open_storage,
    results_frame,
    run_study,
    study_cells,
)
from lossbench.study.definition import load_study_config, with_overrides
from lossbench.study.queue import enqueue

REPO = Path(__file__).resolve().parents[1]
FOUR_METRICS = ("fid", "kid", "lpips_ff", "msssim_ff")


def tiny(name: str, **changes) -> StudyConfig:
    """2 losses × 2 λ × 2 seeds at R=32, width 8, 4 steps, 16 fakes, weight-free extractor, random
    weights, run in the test's process."""
    config = StudyConfig(
        name=name,
        losses=("wgangp", "bce"),
        lambdas=(0.5, 3.0),
        seeds=(0, 1),
        data=DataConfig(spec="phantom:64", resolution=32),
        train=TrainConfig(
            steps=4,
            batch_size=8,
            g_width=8,
            d_width=8,
            z_dim=16,
            n_critic=1,
            perceptual_layers=("relu1_2",),  # truncated random VGG16: cheap; λ still matters
            checkpoint_every=2,
            log_every=1,
            sample_every=0,
            n_samples=4,
            random_weights=True,
        ),
        eval=EvalConfig(
            metrics=("fid", "kid", "lpips", "msssim"),
            n_fake=16,
            n_pairs=8,
            kid_subsets=10,
            batch_size=16,
            feature_extractor="lossbench-tiny",
            random_weights=True,
        ),
        workers=0,  # in this process (workers.run_here); tests of worker processes set workers
    )
    return dataclasses.replace(config, **changes)


def fake_cell(cell: Cell, ctx) -> CellResult:
    """A stand-in for training: a known value per cell; (bce, 3, seed 1) diverges."""
    time.sleep(0.2)
    if (cell.loss, cell.lam, cell.seed) == ("bce", 3.0, 1):
        raise DivergedError(7, "d/loss", float("nan"))
    fid = 100 * (cell.loss == "bce") + 10 * cell.lam + cell.seed
    return CellResult({"fid": fid, "kid": fid / 1000}, {"extractor": "fake", "n_fake": 16}, steps=4)


def noisy_cell(cell: Cell, ctx) -> CellResult:
    """A stand-in for training with a planted answer: bce's fid 20 above wgangp's, λ without
    effect, a per-seed offset shared by every cell and unit noise (seeded by the cell)."""
    rng = np.random.default_rng([cell.seed, int(cell.lam * 10), cell.loss == "bce"])
    fid = 50 + 20 * (cell.loss == "bce") + 3 * cell.seed + rng.normal()
    return CellResult({"fid": fid}, {"extractor": "fake", "n_fake": 16}, steps=4)


@pytest.mark.slow
def test_the_verdict_reaches_mlflow_and_the_dashboard(tmp_path):
    from optuna_dashboard import get_note

    summary = run_study(tiny("verdict", seeds=(0, 1, 2)), root=tmp_path, cell_fn=noisy_cell)
    first = "**Verdict** fid: loss: wgangp better (lower fid)"
    assert summary.verdict[0].startswith(first)
    client = MlflowClient(summary.tracking_uri)
    parent = client.get_run(summary.parent_run_id)
    description = parent.data.tags[tracking.DESCRIPTION_TAG]
    assert first in description and description.index(first) < description.index("Study **verdict**")
    document = Path(client.download_artifacts(summary.parent_run_id, tracking.VERDICT_FILE, str(tmp_path)))
    text = document.read_text()
    assert "## Verdict" in text and "### fid" in text and "| loss pooled over λ | bce vs wgangp |" in text
    study = optuna.load_study(study_name="verdict", storage=open_storage(None, tmp_path))
    assert get_note(study) == text  # optuna-dashboard shows the same document
    grid = Path(client.download_artifacts(summary.parent_run_id, tracking.REAL_GRID, str(tmp_path)))
    with Image.open(grid) as image:  # 4 training images, 2 x 2 as the sample grids (32 px, padding 2)
        assert image.size == (2 * 34 + 2, 2 * 34 + 2)


def trials(root: Path, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=open_storage(None, root)).get_trials()


def complete_cells(root: Path, name: str) -> list[Cell]:
    return sorted(
        Cell(t.params["loss"], t.params["lambda"], t.user_attrs["seed"])
        for t in trials(root, name)
        if t.state == TrialState.COMPLETE
    )


@pytest.mark.slow
def test_grid_runs_each_cell_once_records_divergence_and_resumes(tmp_path, capsys):
    config = tiny("machinery")
    # A second parent queueing the same cell (the duplicate GridSampler's own picking can make).
    study = optuna.create_study(study_name="machinery", storage=open_storage(None, tmp_path))
    for _ in range(2):
        enqueue(study, Cell("wgangp", 0.5, 0))
    summary = run_study(config, root=tmp_path, cell_fn=fake_cell)
    diverged = Cell("bce", 3.0, 1)
    assert complete_cells(tmp_path, "machinery") == sorted(set(grid_cells(config)) - {diverged})
    assert summary.counts["done"] == 7 and summary.counts["failed"] == 1
    (skipped,) = [t for t in trials(tmp_path, "machinery") if "skipped" in t.user_attrs]
    assert (
        skipped.state == TrialState.PRUNED
        and skipped.user_attrs["skipped"] == "cell already taken by trial 0"
    )
    (failed,) = [t for t in trials(tmp_path, "machinery") if t.state == TrialState.FAIL]
    assert failed.user_attrs["fail_reason"].startswith("diverged: training diverged at step 7")
    study = optuna.load_study(study_name="machinery", storage=open_storage(None, tmp_path))
    assert study.metric_names == ["fid"]
    for t in trials(tmp_path, "machinery"):
        if t.state == TrialState.COMPLETE:  # the seed is a replicate, not a parameter
            assert set(t.params) == {"loss", "lambda"} and "seed" in t.user_attrs
            assert isinstance(t.distributions["lambda"], optuna.distributions.FloatDistribution)
            expected = 100 * (t.params["loss"] == "bce") + 10 * t.params["lambda"] + t.user_attrs["seed"]
            assert t.value == expected == t.user_attrs["metric.fid"]
            assert t.user_attrs["setting.extractor"] == "fake"

    frame = results_frame("machinery", root=tmp_path)
    columns = ["study", "trial", "loss", "lambda", "seed", "state", "run_id", "fid", "kid"]
    # each row carries the settings of its numbers
    columns += ["setting.extractor", "setting.n_fake", "setting.threads"]
    assert list(frame.columns) == columns and len(frame) == 7
    assert not ((frame["loss"] == "bce") & (frame["lambda"] == 3) & (frame["seed"] == 1)).any()

    client = MlflowClient(summary.tracking_uri)
    parent = client.get_run(summary.parent_run_id)  # per-cell summaries over seeds, best cell
    logged = json.loads(
        Path(client.download_artifacts(summary.parent_run_id, "summary.json", str(tmp_path))).read_text()
    )
    table = pd.DataFrame(logged["data"], columns=logged["columns"])
    assert logged["columns"][:6] == ["metric", "loss", "lambda", "mean", "sd", "n"]  # as MLflow shows them
    assert not [k for k in parent.data.metrics if k.count("/") > 1]  # no chart section per cell
    for (loss, lam), cell in frame.groupby(["loss", "lambda"]):
        (row,) = table[
            (table["metric"] == "fid") & (table["loss"] == loss) & (table["lambda"] == f"{lam:g}")
        ].to_dict("records")
        assert row["mean"] == pytest.approx(cell["fid"].mean()) and row["n"] == len(cell)
        if len(cell) > 1:
            assert row["sd"] == pytest.approx(cell["fid"].std())
    assert parent.data.metrics == {}  # MLflow would draw charts of the parent alone
    best = frame.groupby(["loss", "lambda"])["fid"].mean().min()
    assert parent.data.tags["lossbench.best.fid"] == f"wgangp λ=0.5: mean {best:.6g} over 2 seeds"
    assert parent.data.tags["WARNING"].startswith("RANDOM NETWORK WEIGHTS")
    assert "RANDOM NETWORK WEIGHTS" in parent.data.tags["mlflow.note.content"].splitlines()[0]
    run = client.get_run(failed.user_attrs["mlflow_run_id"])
    assert run.info.status == "FAILED" and run.data.tags["lossbench.fail_reason"].startswith("diverged")

    assert cli.main(["study", "status", "machinery", "--root", str(tmp_path)]) == 0
    table = capsys.readouterr().out
    assert table.count(" done ") == 7 and table.count(" failed ") == 1 and "diverged" in table
    finished = [t for t in trials(tmp_path, "machinery") if t.state in (TrialState.COMPLETE, TrialState.FAIL)]
    took = sorted((t.datetime_complete - t.datetime_start).total_seconds() for t in finished)
    assert f"8 finished cell(s): median {progress.duration(statistics.median(took))} per cell" in table

    n = len(trials(tmp_path, "machinery"))
    again = run_study(config, root=tmp_path, cell_fn=fake_cell)
    assert again.new_trials == 0 and len(trials(tmp_path, "machinery")) == n  # diverged cells are final
    (tmp_path / "again").mkdir()
    rewritten = client.download_artifacts(summary.parent_run_id, "summary.json", str(tmp_path / "again"))
    assert json.loads(Path(rewritten).read_text())["data"] == logged["data"]  # replaced, not appended to

    changed = tiny("machinery")
    changed.train.steps = 5
    with pytest.raises(ConfigError, match=r"created with other settings: train.steps=4 \(now 5\)"):
        run_study(changed, root=tmp_path, cell_fn=fake_cell)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.23, "0.2 s"), (45.4, "45 s"), (59.6, "1 min 00 s"), (192, "3 min 12 s"), (7501, "2 h 05 min")],
)
def test_durations_read_as_a_person_would_say_them(seconds, text):
    assert progress.duration(seconds) == text


@pytest.mark.slow
def test_a_study_logged_to_a_file_says_when_each_cell_finishes(tmp_path, capsys):
    """stderr is not a terminal here (captured): the bar is silent, so each finished cell is a line."""
    run_study(tiny("logged", seeds=(0,)), root=tmp_path, progress=True, cell_fn=fake_cell)
    lines = [
        line.split("] ", 1)[1] for line in capsys.readouterr().err.splitlines() if "cells finished" in line
    ]
    finished = [int(line.split(": ")[1].split("/")[0]) for line in lines]
    assert finished == sorted(set(finished)) and finished[0] < 4  # one line per change, in order
    assert lines[-1] == "logged: 4/4 cells finished"


@pytest.mark.slow
def test_end_to_end_two_workers_then_rerun_adds_nothing(tmp_path):
    config = tiny("e2e", workers=2)
    summary = run_study(config, root=tmp_path)
    ts = trials(tmp_path, "e2e")
    assert [t.state for t in ts] == [TrialState.COMPLETE] * 8
    assert complete_cells(tmp_path, "e2e") == sorted(grid_cells(config))

    client = MlflowClient(summary.tracking_uri)
    exp = client.get_experiment_by_name("e2e").experiment_id
    runs = client.search_runs([exp])
    (parent,) = [r for r in runs if r.data.tags.get("lossbench.role") == "study"]
    children = [r for r in runs if r.data.tags.get("lossbench.role") == "trial"]
    assert len(children) == 8 and parent.info.run_id == summary.parent_run_id
    for run in children:
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.info.status == "FINISHED"
        assert run.data.tags["lossbench.weights"] == "random"
        assert (
            run.data.params["train.steps"] == "4"
            and run.data.params["eval.feature_extractor"] == "lossbench-tiny"
        )
        assert run.data.params["train.loss"] == run.data.tags["lossbench.loss"]
        assert run.data.tags["setting.fid_extractor"] == "lossbench-tiny"
        trial = ts[int(run.data.tags["lossbench.trial"])]
        cell = Cell(trial.params["loss"], trial.params["lambda"], trial.user_attrs["seed"])
        assert run.info.run_name == f"{cell.loss} λ={cell.lam:g} s{cell.seed}"
        assert run.data.params["train.lam"] == run.data.tags["lossbench.lambda"] == f"{cell.lam:g}"
        note = run.data.tags["mlflow.note.content"]
        assert "RANDOM NETWORK WEIGHTS" in note.splitlines()[0] and f"seed {cell.seed}" in note
        (dataset,) = run.inputs.dataset_inputs
        assert dataset.dataset.name == config.data.spec and dataset.tags[0].value == "train"
        assert not any(k.startswith("eval/") for k in run.data.metrics)  # final metrics logged once
        for key in FOUR_METRICS:
            assert run.data.metrics[key] == pytest.approx(trial.user_attrs[f"metric.{key}"])
            assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == [0]
        assert trial.value == trial.user_attrs["metric.fid"]
        names = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"config.json", "metrics.json", "samples", "features"} <= names
        curve = client.get_metric_history(run.info.run_id, "train/g/loss")
        assert sorted(m.step for m in curve) == [1, 2, 3, 4]
    assert tracking.has_artifact(summary.tracking_uri, parent.info.run_id, "features/real.npy")

    again = run_study(config, root=tmp_path)
    assert again.new_trials == 0 and len(trials(tmp_path, "e2e")) == 8

    out = tmp_path / "results.csv"
    assert cli.main(["study", "export", "e2e", "--out", str(out), "--root", str(tmp_path)]) == 0
    frame = pd.read_csv(out)
    assert list(frame.columns[:7]) == ["study", "trial", "loss", "lambda", "seed", "state", "run_id"]
    assert set(FOUR_METRICS) <= set(frame.columns) and len(frame) == 8
    assert set(frame["setting.fid_extractor"]) == {"lossbench-tiny"}  # each number carries its settings
    assert set(frame["setting.n_fake"]) == {config.eval.n_fake}
    assert set(frame["run_id"]) == {r.info.run_id for r in children}

    # workers = 0 runs the same cells in this process: the same numbers, and the caller's threads back
    threads = torch.get_num_threads()
    one = {"losses": ("wgangp",), "lambdas": (0.5,), "seeds": (1,), "threads": threads + 1}
    run_study(dataclasses.replace(config, name="e2e-here", workers=0, **one), root=tmp_path)
    assert torch.get_num_threads() == threads
    run_study(dataclasses.replace(config, name="e2e-twin", workers=1, **one), root=tmp_path)
    values = {
        name: [
            {k: v for k, v in t.user_attrs.items() if k.startswith("metric.")} for t in trials(tmp_path, name)
        ]
        for name in ("e2e-here", "e2e-twin")
    }
    assert len(values["e2e-here"]) == 1 and "metric.fid" in values["e2e-here"][0]
    assert values["e2e-here"] == values["e2e-twin"]


@pytest.mark.slow
def test_curve_metrics_every_eval_every_steps_and_the_best_generator_kept(tmp_path):
    """The cheap curve metrics are logged every `eval_every` steps, best.pt is chosen by the first of
    them (the objective, fid, is not one), and the cell's numbers come from the full evaluation."""
    config = tiny("curves", losses=("bce",), lambdas=(0.5,), seeds=(0,), eval_every=2)
    summary = run_study(config, root=tmp_path)
    client = MlflowClient(summary.tracking_uri)
    (run,) = [r for r in client.search_runs([client.get_experiment_by_name("curves").experiment_id])
              if r.data.tags.get("lossbench.role") == "trial"]  # fmt: skip
    curves = {k.removeprefix("eval/") for k in run.data.metrics if k.startswith("eval/")}
    assert {"swd", "msssim_ff"} <= curves and not curves & {"fid", "kid", "lpips_ff"}
    assert [m.step for m in client.get_metric_history(run.info.run_id, "eval/swd")] == [2, 4]
    (trial,) = trials(tmp_path, "curves")
    swd = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "eval/swd")}
    best = min(swd, key=swd.get)
    assert trial.user_attrs["best"] == {"step": best, "value": swd[best], "metric": "swd"}
    assert run.data.tags["lossbench.best_checkpoint"].endswith(f"(step {best}, swd {swd[best]:.6g})")
    assert set(FOUR_METRICS) <= {k.removeprefix("metric.") for k in trial.user_attrs}
    assert trial.value == trial.user_attrs["metric.fid"]


@pytest.mark.parametrize(
    "changes, best",
    [({}, "swd"), ({"curve_metrics": ("msssim", "fid")}, "fid"), ({"best_metric": "lpips"}, None),
     ({"curve_metrics": ("lpips",), "best_metric": "lpips"}, "lpips_ff"), ({"curve_metrics": ()}, None)],
)  # fmt: skip
def test_the_best_metric_is_a_curve_metric(changes, best):
    from lossbench.study.definition import best_metric, validate

    config = tiny("best", eval_every=2, **changes)
    if best is None:
        with pytest.raises(ConfigError, match="curve metric"):
            validate(config)
    else:
        validate(config)
        assert best_metric(config) == best


def test_a_study_without_curves_has_a_best_metric_all_the_same():
    """Every cell asks for the best metric, also without periodic evaluation: no curve metric then
    means the objective (it once raised IndexError for every cell)."""
    from lossbench.study.definition import best_metric, validate

    config = tiny("nocurves", curve_metrics=())
    validate(config)
    assert best_metric(config) == "fid"


@pytest.mark.slow
def test_fused_grid_records_every_cell_like_the_unfused_one(tmp_path):
    """`fuse = 3` with a stand-in cell function: the bookkeeping of groups (admission, a duplicate
    pruned, a diverged member failing alone, every trial told) gives the unfused study's states."""
    config = tiny("fusedbook", fuse=3)
    study = optuna.create_study(study_name="fusedbook", storage=open_storage(None, tmp_path))
    for _ in range(2):
        enqueue(study, Cell("wgangp", 0.5, 0))
    summary = run_study(config, root=tmp_path, cell_fn=fake_cell)
    assert summary.counts["done"] == 7 and summary.counts["failed"] == 1
    assert complete_cells(tmp_path, "fusedbook") == sorted(set(grid_cells(config)) - {Cell("bce", 3.0, 1)})
    states = sorted(t.state.name for t in trials(tmp_path, "fusedbook"))
    assert states == ["COMPLETE"] * 7 + ["FAIL", "PRUNED"]  # nothing left RUNNING
    for t in trials(tmp_path, "fusedbook"):
        if t.state == TrialState.COMPLETE:
            assert (
                t.value == 100 * (t.params["loss"] == "bce") + 10 * t.params["lambda"] + t.user_attrs["seed"]
            )


@pytest.mark.slow
def test_fused_study_gives_the_unfused_numbers_and_resumes(tmp_path):
    """Real training: the 2 cells of one loss as one fused group equal the unfused study's cells up to
    float rounding; the runs say they were fused; a rerun adds nothing."""
    metrics = ["fid", "kid", "lpips_ff", "msssim_ff"]
    frames = {}
    for name, fuse in (("unfused", 1), ("fused", 2)):
        summary = run_study(tiny(name, losses=("wgangp",), seeds=(0,), fuse=fuse), root=tmp_path)
        assert summary.counts["done"] == 2
        frames[name] = results_frame(name, root=tmp_path).sort_values(["lambda", "seed"])[metrics]
    np.testing.assert_allclose(frames["fused"].to_numpy(), frames["unfused"].to_numpy(), rtol=1e-3, atol=1e-6)
    client = MlflowClient(summary.tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("fused").experiment_id])
    fused_tags = [
        r.data.tags.get("lossbench.fused") for r in runs if r.data.tags.get("lossbench.role") == "trial"
    ]
    assert fused_tags == ["2"] * 2
    again = run_study(tiny("fused", losses=("wgangp",), seeds=(0,), fuse=2), root=tmp_path)
    assert again.new_trials == 0


@pytest.mark.slow
def test_a_diverging_member_of_a_fused_study_fails_alone(tmp_path):
    """λ = 1e300 is inf in fp32: that cell diverges at step 1; its fused partner completes."""
    config = tiny("fuseddiv", losses=("bce",), lambdas=(0.5, 1e300), seeds=(0,), fuse=2)
    summary = run_study(config, root=tmp_path)
    assert summary.counts["done"] == 1 and summary.counts["failed"] == 1
    (failed,) = [t for t in trials(tmp_path, "fuseddiv") if t.state == TrialState.FAIL]
    assert failed.params["lambda"] == 1e300 and failed.user_attrs["fail_reason"].startswith("diverged")
    (done,) = [t for t in trials(tmp_path, "fuseddiv") if t.state == TrialState.COMPLETE]
    assert done.params["lambda"] == 0.5 and np.isfinite(done.value)


@register_loss("wgangp-unfusable-study")
class UnfusableForStudies(WGANGP):
    """WGAN-GP as a plugin that does not declare `fusable`."""

    fusable = False


def test_a_study_that_cannot_be_fused_is_refused_before_anything_runs(tmp_path, capsys):
    args = ["--preset", "tiny", "--fuse", "2", "--losses", "wgangp-unfusable-study", "--root", str(tmp_path)]
    code = cli.main(["study", *args])
    err = capsys.readouterr().err
    assert code == 2
    assert_one_line_error(err, "cannot be fused")
    assert not (tmp_path / "checkpoints").exists()


class _Killer(threading.Thread):
    """SIGKILLs the worker of the first trial caught RUNNING after its first checkpoint: the worker
    is stopped (SIGSTOP) first, so the trial is certainly still RUNNING when it dies."""

    def __init__(self, root: Path, name: str) -> None:
        super().__init__(daemon=True)
        self.root, self.name = root, name
        self.killed: tuple[int, Cell] | None = None
        self.done = threading.Event()

    def run(self) -> None:
        folder = self.root / "checkpoints" / self.name
        while not self.done.is_set() and self.killed is None:
            time.sleep(0.02)
            if not any(folder.glob("*/checkpoint.pt")):
                continue
            try:
                running = [t for t in trials(self.root, self.name) if t.state == TrialState.RUNNING]
            except Exception:  # the journal is being created
                continue
            for t in running:
                cell = Cell(t.params.get("loss"), t.params.get("lambda"), t.user_attrs.get("seed"))
                if "pid" not in t.user_attrs or not (folder / cell.key / "checkpoint.pt").exists():
                    continue
                assert t.user_attrs["pid"] != os.getpid(), "workers = 0: the cell runs in this process"
                os.kill(t.user_attrs["pid"], signal.SIGSTOP)
                now = {u.number: u for u in trials(self.root, self.name)}[t.number]
                if now.state == TrialState.RUNNING:
                    os.kill(t.user_attrs["pid"], signal.SIGKILL)
                    self.killed = (t.number, cell)
                    return
                os.kill(t.user_attrs["pid"], signal.SIGCONT)


def run_until_killed(root: Path, config: StudyConfig) -> tuple[int, Cell]:
    """Run the study while a `_Killer` SIGKILLs a worker; the killed trial's number and cell."""
    killer = _Killer(root, config.name)
    killer.start()
    with pytest.raises(LossbenchError, match=r"exited with code -9.*rerun the same command"):
        run_study(config, root=root)
    killer.done.set()
    assert killer.killed is not None
    return killer.killed


@pytest.mark.slow
def test_sigkilled_worker_cell_resumes_from_checkpoint_on_rerun(tmp_path):
    config = tiny("kill", losses=("wgangp",), workers=2)
    config.train.steps = 6
    number, cell = run_until_killed(tmp_path, config)
    dead = trials(tmp_path, "kill")[number]
    assert dead.state == TrialState.FAIL and dead.user_attrs["fail_reason"].startswith("worker pid")
    client = MlflowClient(tracking.default_tracking_uri(tmp_path))
    assert client.get_run(dead.user_attrs["mlflow_run_id"]).info.status == "KILLED"
    queued = [t for t in trials(tmp_path, "kill") if t.state == TrialState.WAITING]
    assert [t.user_attrs["retry_of"] for t in queued] == [number]

    run_study(config, root=tmp_path)
    assert complete_cells(tmp_path, "kill") == sorted(grid_cells(config))  # none lost, none twice
    (retry,) = [t for t in trials(tmp_path, "kill") if t.user_attrs.get("retry_of") == number]
    assert retry.state == TrialState.COMPLETE
    run = client.get_run(retry.user_attrs["mlflow_run_id"])
    assert int(run.data.tags["lossbench.resumed_from_step"]) >= 2  # from the checkpoint, not from scratch
    assert run.data.tags["lossbench.retry_of"] == str(number)
    finished = [
        r
        for r in client.search_runs([client.get_experiment_by_name("kill").experiment_id])
        if r.data.tags.get("lossbench.role") == "trial" and r.info.status == "FINISHED"
    ]
    assert len(finished) == len(grid_cells(config))
    states = {c: s for c, s, _ in study_cells(load_study("kill", root=tmp_path))}
    assert set(states.values()) == {"done"}


@pytest.mark.slow
def test_sigkilled_fused_group_resumes_on_rerun(tmp_path):
    """kill -9 of a worker training 4 cells fused: all 4 trials fail and are queued again; the rerun
    resumes them (fused, or one by one when their checkpoints are at different steps), none lost."""
    config = tiny("killfused", losses=("wgangp",), workers=1, fuse=4)
    config.train.steps = 6
    number, cell = run_until_killed(tmp_path, config)
    dead = [t for t in trials(tmp_path, "killfused") if t.state == TrialState.FAIL]
    assert len(dead) == 4 and all(t.user_attrs["fail_reason"].startswith("worker pid") for t in dead)
    queued = [t for t in trials(tmp_path, "killfused") if t.state == TrialState.WAITING]
    assert sorted(t.user_attrs["retry_of"] for t in queued) == sorted(t.number for t in dead)

    run_study(config, root=tmp_path)
    assert complete_cells(tmp_path, "killfused") == sorted(grid_cells(config))
    (retry,) = [t for t in trials(tmp_path, "killfused") if t.user_attrs.get("retry_of") == number]
    client = MlflowClient(tracking.default_tracking_uri(tmp_path))
    run = client.get_run(retry.user_attrs["mlflow_run_id"])
    assert int(run.data.tags["lossbench.resumed_from_step"]) >= 2


# --------------------------------------------------------------------------------------------- config


def test_study_files_load():
    demo = load_study_config(REPO / "studies" / "demo.toml")
    paper = load_study_config(REPO / "studies" / "busi-paper.toml")
    for config in (demo, paper):
        assert config.losses == ("wgangp", "bce") and config.lambdas == (0.5, 3.0, 5.0, 7.0, 10.0)
        assert len(config.seeds) == 3
    assert demo.data.spec == "phantom" and demo.data.resolution == 32
    assert (
        demo.train.random_weights
        and demo.eval.random_weights
        and demo.eval.feature_extractor == "lossbench-tiny"
    )
    assert paper.data.spec == "busi" and paper.data.resolution == 128
    assert not paper.train.random_weights and not paper.eval.random_weights


def test_overrides_beat_the_file_and_unknown_keys_are_named(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('name = "s"\nlosses = ["bce"]\n[train]\nsteps = 7\n[loss_params.bce]\nx = 1\n')
    config = with_overrides(
        load_study_config(path), {"train.steps": 9, "name": None, "loss_params": {"bce": {"y": 2}}}
    )
    assert (config.name, config.losses, config.train.steps) == ("s", ("bce",), 9)
    assert config.loss_params == {"bce": {"x": 1, "y": 2}}
    path.write_text("[train]\nstepz = 7\n")
    with pytest.raises(ConfigError, match="unknown key 'stepz' in \\[train\\]"):
        load_study_config(path)
    path.write_text("[train]\nlam = 3\n")
    with pytest.raises(ConfigError, match="unknown key 'lam'"):
        load_study_config(path)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--lambdas", "0.5,,3"], "malformed lambda list"),
        (["--lambdas", "0.5,x"], "'x' is not a number"),
        (["--losses", "wgangp,nosuch"], "unknown loss 'nosuch'"),
        (["--resolution", "48"], "resolution 48 is not a power of two"),
        (["--loss-param", "gp_weight=10"], "malformed --loss-param"),
        (["--objective", "nosuch"], "unknown objective"),
        (["--seeds", "2", "--seed-list", "0,1"], "either --seeds"),
        (["--set", "train.stepz=3"], "unknown key 'train.stepz'"),
        (["--set", "train.steps=1.5"], "steps"),
        # values no optimiser accepts, and absurd sizes (issue #26): refused before anything starts
        (["--set", "train.lr_g=-1"], "lr_g must be a finite number >= 0, got -1"),
        (["--set", "train.lr_d=nan"], "lr_d must be a finite number >= 0, got nan"),
        (["--set", "train.betas=[0.5, 2.0]"], "betas must be two numbers in [0, 1)"),
        (["--set", "train.steps=99999999999999999999999"], "steps must be at most 100,000,000"),
        (["--set", "train.steps=9223372036854775807"], "steps must be at most 100,000,000"),
        (["--set", "train.g_width=100000"], "g_width must be at most"),
        (["--batch-size", "100000000"], "batch_size must be at most 65,536"),
        (
            ["--batch-size", "40", "--random-weights", "--objective", "swd", "--set", 'eval.metrics=["swd"]'],
            "batch_size 40 is larger than the train part (12 images)",  # found with the data
        ),
    ],
)
def test_bad_input_is_one_line_exit_2_and_records_nothing(tmp_path, capsys, args, message):
    root = tmp_path / "mlruns"
    assert cli.main(["study", "--data", "phantom:16", "--root", str(root), *args]) == 2
    err = capsys.readouterr().err
    assert_one_line_error(err, message)
    assert not root.exists()


def test_missing_busi_says_how_to_get_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("LOSSBENCH_BUSI", raising=False)
    assert cli.main(["study", "--losses", "wgangp,bce", "--lambdas", "0.5,3,5,7,10"]) == 2
    err = capsys.readouterr().err
    assert "BUSI not found" in err
    assert_one_line_error(err, "--data phantom")
    assert not (tmp_path / "mlruns").exists()


def test_status_estimates_the_cell_time_left_per_loss_and_says_where_it_cannot():
    from lossbench.cli.study import _time_left
    from lossbench.progress import duration

    text = _time_left({"wgangp": [60.0, 180.0, 120.0]}, {"wgangp": 2, "bce": 3})
    assert text == (
        f"5 cell(s) left: about {duration(240)} of cell time (2 wgangp at {duration(120)}; divide by the "
        "workers); no estimate for 3 bce (none of that loss has finished; the study's command with --plan "
        "measures it)"
    )


def test_status_and_export_of_unknown_study_are_one_line(tmp_path, capsys):
    assert cli.main(["study", "status", "nope", "--root", str(tmp_path)]) == 2
    assert "no study storage" in capsys.readouterr().err


def _orphan_candidate(pid_file: str, parent: int) -> None:
    """Grandchild: watches its parent, then would sleep for a minute."""
    from lossbench.study.worker_entry import exit_with_parent

    exit_with_parent(parent, poll_seconds=0.05)
    Path(pid_file).write_text(str(os.getpid()))
    time.sleep(60)


def _short_lived_parent(pid_file: str) -> None:
    """Child: starts the grandchild, then waits to be killed."""
    context = multiprocessing.get_context("spawn")
    context.Process(target=_orphan_candidate, args=(pid_file, os.getpid())).start()
    time.sleep(60)


@pytest.mark.slow
def test_a_worker_exits_when_its_parent_is_killed(tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    parent = multiprocessing.get_context("spawn").Process(target=_short_lived_parent, args=(str(pid_file),))
    parent.start()
    deadline = time.monotonic() + 60
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline, "the grandchild never started"
        time.sleep(0.05)
    grandchild = int(pid_file.read_text())
    os.kill(parent.pid, signal.SIGKILL)  # no chance to stop its own children
    parent.join()
    deadline = time.monotonic() + 10
    while _alive(grandchild):
        assert time.monotonic() < deadline, "the orphaned worker went on running"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:  # a zombie is dead, only not yet reaped
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_worker_limits_torch_and_blas_threads_and_selects_its_cuda_device(monkeypatch):
    """numpy's BLAS ignores torch.set_num_threads: the worker limits both, and sets its CUDA device."""
    import threadpoolctl
    import torch

    from lossbench.study.workers import limit_threads_and_select

    selected = []
    monkeypatch.setattr(torch.cuda, "set_device", selected.append)
    threads = torch.get_num_threads()
    wider = threadpoolctl.threadpool_limits(limits=2, user_api="blas")  # as if OMP_NUM_THREADS were unset
    limiter = limit_threads_and_select(1, "cuda:1")
    try:
        assert torch.get_num_threads() == 1
        blas = [p for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"]
        assert blas and all(p["num_threads"] == 1 for p in blas)
        assert selected == [torch.device("cuda:1")]
        limit_threads_and_select(1, "cpu").restore_original_limits()
        assert len(selected) == 1
    finally:
        limiter.restore_original_limits()
        wider.restore_original_limits()
        torch.set_num_threads(threads)


def test_preflight_fills_the_cache_and_releases_its_networks(tmp_path):
    from lossbench.data.split import load_split
    from lossbench.metrics import diversity, fidelity
    from lossbench.study.prepare import preflight

    config = tiny("release")
    config = dataclasses.replace(config, eval=dataclasses.replace(config.eval, cache_dir=str(tmp_path)))
    result = preflight(config, load_split(config.data))
    assert result.provenance["fid_cache"] == "miss" and any(tmp_path.iterdir())
    assert fidelity._build.cache_info().currsize == 0
    assert diversity._lpips.cache_info().currsize == 0


@pytest.mark.slow
def test_packaged_tiny_preset_runs_offline_and_prints_the_runs_view(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no-weights"))  # the preset needs no weight file
    args = ["study", "--preset", "tiny", "--losses", "wgangp", "--lambdas", "0.5", "--seed-list", "0"]
    assert cli.main([*args, "--root", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "study tiny: 1 done" in out
    exp = MlflowClient(tracking.default_tracking_uri(tmp_path)).get_experiment_by_name("tiny").experiment_id
    url = f"http://127.0.0.1:5000/#/experiments/{exp}/runs?orderByKey=metrics.%60fid%60&orderByAsc=true"
    assert url in out and "next: lossbench stats tiny --root" in out
