"""Downstream utility: scores against scikit-learn, synthetic counts by hand, the sanity checks
(held-out copies raise the gain, noise does not), the metric in `evaluate`, `lossbench utility`."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from conftest import assert_one_line_error
from sklearn.metrics import balanced_accuracy_score, f1_score, roc_auc_score

from lossbench.cli import main
from lossbench.config import EvalConfig, TrainConfig
from lossbench.data import load_dataset
from lossbench.errors import ConfigError
from lossbench.images import class_labels
from lossbench.metrics import DIRECTIONS, evaluate
from lossbench.metrics.utility import UtilitySettings, downstream_utility, score, synthetic_counts
from lossbench.training.train import train

FAST = UtilitySettings(seeds=2, steps=60, batch_size=16, width=8, ratio=1.0, bootstrap=200)


@pytest.fixture(scope="module")
def parts():
    """Phantom train (first 60) and held-out (next 60) parts at 32 px."""
    data = load_dataset("phantom:120", 32)
    part = lambda i: dataclasses.replace(data, images=data.images[i], labels=data.labels[i])  # noqa: E731
    return part(slice(0, 60)), part(slice(60, 120))


def test_scores_match_scikit_learn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 200)
    probs = rng.dirichlet([1, 1, 1], 200) + np.eye(3)[y] * rng.uniform(0, 1, (200, 1))
    probs /= probs.sum(1, keepdims=True)
    got = score(probs, y)
    assert got["bacc"] == pytest.approx(balanced_accuracy_score(y, probs.argmax(1)))
    assert got["f1"] == pytest.approx(f1_score(y, probs.argmax(1), average="macro", labels=[0, 1, 2]))
    assert got["auc"] == pytest.approx(roc_auc_score(y, probs, multi_class="ovr", average="macro"))


def test_synthetic_counts_balance_or_water_fill():
    assert synthetic_counts([34, 16, 10], 0.0) == [0, 18, 24]  # everyone up to 34
    assert synthetic_counts([34, 16, 10], 0.5) == [0, 12, 18]  # 30 images: 16+12 = 10+18 = 28 < 34
    assert synthetic_counts([3, 3], 1.0) == [3, 3]


def test_every_class_is_drawn_equally_often_whatever_its_count(parts, monkeypatch):
    """Balancing alone raises balanced accuracy; each arm draws classes equally so that the gain
    measures the synthetic images, not the rebalancing (see the module docstring)."""
    import lossbench.metrics.utility as utility

    train, _ = parts
    keep = torch.cat([torch.nonzero(train.labels == 0)[:, 0], torch.nonzero(train.labels == 1)[:4, 0]])
    seen = []
    real_ce = utility.F.cross_entropy
    monkeypatch.setattr(utility.F, "cross_entropy", lambda logits, y: seen.append(y) or real_ce(logits, y))
    settings = dataclasses.replace(FAST, steps=100, batch_size=16)
    utility.train_classifier(train.images[keep], train.labels[keep], 3, 0, settings)
    drawn = torch.bincount(torch.cat(seen), minlength=3) / (100 * 16)
    counts = torch.bincount(train.labels[keep], minlength=3)
    assert counts[0] >= 4 * counts[1] and drawn[2] == 0
    assert drawn[0] == pytest.approx(0.5, abs=0.05) and drawn[1] == pytest.approx(0.5, abs=0.05)


def held_out_copies(heldout):
    """A 'generator' that returns copies of the held-out images of each class (a leak)."""

    def sample(counts):
        xs = [heldout.images[heldout.labels == k][torch.arange(c) % int((heldout.labels == k).sum())]
              for k, c in enumerate(counts)]  # fmt: skip
        return torch.cat(xs), class_labels(counts)

    return sample


def noise(counts):
    n = sum(counts)
    images = torch.randint(
        0, 256, (n, 1, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1)
    )
    return images, class_labels(counts)


@pytest.mark.slow
def test_held_out_copies_raise_the_gain_and_noise_does_not(parts):
    train_part, heldout = parts
    leak = downstream_utility(train_part, heldout, held_out_copies(heldout), FAST)
    assert leak.gain_ci[0] > 0, (leak.gain, leak.gain_ci)  # the metric can move
    assert leak.scores["synth"]["bacc"] > leak.scores["real"]["bacc"]
    junk = downstream_utility(train_part, heldout, noise, FAST)
    assert junk.gain_ci[0] <= 0 and junk.gain < leak.gain_ci[0], (junk.gain, junk.gain_ci)
    assert junk.scores["real"] == leak.scores["real"]  # same seeds, same real arm
    assert junk.counts["aug"] == [40, 40, 40] and junk.counts["synth"] == junk.counts["real"]
    assert set(junk.recall["aug"]) == set(train_part.class_names)


def test_bad_inputs_are_one_line_errors(parts):
    train_part, heldout = parts
    one_class = dataclasses.replace(heldout, labels=torch.zeros_like(heldout.labels))
    with pytest.raises(ConfigError, match="at least two classes"):
        downstream_utility(train_part, one_class, noise, FAST)
    with pytest.raises(ConfigError, match="synthetic images must be uint8"):
        downstream_utility(train_part, heldout, lambda c: (noise(c)[0].float(), class_labels(c)), FAST)
    with pytest.raises(ConfigError, match="utility_ratio"):
        EvalConfig(utility_ratio=-1)


@pytest.fixture(scope="module")
def checkpoint(parts, tmp_path_factory):
    config = TrainConfig(
        steps=2, batch_size=8, z_dim=16, g_width=4, d_width=4, perceptual="none", lam=0.0, progress=False,
        conditional=True, n_samples=3,
    )  # fmt: skip
    out = tmp_path_factory.mktemp("cond")
    return train(parts[0], config, out).checkpoint


def test_utility_metric_in_evaluate(parts, checkpoint):
    from lossbench.training.train import load_generator

    assert DIRECTIONS["utility_gain"] == "max" and DIRECTIONS["cas"] == "max"
    train_part, heldout = parts
    G = load_generator(checkpoint)
    config = EvalConfig(
        metrics=("utility",), n_fake=8, utility_seeds=1, utility_steps=5, utility_bootstrap=20
    )
    result = evaluate(G, train_part, config, heldout=heldout)
    assert {"utility_gain", "cas", "utility_gain_lo", "utility_aug_auc"} <= set(result.metrics)
    assert result.settings["utility_steps"] == 5 and "benign" in result.settings["utility_aug_recall"]
    with pytest.raises(ConfigError, match="needs a held-out part"):
        evaluate(G, train_part, config)
    with pytest.raises(ConfigError, match="class-conditional generator"):
        evaluate(torch.zeros(4, 1, 32, 32, dtype=torch.uint8), train_part, config, heldout=heldout)


def test_cli_utility(checkpoint, tmp_path, capsys):
    args = ["utility", "--checkpoint", str(checkpoint), "--data", "phantom:80", "--holdout", "0.4"]
    fast = ["--seeds", "1", "--steps", "5", "--bootstrap", "20"]
    assert main([*args, *fast]) == 0
    out = capsys.readouterr().out
    assert "utility_gain (balanced accuracy, aug - real)" in out and "| synth |" in out
    assert main([*args, *fast, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["settings"]["utility_steps"] == 5 and "utility_gain" in report["metrics"]
    for bad in (["--ratio", "-1"], ["--holdout", "0"]):
        assert main([*args, *bad]) == 2
        assert_one_line_error(capsys.readouterr().err)


@pytest.mark.slow
def test_study_records_utility_per_cell_and_uses_it_as_objective(tmp_path):
    import optuna

    from lossbench.config import DataConfig, StudyConfig
    from lossbench.study import open_storage, run_study
    from lossbench.study.definition import validate

    config = StudyConfig(
        name="util", losses=("hinge",), lambdas=(0.0,), seeds=(0,), workers=0, objective="utility_gain",
        data=DataConfig(spec="phantom:48", resolution=32, holdout=0.25),
        train=TrainConfig(steps=2, batch_size=8, z_dim=16, g_width=4, d_width=4, perceptual="none",
                          conditional=True, sample_every=0, n_samples=3, progress=False),
        eval=EvalConfig(metrics=("swd", "utility"), n_fake=8, utility_seeds=1, utility_steps=5,
                        utility_bootstrap=20),
    )  # fmt: skip
    run_study(config, root=tmp_path)
    (trial,) = optuna.load_study(study_name="util", storage=open_storage(None, tmp_path)).get_trials()
    assert trial.value == trial.user_attrs["metric.utility_gain"]
    assert trial.user_attrs["setting.utility_steps"] == 5 and "metric.cas" in trial.user_attrs
    # which judge and which split made the number travel with it into stats and the report
    assert trial.user_attrs["setting.utility_classifier"] == "resnet"
    assert trial.user_attrs["setting.split"] == "holdout 0.25, split seed 0, lossbench split v2"
    for change, message in (
        (dict(data=DataConfig(spec="phantom:48", resolution=32)), "set data.holdout > 0"),
        (dict(train=TrainConfig(perceptual="none")), "set train.conditional"),
    ):
        with pytest.raises(ConfigError, match=message):
            validate(dataclasses.replace(config, **change))


def test_busi_study_files_ask_for_utility_and_validate():
    from pathlib import Path

    from lossbench.study.definition import load_study_config, validate

    studies = Path(__file__).resolve().parents[1] / "studies"
    cpu = load_study_config(studies / "busi-cpu.toml")
    paper = dataclasses.replace(load_study_config(studies / "busi-paper.toml"), devices=("cpu",))
    for config in (cpu, paper):
        validate(config)
        assert config.train.conditional and config.data.holdout > 0 and "utility" in config.eval.metrics
    assert cpu.losses == ("wgangp", "bce") and len(cpu.seeds) >= 5 and cpu.data.resolution == 64
    assert set(cpu.lambdas) <= {0.0, 0.5, 3.0, 5.0, 7.0, 10.0} and cpu.objective == "utility_gain"
    assert 0.0 in cpu.lambdas  # the control the paper lacks: what the perceptual loss adds


def test_real_arm_is_computed_once_and_cached_by_content(parts, tmp_path, monkeypatch):
    import lossbench.metrics.utility as utility

    train_part, heldout = parts
    settings = dataclasses.replace(FAST, seeds=1, steps=10)
    trained = []
    real_train = utility.train_classifier
    monkeypatch.setattr(
        utility, "train_classifier", lambda x, *a, **k: trained.append(len(x)) or real_train(x, *a, **k)
    )
    first = downstream_utility(train_part, heldout, noise, settings, cache_folder=tmp_path)
    assert first.provenance["utility_real_cache"] == "miss" and len(trained) == 3
    again = downstream_utility(train_part, heldout, held_out_copies(heldout), settings, cache_folder=tmp_path)
    assert again.provenance["utility_real_cache"] == "hit" and len(trained) == 5  # aug and synth only
    assert again.scores["real"] == first.scores["real"]
    uncached = downstream_utility(train_part, heldout, noise, settings)
    assert uncached.scores["real"] == first.scores["real"] and uncached.provenance == {}
    other = downstream_utility(
        train_part, heldout, noise, dataclasses.replace(settings, steps=11), cache_folder=tmp_path
    )
    assert other.provenance["utility_real_cache"] == "miss"  # another judge is another entry
    ratio = downstream_utility(
        train_part, heldout, noise, dataclasses.replace(settings, ratio=0.5), cache_folder=tmp_path
    )
    assert ratio.provenance["utility_real_cache"] == "hit"  # the real arm does not see the ratio


def test_classic_augmentation_is_seeded_and_reduces_to_flips(monkeypatch):
    import lossbench.metrics.judges as judges

    x = torch.rand(64, 1, 16, 16) * 2 - 1
    a = judges.classic_augment(x, torch.Generator().manual_seed(3))
    b = judges.classic_augment(x, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.min() >= -1 and a.max() <= 1 and not torch.allclose(a, x, atol=0.05)
    monkeypatch.setattr(judges, "ZOOM", (1.0, 1.0))
    monkeypatch.setattr(judges, "SHIFT", 0.0)
    monkeypatch.setattr(judges, "BRIGHTNESS", 0.0)
    monkeypatch.setattr(judges, "CONTRAST", (1.0, 1.0))
    y = judges.classic_augment(x, torch.Generator().manual_seed(3))
    same = (y - x).abs().flatten(1).amax(1) < 1e-5
    flipped = (y - x.flip(-1)).abs().flatten(1).amax(1) < 1e-5
    assert torch.all(same ^ flipped) and 16 < int(flipped.sum()) < 48


def test_judges_by_name():
    from lossbench.metrics.judges import build_judge

    resnet = build_judge("resnet", 3, 32)
    assert 1.1e6 < sum(p.numel() for p in resnet.parameters()) < 1.3e6  # as the docstring says
    assert resnet(torch.zeros(2, 1, 64, 64)).shape == (2, 3)
    assert build_judge("cnn3", 3, 8)(torch.zeros(2, 1, 32, 32)).shape == (2, 3)
    with pytest.raises(ConfigError, match="utility_classifier"):
        EvalConfig(utility_classifier="vit")
    with pytest.raises(ConfigError, match="utility classifier"):
        build_judge("vit", 3, 8)


def test_learning_rate_warms_up_then_follows_a_cosine_like_torchs_schedulers():
    from lossbench.metrics.utility import LR, WARMUP, lr_factor

    steps = 200
    warmup = round(WARMUP * steps)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=LR)
    reference = torch.optim.lr_scheduler.SequentialLR(
        opt,
        [
            torch.optim.lr_scheduler.LinearLR(opt, 1 / warmup, 1.0, warmup - 1),
            torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps - warmup),
        ],
        milestones=[warmup],
    )
    for t in range(steps):
        assert lr_factor(t, steps) * LR == pytest.approx(opt.param_groups[0]["lr"], abs=1e-9), t
        opt.step()
        reference.step()
