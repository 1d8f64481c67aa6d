"""`lossbench study --plan`: a study's cost measured before it runs (lossbench.study.plan)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import queue
import threading

import pytest
import torch
from conftest import assert_one_line_error
from test_study import tiny

from lossbench.cli import main
from lossbench.config import DataConfig
from lossbench.study import plan


@pytest.mark.parametrize(
    "durations, workers, wall",
    [
        ([3, 3, 2, 2, 2], 2, 7),  # 3 | 3, then 2 + 2 on both, then 2 more on one: 3 + 2 + 2
        ([3, 3, 2, 2, 2], 1, 12),
        ([5, 1, 1, 1], 2, 5),  # the short ones queue behind each other on the second worker
        ([1, 1], 8, 1),
        ([], 2, 0),
    ],
)
def test_each_cell_goes_to_the_first_free_worker(durations, workers, wall):
    assert plan.shared_out(durations, workers) == wall


def test_a_plan_adds_up_what_it_measured(monkeypatch):
    """With the timings fixed (a step 0.1 s without the perceptual network and 0.2 s with it, one
    curve evaluation 0.5 s, the final evaluation 3 s, a judge step 0.01 s), every figure of the plan
    is the arithmetic worked out here by hand."""
    monkeypatch.setattr(plan, "_step_seconds", lambda run, steps, device: 0.2 if run.perceptual else 0.1)
    monkeypatch.setattr(plan, "_evaluations", lambda *a: {"final": 3.0, "curves": 0.5})
    monkeypatch.setattr(plan, "_judge_step", lambda *a: 0.01)
    monkeypatch.setattr(plan, "_company", lambda *a: contextlib.nullcontext())  # timings are fixed
    config = tiny("plan", lambdas=(0.0, 0.5), eval_every=2, curve_metrics=("swd",), workers=2)
    config = dataclasses.replace(
        config,
        data=DataConfig(spec="phantom:64", resolution=32, holdout=0.25),
        train=dataclasses.replace(config.train, conditional=True),
        eval=dataclasses.replace(
            config.eval, metrics=("fid", "utility"), utility_seeds=2, utility_steps=10, utility_bootstrap=10
        ),
    )
    measured = plan.measure_plan(config)
    # 4 steps; 4 // 2 = 2 curve evaluations; final 3 + 2 arms × 2 seeds × 10 steps × 0.01 s = 3.4 s
    training = {("wgangp", False): 0.4, ("wgangp", True): 0.8, ("bce", False): 0.4, ("bce", True): 0.8}
    cell = {kind: seconds + 2 * 0.5 + 3.4 for kind, seconds in training.items()}
    assert {(k.loss, k.perceptual): k.cell for k in measured.kinds} == pytest.approx(cell)
    assert [k.cells for k in measured.kinds] == [2, 2, 2, 2]
    assert measured.judge_once == pytest.approx(2 * 10 * 0.01)
    # grid order, the first cell with the real arm: 5.0 4.8 | 5.2 5.2 | 4.8 4.8 | 5.2 5.2 on 2 workers
    # w1: 5.0, 10.2, 15.0, 20.2; w2: 4.8, 10.0, 14.8, 20.0
    assert measured.cell_total == pytest.approx(4 * 4.8 + 4 * 5.2 + 0.2)
    assert measured.wall == pytest.approx(measured.setup + 20.2)
    lines = plan.plan_lines(measured)
    assert "| wgangp | 0 | 2 | 0.100 | 0.4 s | 1.0 s | 3.4 s | 4.8 s |" in lines
    assert any(line.startswith("utility judge: 4 classifiers of 10 steps per cell") for line in lines)


@pytest.mark.parametrize(
    "workers, said",
    [(0, "with the command's own process (--workers 0)"), (1, "with 1 worker(s)"), (3, "with 3 worker(s)")],
)
def test_the_total_names_who_runs_the_cells(workers, said):
    kind = plan.KindCost("bce", False, cells=2, step=0.1, train=1.0, curves=0.0, final=2.0)
    one = plan.Plan([kind], setup=1.0, judge_once=0.0, judge_note="", cell_total=6.0, wall=7.0,
                    workers=workers, header="h")  # fmt: skip
    (total,) = [line for line in plan.plan_lines(one) if line.startswith("total: ")]
    assert total.startswith("total: 6.0 s of cell time; about 7.0 s of wall time") and said in total


def test_plan_measures_every_part_and_records_nothing(tmp_path, capsys):
    """The real measurement (training steps, curves, the final evaluation, the judge's steps) on the
    tiny preset with a held-out part and the judge: a row per cell kind, and no file in --root."""
    root = tmp_path / "root"
    args = ["study", "--preset", "tiny", "--plan", "--root", str(root), "--no-progress", "--lambdas", "0,5"]
    args += ["--set", "data.holdout=0.25", "--set", "train.conditional=true", "--set", "eval_every=2"]
    args += ["--set", 'curve_metrics=["swd"]', "--set", 'eval.metrics=["fid", "utility"]']
    for setting in ("eval.utility_steps=4", "eval.utility_seeds=1", "eval.utility_bootstrap=10"):
        args += ["--set", setting]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "plan for study tiny: 8 cells (wgangp, bce × λ 0, 5 × 2 seeds), 32 px, 4 steps a cell" in out
    for row in ("| wgangp | 0 | 2 |", "| wgangp | > 0 | 2 |", "| bce | 0 | 2 |", "| bce | > 0 | 2 |"):
        assert row in out
    assert "utility judge: 2 classifiers of 4 steps per cell" in out and "total: " in out
    assert not root.exists()
    assert "Fused groups" not in out  # --fuse 1


def test_a_fused_study_is_told_its_groups_are_timed_as_single_cells(capsys):
    assert main(["study", "--preset", "tiny", "--plan", "--no-progress", "--fuse", "2"]) == 0
    assert "Fused groups (--fuse 2) are timed as single cells." in capsys.readouterr().out


def test_the_other_workers_train_beside_the_timings_and_stop_with_them(tmp_path):
    """On a CPU, workers - 1 processes train while the plan times (none with one worker), and none
    is left once the timings end."""
    import multiprocessing

    from lossbench.study.prepare import prepare

    config, split = prepare(tiny("company", workers=3), tmp_path)
    cpu = torch.device("cpu")
    assert plan.company_size(config, cpu) == 2 and plan.company_size(tiny("alone", workers=1), cpu) == 0
    assert plan.company_size(config, torch.device("cuda:0")) == 0
    with plan._company(config, split, cpu):
        assert len(multiprocessing.active_children()) == 2
    assert multiprocessing.active_children() == []


def test_a_company_process_that_cannot_train_says_why():
    images = torch.zeros(4, 1, 32, 32, dtype=torch.uint8)
    told = queue.Queue()
    config = dataclasses.replace(tiny("bad").train, batch_size=8)  # more than the 4 images
    plan.keep_training(
        config, images, torch.zeros(4, dtype=torch.long), 1, told, threading.Event(), os.getppid()
    )
    said = told.get_nowait()
    assert said.startswith("failed: batch size 8 is larger than the dataset"), said


def test_a_plan_on_data_that_is_not_there_is_one_line(tmp_path, capsys):
    assert main(["study", "--preset", "tiny", "--plan", "--data", str(tmp_path / "missing")]) == 2
    assert_one_line_error(capsys.readouterr().err, "missing")
