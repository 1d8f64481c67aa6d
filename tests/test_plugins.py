"""Third-party losses through the `lossbench.losses` entry-point group, with real distributions.

Each test puts `*.dist-info` folders (METADATA + entry_points.txt) and their modules on sys.path,
which is how an installed package looks to importlib.metadata, and resets the registry's plugin
cache; the fixture undoes both.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import shutil
import sys
from pathlib import Path

import optuna
import pytest
import torch
from conftest import assert_one_line_error
from torch import nn

from lossbench.cli import main
from lossbench.errors import ConfigError, PluginError
from lossbench.losses import available_losses, get_loss, registry
from lossbench.study import open_storage

FIXTURE = Path(__file__).parent / "fixtures" / "plugin"
BUILTIN = ["bce", "dragan", "hinge", "lsgan", "ns-r1", "rasgan", "rsgan", "wgangp"]


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A site-packages folder on sys.path holding the lossbench-rahinge distribution of fixtures/."""
    site = tmp_path / "site"
    shutil.copytree(FIXTURE, site)
    monkeypatch.syspath_prepend(str(site))
    registry.clear_plugin_cache()
    yield site
    registry.clear_plugin_cache()
    for name, module in list(sys.modules.items()):  # the plugin modules imported from `site`
        if str(site) in str(getattr(module, "__file__", "")):
            del sys.modules[name]


def add_distribution(site: Path, dist: str, entry_points: dict[str, str], module: str = "", source: str = ""):
    """Write an installed-looking distribution: dist-info with entry points, and optionally a module."""
    info = site / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    lines = "".join(f"{name} = {value}\n" for name, value in entry_points.items())
    (info / "entry_points.txt").write_text(f"[lossbench.losses]\n{lines}")
    if module:
        (site / f"{module}.py").write_text(source)


class LinearCritic(nn.Module):
    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.w


def test_plugin_loss_is_listed_and_usable_by_name(site, capsys):
    assert "rahinge" in available_losses() and set(BUILTIN) <= set(available_losses())
    loss = get_loss("rahinge", margin=0.5)
    assert loss.name == "rahinge" and loss.n_critic == 1 and loss.params() == {"margin": 0.5}
    assert "lossbench-rahinge 0.1.0" in registry.origin("rahinge")

    # Hand computation: scores r = (1, 3), f = (0, 2); E r = 2, E f = 1.
    D = LinearCritic(torch.tensor([1.0, 0.0]))
    real, fake = torch.tensor([[1.0, 5.0], [3.0, 5.0]]), torch.tensor([[0.0, 5.0], [2.0, 5.0]])
    d = 0.5 * (max(0, 0.5 - (1 - 1)) + max(0, 0.5 - (3 - 1))) + 0.5 * (
        max(0, 0.5 + (0 - 2)) + max(0, 0.5 + (2 - 2))
    )
    assert loss.discriminator_loss(D, real, fake).loss.item() == pytest.approx(d)

    with pytest.raises(ConfigError, match="'rahinge' has no parameter gamma; valid: margin"):
        get_loss("rahinge", gamma=1)

    assert main(["losses", "list"]) == 0
    out, err = capsys.readouterr()
    assert (
        "\nrahinge " in out and "Relativistic average hinge loss." in out and "margin=1.0, n_critic=1" in out
    )
    assert "of distribution lossbench-rahinge 0.1.0" in out and "wgangp " in out and err == ""
    assert main(["losses", "show", "rahinge"]) == 0
    assert "L_D = E[relu(m - (D(r) - E[D(f)]))]" in capsys.readouterr().out


def test_plugins_are_loaded_once(site, monkeypatch):
    calls = []
    entry_points = importlib.metadata.entry_points

    def counting(**kw):
        calls.append(kw)
        return entry_points(**kw)

    monkeypatch.setattr(importlib.metadata, "entry_points", counting)
    for _ in range(3):
        available_losses()
        get_loss("rahinge")
    assert calls == [{"group": "lossbench.losses"}]


def test_broken_plugin_names_itself_and_breaks_nothing(site, capsys):
    add_distribution(
        site, "broken-dist", {"broken": "lb_broken_mod:Loss"}, "lb_broken_mod", "import lb_missing_dep\n"
    )
    with pytest.raises(PluginError) as e:
        get_loss("broken")
    message = str(e.value)
    assert "'broken'" in message and "broken-dist 1.0" in message and "lb_missing_dep" in message
    assert "broken" not in available_losses()
    assert {"rahinge", *BUILTIN} <= set(available_losses())
    assert get_loss("wgangp").n_critic == 5 and get_loss("rahinge").n_critic == 1

    assert main(["losses", "list"]) == 0
    out, err = capsys.readouterr()
    assert "wgangp " in out and "rahinge " in out
    assert err.startswith("warning: plugin entry point 'broken'") and "ModuleNotFoundError" in err
    assert main(["losses", "show", "broken"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: plugin entry point 'broken'")
    assert_one_line_error(err)


def test_plugin_clashing_with_a_builtin_is_an_error_for_that_name_only(site, capsys):
    add_distribution(site, "clash-dist", {"hinge": "lossbench_rahinge:RaHinge"})
    with pytest.raises(
        PluginError, match=r"'hinge' is claimed by .*clash-dist 1\.0 and by the built-in loss"
    ):
        get_loss("hinge")
    assert get_loss("bce").n_critic == 1 and get_loss("rahinge").name == "rahinge"
    assert "hinge" not in available_losses() and "bce" in available_losses()
    assert main(["losses", "list"]) == 0
    assert "clash-dist" in capsys.readouterr().err


def test_two_plugins_claiming_one_name(site):
    add_distribution(site, "other-dist", {"rahinge": "lossbench_rahinge:RaHinge"})
    with pytest.raises(PluginError, match="'rahinge' is claimed by .* and by plugin entry point 'rahinge'"):
        get_loss("rahinge")
    assert get_loss("wgangp").name == "wgangp"


def test_plugin_subclassing_a_builtin_gets_its_own_name(site):
    source = "from lossbench.losses.bce import BCE\n\n\nclass SaturatingBCE(BCE):\n    pass\n"
    add_distribution(site, "sub-dist", {"bce-sat": "lb_sub_mod:SaturatingBCE"}, "lb_sub_mod", source)
    assert get_loss("bce-sat", saturating=True).name == "bce-sat"
    assert get_loss("bce").name == "bce"


def test_entry_point_that_is_not_a_loss_class(site):
    add_distribution(
        site, "odd-dist", {"odd": "lb_odd_mod:make"}, "lb_odd_mod", "def make():\n    return 1\n"
    )
    with pytest.raises(PluginError, match="odd-dist 1.0 is not a loss class"):
        get_loss("odd")


def test_plugin_loss_trains_a_few_steps_by_name(site, tmp_path):
    from lossbench.config import TrainConfig
    from lossbench.data import load_dataset
    from lossbench.training.train import train

    config = TrainConfig(
        loss="rahinge", loss_params={"margin": 0.5}, steps=2, batch_size=8, z_dim=16, g_width=4, d_width=4,
        perceptual="none", lam=0.0, log_every=1, progress=False,
    )  # fmt: skip
    result = train(load_dataset("phantom:16", 32), config, tmp_path / "run")
    assert result.steps == 2
    assert {"d/loss", "g/adv"} <= set(result.history)
    # With critic scores still near 0, RaHinge's L_D is 2·margin = 1 (bce would give 2·log 2, hinge 2).
    assert result.history["d/loss"][0][1] == pytest.approx(1.0, abs=0.05)


def test_plugin_loss_trains_conditionally_unchanged(site, tmp_path):
    """The plugin calls D(x): the trainer binds the batch's labels to the projection critic."""
    from lossbench.config import TrainConfig
    from lossbench.data import load_dataset
    from lossbench.training.train import load_generator, train

    config = TrainConfig(
        loss="rahinge", steps=2, batch_size=8, z_dim=16, g_width=4, d_width=4, perceptual="none", lam=0.0,
        log_every=1, progress=False, conditional=True, n_samples=3,
    )  # fmt: skip
    result = train(load_dataset("phantom:16", 32), config, tmp_path / "run")
    assert result.steps == 2 and result.history["d/loss"][0][1] == pytest.approx(2.0, abs=0.05)  # 2·margin
    assert load_generator(result.checkpoint).n_classes == 3


def test_docs_example_is_the_tested_plugin():
    """docs/plugins.md shows exactly the fixture module and the entry point these tests install."""
    docs = (Path(__file__).parents[1] / "docs" / "plugins.md").read_text()
    assert (FIXTURE / "lossbench_rahinge.py").read_text() in docs
    entry_point = (
        (FIXTURE / "lossbench_rahinge-0.1.0.dist-info" / "entry_points.txt").read_text().splitlines()[1]
    )
    assert entry_point.replace("lossbench_rahinge:RaHinge", '"lossbench_rahinge:RaHinge"') in docs


# --- metric plugins (entry-point group `lossbench.metrics`) ------------------------------------------------

METRIC_FIXTURE = Path(__file__).parent / "fixtures" / "metric_plugin"


@pytest.fixture
def metric_site(tmp_path, monkeypatch):
    """A site-packages folder on sys.path holding the lossbench-meangap distribution of fixtures/."""
    from lossbench.metrics import registry as metric_registry

    site = tmp_path / "metric-site"
    shutil.copytree(METRIC_FIXTURE, site)
    monkeypatch.syspath_prepend(str(site))
    metric_registry.clear_plugin_cache()
    yield site
    metric_registry.clear_plugin_cache()
    for name, module in list(sys.modules.items()):
        if str(site) in str(getattr(module, "__file__", "")):
            del sys.modules[name]


def add_metric_distribution(site: Path, dist: str, entry_points: dict[str, str], module: str, source: str):
    info = site / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    lines = "".join(f"{name} = {value}\n" for name, value in entry_points.items())
    (info / "entry_points.txt").write_text(f"[lossbench.metrics]\n{lines}")
    (site / f"{module}.py").write_text(source)


def test_plugin_metric_is_listed_evaluated_and_has_a_direction(metric_site, tmp_path, capsys):
    from lossbench.config import EvalConfig
    from lossbench.data import load_dataset
    from lossbench.metrics import (
        ALIASES,
        DIRECTIONS,
        available_metrics,
        evaluate,
        metric_key,
        resolve_metrics,
    )

    assert available_metrics()[-1] == "mean_gap" and DIRECTIONS["mean_gap"] == "min"
    assert "mean_fake" not in DIRECTIONS and ALIASES["mpd"] == "mean_gap" and metric_key("mpd") == "mean_gap"
    assert resolve_metrics(["mpd", "swd", "mean_gap"]) == ("mean_gap", "swd")

    real = load_dataset("phantom:20", 32)
    fakes = torch.full((6, 1, 32, 32), 200, dtype=torch.uint8)
    result = evaluate(fakes, real, EvalConfig(metrics=("mpd", "swd"), cache_dir=str(tmp_path)))
    expected = abs(200 - real.images.double().mean().item())  # independent: the whole tensor's mean
    assert result.metrics["mean_gap"] == pytest.approx(expected, rel=1e-12)
    assert result.metrics["mean_fake"] == 200 and "swd" in result.metrics
    assert result.settings["mean_gap_scale"] == "uint8" and result.settings["weights"] == "none"
    assert "mean_gap" in result.timings

    assert main(["metrics", "list"]) == 0
    out, err = capsys.readouterr()
    assert "\nmean_gap " in out and "mean_gap (lower is better); also mean_fake" in out and err == ""
    assert "of distribution lossbench-meangap 0.1.0" in out and out.startswith("fid ")


def test_broken_or_clashing_metric_plugins_break_only_themselves(metric_site, capsys):
    from lossbench.config import EvalConfig
    from lossbench.metrics import DIRECTIONS, available_metrics, get_metric, required_weights

    add_metric_distribution(metric_site, "broken-metric", {"broken": "lb_bm:M"}, "lb_bm", "import lb_nope\n")
    source = (
        "from lossbench.metrics import Metric\n"
        "M = Metric('fid2', keys={'fid': 'min'}, compute='x:y')\n"  # claims the built-in key fid
        "W = Metric('heavy', keys={'heavy': 'max'}, compute='x:y', weights=lambda c: ['vgg16'])\n"
        "N = 3\n"
    )
    entry_points = {"fid2": "lb_cm:M", "heavy": "lb_cm:W", "number": "lb_cm:N", "kid": "lb_cm:W"}
    add_metric_distribution(metric_site, "clash-metric", entry_points, "lb_cm", source)

    for name, message in [
        ("broken", r"'broken' \(lb_bm:M\) of distribution broken-metric 1\.0 failed to import"),
        ("fid2", r"declares fid, already taken by a registered metric"),
        ("number", r"is a int, not a lossbench\.metrics\.Metric"),
    ]:
        with pytest.raises(PluginError, match=message):
            get_metric(name)
    with pytest.raises(
        PluginError, match="'kid' is claimed by .*clash-metric 1.0 and by the built-in metric"
    ):
        get_metric("kid")
    assert DIRECTIONS["fid"] == "min" and "heavy" in DIRECTIONS and "mean_gap" in available_metrics()
    assert not {"broken", "fid2", "number", "kid"} & set(available_metrics()) and "kid" not in DIRECTIONS
    assert required_weights(EvalConfig(metrics=("heavy", "mpd", "msssim"))) == ["vgg16"]

    assert main(["metrics", "list"]) == 0
    err = capsys.readouterr().err
    assert err.count("warning: ") == 4 and "lb_nope" in err
    assert main(["evaluate", "--fake", "x", "--data", "phantom:8", "--metrics", "broken"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: plugin entry point 'broken'")
    assert_one_line_error(err)


def test_docs_show_the_tested_metric_plugin():
    docs = (Path(__file__).parents[1] / "docs" / "plugins.md").read_text()
    assert (METRIC_FIXTURE / "lossbench_meangap.py").read_text() in docs
    entry_point = (METRIC_FIXTURE / "lossbench_meangap-0.1.0.dist-info" / "entry_points.txt").read_text()
    assert 'mean_gap = "lossbench_meangap:MEAN_GAP"' in docs and entry_point.startswith("[lossbench.metrics]")


def test_two_metric_plugins_sharing_an_alias_are_both_errors(metric_site):
    from lossbench.metrics import available_metrics, get_metric

    source = (
        "from lossbench.metrics import Metric\n"
        "M = Metric('gap2', keys={'gap2': 'min'}, aliases=('mpd',), compute='x:y')\n"
    )
    add_metric_distribution(metric_site, "gap-dist", {"gap2": "lb_gap:M"}, "lb_gap", source)
    for name in ("gap2", "mean_gap"):
        with pytest.raises(PluginError, match=r"'mpd' is declared by .* and by .*; uninstall one of them"):
            get_metric(name)
    assert available_metrics() == ["fid", "kid", "lpips", "msssim", "pr", "dc", "copy", "swd", "utility"]


@pytest.mark.slow
def test_plugin_metric_is_a_study_objective_and_stats_use_its_direction(metric_site, tmp_path):
    """A metric installed as a separate package: computed by every cell of a study (spawned workers
    find the plugin by entry point), minimised as the objective, and 'best' in stats is its minimum."""
    from test_study import tiny

    from lossbench.analysis import analyze
    from lossbench.study import results_frame, run_study

    config = tiny(
        "plug",
        losses=("bce",),
        eval=dataclasses.replace(tiny("x").eval, metrics=("mpd",)),
        objective="mpd",
    )
    run_study(config, root=tmp_path)
    study = optuna.load_study(study_name="plug", storage=open_storage(None, tmp_path))
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    df = results_frame("plug", root=tmp_path)
    assert len(df) == 4 and df["mean_gap"].notna().all() and "fid" not in df
    best = analyze(df, ["mpd"]).best.iloc[0]
    means = df.groupby("lambda")["mean_gap"].mean()
    assert best["direction"] == "min" and best["lambda"] == means.idxmin()
    assert best["mean"] == pytest.approx(means.min())
