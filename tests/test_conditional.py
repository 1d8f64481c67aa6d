"""Class-conditional DGAN-WP-TL: projection critic, labels bound to the critic for every loss,
sampling by class counts, one grid row per class, and fakes of class k that look like class k."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from lossbench.config import ModelConfig, TrainConfig
from lossbench.data import load_dataset
from lossbench.errors import CheckpointError, ConfigError
from lossbench.images import class_labels, generate_images, proportional_counts, sample_classes
from lossbench.losses import LossOutput, available_losses, get_loss, registry
from lossbench.models import build_model, register_model
from lossbench.models.dgan import CLASS_LR_MULT, ConditionalBatchNorm2d, Critic, Generator
from lossbench.training.train import load_generator, train

TINY = dict(
    batch_size=8, z_dim=16, g_width=4, d_width=4, perceptual="none", lam=0.0, progress=False, log_every=1,
    conditional=True, n_samples=6,
)  # fmt: skip


@pytest.fixture(scope="module")
def phantom():
    return load_dataset("phantom:24", 32)


@pytest.mark.parametrize("loss", [n for n in available_losses() if registry.origin(n) == "built-in"])
def test_every_builtin_loss_trains_conditionally(loss, phantom, tmp_path):
    result = train(phantom, TrainConfig(loss=loss, steps=2, **TINY), tmp_path)
    assert result.steps == 2 and all(v == v for _, v in result.history["d/loss"])
    G = load_generator(result.checkpoint)
    assert G.n_classes == 3
    # One row per class of ceil(6 / 3) = 2 images of 32 px, torchvision's 2 px padding.
    assert Image.open(result.sample_grid).size == (2 * 34 + 2, 3 * 34 + 2)


def test_projection_critic_is_the_unconditional_score_plus_the_class_projection():
    rng = torch.Generator().manual_seed(0)
    D = Critic(32, width=4, rng=rng, n_classes=3)
    x, y = torch.randn(5, 1, 32, 32), torch.tensor([0, 1, 2, 1, 0])
    h = D.net[:-1](x)
    expected = D.net[-1](h).flatten() + (D.embed.weight[y] * h.sum((2, 3))).sum(1)
    assert torch.allclose(D(x, y), expected)
    assert not torch.allclose(D(x, y), D(x, (y + 1) % 3))  # the class changes the score
    with pytest.raises(ValueError, match="one class index per sample"):
        D(x)


def test_conditional_batchnorm_is_batchnorm_with_a_gain_and_bias_per_class():
    cbn = ConditionalBatchNorm2d(4, n_classes=3)
    with torch.no_grad():
        cbn.gain.weight.copy_(torch.randn(3, 4))
        cbn.bias.weight.copy_(torch.randn(3, 4))
    x, y = torch.randn(6, 4, 5, 5), torch.tensor([0, 1, 2, 2, 1, 0])
    mean, var = x.mean((0, 2, 3), keepdim=True), x.var((0, 2, 3), unbiased=False, keepdim=True)
    gain, bias = (CLASS_LR_MULT * t.weight[y, :, None, None] for t in (cbn.gain, cbn.bias))
    by_hand = (x - mean) / torch.sqrt(var + 1e-5) * (1 + gain) + bias
    torch.testing.assert_close(cbn(x, y), by_hand)


def test_generator_takes_the_class_by_its_conditioning_and_unconditional_networks_are_unchanged():
    z = torch.randn(3, 8)
    concat = Generator(
        32, z_dim=8, width=4, rng=torch.Generator().manual_seed(0), n_classes=2, conditioning="concat"
    )
    assert not torch.allclose(concat.eval()(z, torch.tensor([0, 0, 0])), concat(z, torch.tensor([1, 1, 1])))
    G = Generator(
        32, z_dim=8, width=4, rng=torch.Generator().manual_seed(0), n_classes=2, conditioning="batchnorm"
    )
    a, b = G(z, torch.tensor([0, 0, 0])), G(z, torch.tensor([1, 1, 1]))
    torch.testing.assert_close(a, b)  # class gains and biases 0 at initialisation: a plain BatchNorm
    with torch.no_grad():
        G.net[1].bias.weight[1] += 0.1
    assert not torch.allclose(G(z, torch.tensor([0, 0, 0])), G(z, torch.tensor([1, 1, 1])))
    with pytest.raises(ConfigError, match="conditioning must be one of batchnorm, concat"):
        Generator(32, z_dim=8, width=4, n_classes=2, conditioning="film")
    plain_g, plain_d = build_model("dgan", rng=torch.Generator().manual_seed(0), **_args())
    rng = torch.Generator().manual_seed(0)
    cond_g, cond_d = build_model("dgan", rng=rng, n_classes=3, conditioning="concat", **_args())
    bn_g, _ = build_model("dgan", rng=torch.Generator().manual_seed(0), n_classes=3, **_args())  # "batchnorm"
    assert not any("embed" in k or "gain" in k for k in [*plain_g.state_dict(), *plain_d.state_dict()])
    assert {k for k in cond_d.state_dict() if "embed" in k} == {"embed.weight"}
    assert cond_g.net[0].in_channels == 2 * plain_g.net[0].in_channels  # "concat": z joined to its embedding
    assert bn_g.net[0].in_channels == plain_g.net[0].in_channels  # "batchnorm": z alone
    assert sum(isinstance(m, ConditionalBatchNorm2d) for m in bn_g.modules()) == sum(
        isinstance(m, torch.nn.BatchNorm2d) for m in plain_g.modules()
    )


def _args():
    return dict(resolution=32, z_dim=8, g_width=4, d_width=4, critic_norm="none")


class Spy:
    """A loss that records which labels its critic sees (through BoundCritic) and is otherwise hinge."""

    n_critic = 1

    def __init__(self):
        self.inner, self.seen = get_loss("hinge"), []

    def discriminator_loss(self, D, real, fake) -> LossOutput:
        self.seen.append(D.labels.clone())
        assert len(D(real)) == len(real)  # called as D(x)
        return self.inner.discriminator_loss(D, real, fake)

    def generator_loss(self, D, real, fake) -> LossOutput:
        return self.inner.generator_loss(D, real, fake)

    def params(self):
        return {}


def test_the_critic_sees_the_real_batch_labels(phantom, tmp_path, monkeypatch):
    spy = Spy()
    monkeypatch.setattr("lossbench.training.train.get_loss", lambda name, **kw: spy)
    train(phantom, TrainConfig(steps=3, **TINY), tmp_path)
    assert len(spy.seen) == 3
    assert all(len(y) == 8 and set(y.tolist()) <= {0, 1, 2} for y in spy.seen)
    assert len({tuple(y.tolist()) for y in spy.seen}) > 1  # each batch's own labels


def test_conditional_resume_is_exact(phantom, tmp_path):
    full = train(phantom, TrainConfig(steps=4, **TINY), tmp_path / "full")
    train(phantom, TrainConfig(steps=2, **TINY), tmp_path / "resumed")
    resumed = train(phantom, TrainConfig(steps=4, **TINY), tmp_path / "resumed", resume=True)
    a, b = full.generator_ema.state_dict(), resumed.generator_ema.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_architecture_without_classes_cannot_train_conditionally(phantom, tmp_path):
    @register_model("plain-only")
    def plain(resolution, z_dim, g_width, d_width, critic_norm, rng=None):
        return build_model("dgan", rng=rng, **dict(resolution=resolution, z_dim=z_dim, g_width=g_width,
                                                    d_width=d_width, critic_norm=critic_norm))  # fmt: skip

    config = TrainConfig(steps=1, model=ModelConfig(arch="plain-only"), **TINY)
    with pytest.raises(ConfigError, match="bad arguments for architecture 'plain-only'.*n_classes"):
        train(phantom, config, tmp_path)


def test_sampling_by_class_counts():
    assert class_labels([2, 0, 3]).tolist() == [0, 0, 2, 2, 2]
    assert proportional_counts(torch.tensor([0] * 437 + [1] * 210 + [2] * 133), 3, 100) == [56, 27, 17]
    assert proportional_counts(torch.tensor([0, 1, 2]), 3, 4) == [2, 1, 1]
    G = Generator(32, z_dim=8, width=4, n_classes=3)
    images, labels = sample_classes(G, [1, 2, 0], seed=0)
    assert images.shape == (3, 1, 32, 32) and images.dtype == torch.uint8 and labels.tolist() == [0, 1, 1]
    with pytest.raises(ConfigError, match="needs class labels"):
        generate_images(G, 3, seed=0)
    with pytest.raises(ConfigError, match="class-conditional generator"):
        sample_classes(Generator(32, z_dim=8, width=4), [1, 1], seed=0)
    with pytest.raises(ConfigError, match="counts for 2 classes, but the generator has 3"):
        sample_classes(G, [1, 1], seed=0)


def test_per_class_metrics_compare_class_k_fakes_with_class_k_reals(phantom, tmp_path, capsys):
    import json

    from lossbench.cli import main
    from lossbench.config import EvalConfig
    from lossbench.metrics import evaluate_per_class
    from lossbench.metrics.swd import sliced_wasserstein

    checkpoint = train(phantom, TrainConfig(steps=1, **TINY), tmp_path).checkpoint
    G = load_generator(checkpoint)
    config = EvalConfig(metrics=("swd", "utility", "copy"), n_fake=12, swd_directions=16)  # `needs`: left out
    per_class = evaluate_per_class(G, phantom, config)
    assert list(per_class) == list(phantom.class_names)
    counts = proportional_counts(phantom.labels, 3, 12)
    for k, (name, result) in enumerate(per_class.items()):
        assert set(result.metrics) == {"swd"} and result.settings["n_fake"] == counts[k]
        fakes, _ = sample_classes(G, [counts[k] if j == k else 0 for j in range(3)], seed=0)
        expected = sliced_wasserstein(fakes, phantom.images[phantom.labels == k], 16, 0)
        assert result.metrics["swd"] == pytest.approx(expected), name
    args = ["evaluate", "--checkpoint", str(checkpoint), "--data", "phantom:24", "--metrics", "swd"]
    assert main([*args, "--n-fake", "12", "--per-class", "--json"]) == 0
    assert set(json.loads(capsys.readouterr().out)["per_class"]) == set(phantom.class_names)
    held = ["--holdout", "0.25", "--metrics", "swd,copy", "--extractor", "lossbench-tiny"]
    assert main([*args, *held, "--n-fake", "12", "--per-class", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)  # copy scored overall (train vs held-out part) only
    assert "authenticity_pixel" in out["metrics"] and out["settings"]["holdout"] == 0.25
    assert all(set(r["metrics"]) == {"swd"} for r in out["per_class"].values())
    assert main(["evaluate", "--fake", str(tmp_path), "--data", "phantom:24", "--per-class"]) == 2


def test_features_carry_each_row_class_for_a_conditional_generator(phantom, tmp_path):
    import numpy as np

    from lossbench.config import EvalConfig
    from lossbench.metrics import evaluate

    G = load_generator(train(phantom, TrainConfig(steps=1, **TINY), tmp_path).checkpoint)
    result = evaluate(G, phantom, EvalConfig(metrics=("fid",), n_fake=12, feature_extractor="lossbench-tiny"))
    counts = proportional_counts(phantom.labels, 3, 12)
    assert result.fake_features.shape[0] == len(result.fake_classes) == 12
    expected = np.repeat(np.asarray(phantom.class_names), counts)  # class_labels' order: class by class
    assert result.fake_classes.tolist() == expected.tolist()
    assert result.real_classes.tolist() == [phantom.class_names[k] for k in phantom.labels.tolist()]


def test_checkpoints_record_the_conditioning_and_an_old_one_is_a_one_line_error(phantom, tmp_path):
    config = TrainConfig(loss="bce", steps=1, model=ModelConfig(kwargs={"conditioning": "concat"}), **TINY)
    result = train(phantom, config, tmp_path / "concat")
    state = torch.load(result.checkpoint, weights_only=True)
    assert state["model"]["args"]["conditioning"] == "concat"
    new = train(phantom, TrainConfig(loss="bce", steps=1, **TINY), tmp_path / "new")
    default = torch.load(new.checkpoint, weights_only=True)
    assert default["model"]["args"]["conditioning"] == "batchnorm"  # the default is recorded too
    del state["model"]["args"]["conditioning"]  # as checkpoints of before 2026-12 are
    torch.save(state, tmp_path / "old.pt")
    with pytest.raises(CheckpointError, match='needs conditioning = "concat"') as e:
        load_generator(tmp_path / "old.pt")
    assert "\n" not in str(e.value)
    state["model"]["args"]["conditioning"] = "concat"
    torch.save(state, tmp_path / "mended.pt")
    assert load_generator(tmp_path / "mended.pt").conditioning == "concat"


def test_per_class_fid_comes_with_what_the_class_held_out_images_score(tmp_path):
    from lossbench.config import EvalConfig
    from lossbench.data.split import holdout_split
    from lossbench.metrics import evaluate, evaluate_per_class
    from lossbench.metrics.evaluation import _class_part

    split = holdout_split(load_dataset("phantom:120", 32), 0.25, 0)
    G = load_generator(train(split.train, TrainConfig(steps=1, **TINY), tmp_path).checkpoint)
    config = EvalConfig(
        metrics=("fid",), n_fake=90, feature_extractor="lossbench-tiny", cache_dir=str(tmp_path)
    )
    per_class = evaluate_per_class(G, split.train, config, heldout=split.heldout)
    for k, (name, result) in enumerate(per_class.items()):
        held = split.heldout.images[split.heldout.labels == k]
        assert result.settings["n_heldout"] == len(held) > 0, name
        # the class's held-out images scored as fakes against the class's training images
        reference = evaluate(held, _class_part(split.train, k), config).metrics["fid"]
        assert result.metrics["fid_heldout"] == pytest.approx(reference, rel=1e-9), name
        assert "fid_at_heldout_n" in result.metrics
        assert evaluate(held, split.train, config).metrics["fid"] != pytest.approx(
            reference
        )  # not all classes
    assert all("fid_heldout" not in r.metrics for r in evaluate_per_class(G, split.train, config).values())
    # a domain encoder trained on this split is accepted for every class's part of it (its check is on
    # the whole train part: a class's part has another fingerprint), and refused on another split
    from dataclasses import replace

    from lossbench.metrics.encoder import train_encoder

    train_encoder(split, tmp_path / "enc.pt", epochs=1, batch_size=32, seed=0)
    encoded = replace(config, feature_extractor=f"encoder:{tmp_path / 'enc.pt'}")
    per_class = evaluate_per_class(G, split.train, encoded, heldout=split.heldout)
    assert all("fid_heldout" in r.metrics for r in per_class.values())
    other = holdout_split(load_dataset("phantom:120", 32), 0.25, 1)
    with pytest.raises(ConfigError, match="trained on another train part"):
        evaluate_per_class(G, other.train, encoded, heldout=other.heldout)
