"""Training health (lossbench.health): the findings on planted histories, and probes that leave the
run exactly as it was."""

from __future__ import annotations

import json
import math

import pytest
import torch

from lossbench import health, tracking
from lossbench.config import TrainConfig
from lossbench.data import load_dataset
from lossbench.training.train import train

STEPS = [250, 300, 350]  # after the warm-up


def history(**terms: list[float]) -> dict[str, list[tuple[int, float]]]:
    return {name.replace("__", "/"): list(zip(STEPS, values, strict=True)) for name, values in terms.items()}


HEALTHY = dict(
    health__logit_scale=[0.4, 0.3, 0.5], health__critic_acc=[0.5, 0.6, 0.45],
    health__z_share=[0.8, 0.85, 0.9], health__ssim_gap=[0.02, -0.01, 0.03],
    d__loss=[1.30, 1.39, 1.386], d__wdist=[0.5, 0.4, 1.2],
)  # fmt: skip


@pytest.mark.parametrize(
    "changed, kinds",
    [
        ({}, []),
        ({"health__logit_scale": [0.01, 0.04, 0.02], "d__loss": [1.385, 1.39, 1.386]}, ["logits", "pinned"]),
        ({"health__logit_scale": [0.01, 0.04, 0.02]}, ["logits"]),
        ({"d__loss": [1.385, 1.39, 1.386]}, ["pinned"]),  # every log since the warm-up at 2 ln 2
        ({"health__logit_scale": [0.08, 0.09, 0.07]}, []),  # small logits, a loss that left 2 ln 2 once
        ({"d__wdist": [-0.7, -3.4, -1.0]}, ["wdist"]),
        ({"d__wdist": [-0.7, 0.1, -1.0]}, []),
        ({"health__z_share": [0.07, 0.15, 0.29]}, ["z"]),
        ({"health__ssim_gap": [0.62, 0.77, 0.67]}, ["alike"]),
        ({"health__ssim_gap": [0.62, 0.05, 0.67]}, []),
    ],
)
def test_findings_name_each_planted_failure_and_nothing_else(changed, kinds):
    found = health.findings(history(**{**HEALTHY, **changed}), "bce")
    assert [kind for kind, _ in found] == kinds
    assert all("\n" not in line for _, line in found)


def test_findings_wait_for_the_warm_up_and_a_full_window():
    stalled = history(**{**HEALTHY, "health__logit_scale": [0.01, 0.01, 0.01], "d__loss": [1.386] * 3})
    assert [k for k, _ in health.findings(stalled, "bce")] == ["logits", "pinned"]
    early = {k: [(s - 200, v) for s, v in values] for k, values in stalled.items()}
    assert health.findings(early, "bce") == []
    assert health.findings({k: v[1:] for k, v in stalled.items()}, "bce") == []
    assert [k for k, _ in health.findings(stalled, "wgangp")] == ["logits"]  # pinned at 2 ln 2 is BCE's
    assert math.isclose(2 * math.log(2), 1.3863, abs_tol=1e-4)


@pytest.mark.parametrize("conditional", [False, True])
def test_probes_leave_the_run_bit_for_bit_as_it_was(conditional, tmp_path):
    data = load_dataset("phantom:48", 32)
    config = dict(loss="wgangp", steps=4, batch_size=8, z_dim=8, g_width=4, d_width=4, perceptual="none",
                  lam=0.0, progress=False, conditional=conditional, sample_every=0)  # fmt: skip
    probed = train(data, TrainConfig(**config, health_every=1), tmp_path / "probed")
    plain = train(data, TrainConfig(**config, health_every=0), tmp_path / "plain")
    a, b = (torch.load(r.checkpoint, weights_only=True) for r in (probed, plain))
    for key in ("G", "D", "G_ema"):
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), f"{key}.{name}"
    assert a["rng"]["noise"].equal(b["rng"]["noise"]) and a["rng"]["torch"].equal(b["rng"]["torch"])
    names = {"health/critic_acc", "health/logit_scale", "health/ssim_gap"} | (
        {"health/z_share"} if conditional else set()
    )
    assert {k for k in probed.history if k.startswith("health/")} == names
    assert [s for s, _ in probed.history["health/critic_acc"]] == [1, 2, 3, 4]
    assert not any(k.startswith("health/") for k in plain.history)
    assert all(0 <= v <= 1 for _, v in probed.history["health/critic_acc"])


class FakeTrial:
    def __init__(self):
        self.user_attrs: dict = {}
        self.writes = 0

    def set_user_attr(self, key, value):
        self.user_attrs[key] = value
        self.writes += 1


def test_a_studys_trial_records_its_health_and_status_shows_it():
    from types import SimpleNamespace

    from lossbench.cli.study import _note
    from lossbench.study.cell import TrialCallback

    tags = {}
    ctx = SimpleNamespace(trial=FakeTrial(), run=SimpleNamespace(set_tags=tags.update))
    callback = TrialCallback(ctx)
    callback.on_health(250, {})
    assert tags["lossbench.health"] == "ok" and ctx.trial.writes == 1 and _note(ctx.trial) == ""
    findings = {"z": "generator barely uses z: ...", "alike": "fakes less varied than the reals: ..."}
    callback.on_health(300, findings)
    callback.on_health(350, dict(findings))  # unchanged: not written again
    assert ctx.trial.user_attrs["health"] == findings and ctx.trial.writes == 2
    assert tags["lossbench.health"] == "generator barely uses z: ...; fakes less varied than the reals: ..."
    assert _note(ctx.trial) == "health: z, alike"
    callback.on_health(400, {})
    assert tags["lossbench.health"] == "ok" and _note(ctx.trial) == ""
    ctx.trial.set_user_attr("fail_reason", "diverged: training diverged at step 7")
    assert _note(ctx.trial).startswith("diverged") and _note(None) == ""


def test_a_resumed_run_logs_the_same_health_history(tmp_path):
    data = load_dataset("phantom:48", 32)
    config = dict(loss="bce", batch_size=8, z_dim=8, g_width=4, d_width=4, perceptual="none", lam=0.0,
                  progress=False, sample_every=0, health_every=2, log_every=1)  # fmt: skip
    straight = train(data, TrainConfig(**config, steps=6), tmp_path / "straight")
    train(data, TrainConfig(**config, steps=3), tmp_path / "resumed")
    resumed = train(data, TrainConfig(**config, steps=6), tmp_path / "resumed", resume=True)
    assert [s for s, _ in straight.history["health/critic_acc"]] == [2, 4, 6]
    assert resumed.history == straight.history


def test_a_trial_keeps_its_best_evaluation_as_a_loadable_generator(tmp_path):
    from types import SimpleNamespace

    from lossbench.models.dgan import Generator
    from lossbench.study.cell import BEST_CHECKPOINT, TrialCallback
    from lossbench.training.train import CONFIG_JSON, load_generator

    model = {"arch": "dgan", "args": dict(resolution=32, z_dim=8, g_width=4, d_width=4, critic_norm="none")}
    (tmp_path / CONFIG_JSON).write_text(json.dumps({"model": model}))
    tags = {}
    run = SimpleNamespace(set_tags=tags.update)
    ctx = SimpleNamespace(
        trial=FakeTrial(), run=run, checkpoint_dir=tmp_path, best_metric="fid", train=TrainConfig()
    )
    callback = TrialCallback(ctx)
    generators = {}
    for step, fid in [(100, 50.0), (200, 30.0), (300, 40.0)]:  # fid: lower is better
        generators[step] = Generator(32, z_dim=8, width=4, rng=torch.Generator().manual_seed(step)).eval()
        callback.keep_best(step, generators[step], fid)
    saved = torch.load(tmp_path / BEST_CHECKPOINT, weights_only=True)
    assert (
        saved["step"] == 200
        and saved["best"] == {"fid": 30.0}
        and ctx.trial.user_attrs["best"]["step"] == 200
    )
    G = load_generator(tmp_path / BEST_CHECKPOINT)
    z = torch.randn(2, 8)
    torch.testing.assert_close(G(z), generators[200](z))
    assert tags["lossbench.best_checkpoint"].endswith("(step 200, fid 30)")
    resumed = TrialCallback(ctx)  # a resumed trial remembers its best through its record
    resumed.keep_best(400, generators[100], 35.0)
    assert torch.load(tmp_path / BEST_CHECKPOINT, weights_only=True)["step"] == 200
    retry = SimpleNamespace(**{**vars(ctx), "trial": FakeTrial()})  # a new trial resuming the cell's training
    TrialCallback(retry).on_start(300)
    assert retry.trial.user_attrs["best"] == {"step": 200, "value": 30.0, "metric": "fid"}
    TrialCallback(retry).keep_best(400, generators[100], 35.0)
    assert torch.load(tmp_path / BEST_CHECKPOINT, weights_only=True)["step"] == 200
    fresh = SimpleNamespace(**{**vars(ctx), "trial": FakeTrial()})  # from step 0: a leftover is replaced
    TrialCallback(fresh).on_start(0)
    TrialCallback(fresh).keep_best(100, generators[100], 50.0)
    assert torch.load(tmp_path / BEST_CHECKPOINT, weights_only=True)["step"] == 100


def test_every_trial_run_records_the_step_its_training_started_from(tmp_path):
    """Also a retry whose cell had finished training (its attempt died evaluating): it runs no step,
    and its run says it started at the last one, so the report joins its curves to the attempt's."""
    from types import SimpleNamespace

    from lossbench.study.cell import TrialCallback

    data = load_dataset("phantom:48", 32)
    config = TrainConfig(loss="bce", batch_size=8, z_dim=8, g_width=4, d_width=4, perceptual="none",
                         lam=0.0, progress=False, sample_every=0, log_every=1, steps=3)  # fmt: skip
    started = []
    for _ in range(2):
        tags = {}
        run = SimpleNamespace(set_tags=tags.update, log_metrics=lambda *a: None, flush=lambda: None,
                              tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")  # fmt: skip
        ctx = SimpleNamespace(trial=FakeTrial(), checkpoint_dir=tmp_path, best_metric="fid", run=run,
                              config=SimpleNamespace(eval_every=0))  # fmt: skip
        train(data, config, tmp_path, callbacks=[TrialCallback(ctx)], resume=True)
        started.append(tags[tracking.RESUMED_FROM_TAG])
    assert started == [0, 3]
