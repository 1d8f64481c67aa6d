"""The shared trainer: determinism, exact resume, divergence, callbacks, every loss, and `lossbench train`."""

from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

import lossbench.training.train as train_module
from lossbench.cli import main
from lossbench.config import ModelConfig, TrainConfig
from lossbench.errors import ConfigError, DivergedError
from lossbench.losses import available_losses, get_loss
from lossbench.models import register_feature_network, register_model
from lossbench.training.augment import color, cutout, diff_augment, translation
from lossbench.training.train import Callback, load_generator, train

TINY = dict(batch_size=8, z_dim=16, g_width=4, d_width=4, perceptual="none", progress=False, log_every=2)


def raising_features(random_weights: bool, weights_dir: str | None) -> nn.Sequential:
    raise AssertionError("the perceptual network must not be built")


register_feature_network("raising", raising_features)


@pytest.fixture(scope="module")
def data():
    """40 smooth random 32×32 images (uint8), like ImageDataset.images."""
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.interpolate(torch.rand(40, 1, 8, 8, generator=g), size=32, mode="bilinear")
    return SimpleNamespace(images=(x * 255).round().to(torch.uint8), source="test", fingerprint="0")


def config(**kw) -> TrainConfig:
    return TrainConfig(**{**TINY, **kw})


def states_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


class Recorder(Callback):
    def __init__(self):
        self.logs, self.steps, self.checkpoints, self.ends = [], [], [], []

    def on_log(self, step, terms):
        self.logs.append((step, terms))

    def on_step(self, step, generator_ema):
        self.steps.append(step)

    def on_checkpoint(self, step, path):
        self.checkpoints.append((step, path.name, path.exists()))

    def on_end(self, result):
        self.ends.append(result.steps)


def test_outputs_callbacks_and_checkpoint(data, tmp_path):
    rec = Recorder()
    cfg = config(loss="bce", steps=5, checkpoint_every=4, sample_every=4, n_samples=9)
    result = train(data, cfg, tmp_path, callbacks=[rec])
    assert result.steps == 5 and result.perceptual_weights == "none"
    assert rec.steps == [1, 2, 3, 4, 5] and rec.ends == [5]
    assert [s for s, _ in rec.logs] == [2, 4, 5]  # every log_every steps, at checkpoints and at the end
    assert rec.checkpoints == [(4, "checkpoint.pt", True), (5, "checkpoint.pt", True)]
    names = list(rec.logs[0][1])
    assert {"d/loss", "g/adv", "g/loss"} <= set(names) and all(n[:2] in ("d/", "g/") for n in names)
    assert result.history["g/loss"] == [(s, t["g/loss"]) for s, t in rec.logs]
    for name in ("config.json", "checkpoint.pt", "samples.png", "samples/step_000004.png"):
        assert (tmp_path / name).is_file(), name
    saved = json.loads((tmp_path / "config.json").read_text())
    assert (
        saved["train"]["loss"] == "bce" and saved["n_critic"] == 1 and saved["perceptual_weights"] == "none"
    )
    G = load_generator(tmp_path / "checkpoint.pt")
    assert not G.training and states_equal(G, result.generator_ema)


def test_same_seed_same_run_and_shared_start_across_losses(data, tmp_path):
    a = train(
        data, config(loss="wgangp", steps=3, augment=("translation", "cutout", "color")), tmp_path / "a"
    )
    b = train(
        data, config(loss="wgangp", steps=3, augment=("translation", "cutout", "color")), tmp_path / "b"
    )
    assert states_equal(a.generator_ema, b.generator_ema) and a.history == b.history
    c = train(data, config(loss="wgangp", steps=3, seed=1), tmp_path / "c")
    assert not states_equal(a.generator_ema, c.generator_ema)
    # With zero learning rates the weights stay at their initialisation: the same for every loss.
    frozen = dict(steps=1, lr_g=0.0, lr_d=0.0)
    w = train(data, config(loss="wgangp", **frozen), tmp_path / "w").generator_ema
    h = train(data, config(loss="hinge", **frozen), tmp_path / "h").generator_ema
    assert all(torch.equal(p, q) for p, q in zip(w.parameters(), h.parameters(), strict=True))


def test_same_batches_and_noise_for_every_loss(data, tmp_path, monkeypatch):
    """The critic sees the same real batches and the same fakes' z whatever the loss (same n_critic)."""
    seen = {}

    def spy(name):
        real_loss = get_loss(name)

        class Spy:
            n_critic = 2

            def discriminator_loss(self, D, real, fake):
                seen.setdefault(name, []).append(real.clone())
                return real_loss.discriminator_loss(D, real, fake)

            def generator_loss(self, D, real, fake):
                return real_loss.generator_loss(D, real, fake)

            def params(self):
                return {}

        return Spy()

    monkeypatch.setattr(train_module, "get_loss", lambda name, **kw: spy(name))
    for name in ("bce", "lsgan"):
        train(data, config(loss=name, steps=3, lr_g=0.0, lr_d=0.0), tmp_path / name)
    assert len(seen["bce"]) == 6
    assert all(torch.equal(x, y) for x, y in zip(seen["bce"], seen["lsgan"], strict=True))
    assert not torch.equal(seen["bce"][0], seen["bce"][1])


def test_resume_is_bit_identical(data, tmp_path):
    kw = dict(
        loss="wgangp",
        lam=2.0,
        perceptual="tiny-train",
        perceptual_layers=("relu1_1", "relu2_1"),
        augment=("translation", "color"),
        checkpoint_every=2,
    )
    full = train(data, config(steps=4, **kw), tmp_path / "full")
    train(data, config(steps=2, **kw), tmp_path / "part")
    resumed = train(data, config(steps=4, **kw), tmp_path / "part", resume=True)
    assert resumed.steps == 4 and resumed.history == full.history
    s_full = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)
    s_res = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=True)
    for key in ("G", "D", "G_ema"):
        assert s_full[key].keys() == s_res[key].keys()
        assert all(torch.equal(s_full[key][k], s_res[key][k]) for k in s_full[key]), key
    assert torch.equal(s_full["rng"]["losses"], s_res["rng"]["losses"])
    with pytest.raises(ConfigError, match="lam 2.0 -> 3.0"):
        train(data, config(steps=4, **{**kw, "lam": 3.0}), tmp_path / "part", resume=True)


def test_resume_allows_run_only_changes_and_calls_on_start(data, tmp_path):
    class Starts(Callback):
        def __init__(self):
            self.starts = []

        def on_start(self, step):
            self.starts.append(step)

    full = train(data, config(loss="bce", steps=4, checkpoint_every=2), tmp_path / "full")
    rec = Starts()
    train(data, config(loss="bce", steps=2, checkpoint_every=2), tmp_path / "part", callbacks=[rec])
    changed = config(loss="bce", steps=4, checkpoint_every=3, log_every=1, sample_every=0, n_samples=4)
    resumed = train(data, changed, tmp_path / "part", callbacks=[rec], resume=True)
    assert rec.starts == [0, 2]
    assert states_equal(full.generator_ema, resumed.generator_ema)  # logging cadence changes no number


class FakeCuda:
    """torch.cuda's RNG functions on a machine with two (pretend) GPUs: one state per device index."""

    def __init__(self):
        self.states = {0: torch.tensor([0], dtype=torch.uint8), 1: torch.tensor([1], dtype=torch.uint8)}

    def get_rng_state(self, device="cuda"):
        return self.states[torch.device(device).index].clone()

    def set_rng_state(self, state, device="cuda"):
        self.states[torch.device(device).index] = state.clone()


def _rng_run(device):
    """What `rng_state` reads of a run (the losses' stream stays on the CPU: no real GPU here)."""
    return SimpleNamespace(
        device=device, noise_rng=torch.Generator().manual_seed(3), loss_rng=torch.Generator().manual_seed(4)
    )


def test_cuda_rng_of_the_training_device_only(monkeypatch):
    fake = FakeCuda()
    monkeypatch.setattr(torch.cuda, "get_rng_state", fake.get_rng_state)
    monkeypatch.setattr(torch.cuda, "set_rng_state", fake.set_rng_state)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: pytest.fail("all devices saved"))
    saved = train_module.rng_state(_rng_run(torch.device("cuda", 1)))  # trained on cuda:1
    assert torch.equal(saved["cuda"], torch.tensor([1], dtype=torch.uint8))
    train_module.set_rng_state(saved, _rng_run(torch.device("cuda", 0)))  # resumed on cuda:0 alone
    assert fake.states[0].item() == 1  # the training device's stream, now on the resuming device
    assert train_module.rng_state(_rng_run(torch.device("cpu")))["cuda"] is None


def test_checkpoint_without_losses_stream_resumes_it_from_the_global_state():
    """Checkpoints written before `Run.loss_rng` kept the losses' draws in torch's global RNG."""
    legacy = train_module.rng_state(_rng_run(torch.device("cpu")))
    del legacy["losses"]
    global_stream = torch.Generator().manual_seed(11)
    legacy["torch"] = global_stream.get_state()
    run = _rng_run(torch.device("cpu"))
    train_module.set_rng_state(legacy, run)
    assert torch.equal(torch.rand(5, generator=run.loss_rng), torch.rand(5, generator=global_stream))


class ToyGenerator(nn.Module):
    def __init__(self, resolution, z_dim):
        super().__init__()
        self.resolution, self.z_dim = resolution, z_dim
        self.fc = nn.Linear(z_dim, resolution * resolution)

    def forward(self, z):
        return torch.tanh(self.fc(z)).view(-1, 1, self.resolution, self.resolution)


class ToyCritic(nn.Module):
    def __init__(self, resolution, scale):
        super().__init__()
        self.fc = nn.Linear(resolution * resolution, 1)
        self.scale = scale

    def forward(self, x):
        return self.scale * self.fc(x.flatten(1)).flatten()


@register_model("toy-mlp")
def toy_mlp(resolution, z_dim, g_width, d_width, critic_norm, rng=None, scale=1.0):
    return ToyGenerator(resolution, z_dim), ToyCritic(resolution, scale)


def test_a_second_architecture_trains_by_name(data, tmp_path):
    cfg = config(loss="bce", steps=3, model=ModelConfig("toy-mlp", {"scale": 0.5}))
    result = train(data, cfg, tmp_path)
    assert isinstance(result.generator_ema, ToyGenerator) and result.steps == 3
    loaded = load_generator(tmp_path / "checkpoint.pt")
    assert isinstance(loaded, ToyGenerator) and states_equal(loaded, result.generator_ema)
    with pytest.raises(ConfigError, match="unknown architecture 'nope'"):
        train(data, config(model=ModelConfig("nope")), tmp_path / "x")


def test_nan_raises_diverged_error_naming_step_and_term(data, tmp_path, monkeypatch):
    real_loss = get_loss("bce")
    calls = []

    class Poisoned:
        n_critic = 1

        def discriminator_loss(self, D, real, fake):
            return real_loss.discriminator_loss(D, real, fake)

        def generator_loss(self, D, real, fake):
            out = real_loss.generator_loss(D, real, fake)
            calls.append(1)
            if len(calls) == 3:  # the third generator step
                out.loss = out.loss * float("nan")
            return out

        def params(self):
            return {}

    monkeypatch.setattr(train_module, "get_loss", lambda name, **kw: Poisoned())
    with pytest.raises(DivergedError) as info:
        train(data, config(steps=10, log_every=5), tmp_path)
    assert info.value.step == 3 and info.value.term == "g/adv"
    assert "step 3" in str(info.value) and "nan" in str(info.value)
    assert not (tmp_path / "checkpoint.pt").exists()


def test_n_critic_from_loss_or_config(data, tmp_path, monkeypatch):
    calls = []
    wgangp = get_loss("wgangp")
    original = type(wgangp).discriminator_loss

    def counting(self, D, real, fake):
        calls.append(1)
        return original(self, D, real, fake)

    monkeypatch.setattr(type(wgangp), "discriminator_loss", counting)
    train(data, config(loss="wgangp", steps=2), tmp_path / "a")
    assert len(calls) == 2 * wgangp.n_critic == 10
    train(data, config(loss="wgangp", steps=2, n_critic=1), tmp_path / "b")
    assert len(calls) == 12


def test_lambda_zero_never_builds_a_perceptual_network(data, tmp_path):
    assert (
        train(data, config(steps=1, lam=0.0, perceptual="raising"), tmp_path / "a").perceptual_weights
        == "none"
    )
    assert (
        train(data, config(steps=1, lam=5.0, perceptual="none"), tmp_path / "b").perceptual_weights == "none"
    )
    with pytest.raises(AssertionError, match="must not be built"):  # the same path builds it when λ > 0
        train(data, config(steps=1, lam=5.0, perceptual="raising"), tmp_path / "c")


def test_perceptual_term_is_logged_and_weighted(data, tmp_path):
    result = train(
        data, config(steps=2, lam=3.0, perceptual="tiny-train", perceptual_layers=("relu2_1",)), tmp_path
    )
    (step, perc), (_, adv), (_, total) = (result.history[k][-1] for k in ("g/perc", "g/adv", "g/loss"))
    assert perc > 0 and total == pytest.approx(adv + 3.0 * perc, rel=1e-5)
    assert result.perceptual_weights == "pretrained"


def test_callback_exception_propagates(data, tmp_path):
    class Stop(Exception):
        pass

    class Pruner(Callback):
        def on_step(self, step, generator_ema):
            if step == 2:
                raise Stop

    with pytest.raises(Stop):
        train(data, config(steps=5), tmp_path, callbacks=[Pruner()])


@pytest.mark.parametrize("loss", available_losses())
def test_every_registered_loss_trains(loss, data, tmp_path):
    cfg = config(loss=loss, steps=5, log_every=5)
    init = train(data, dataclasses.replace(cfg, steps=1, lr_g=0.0, lr_d=0.0), tmp_path / "init").generator_ema
    result = train(data, cfg, tmp_path / "run")
    assert result.steps == 5
    assert all(torch.isfinite(torch.tensor(v)).all() for h in result.history.values() for _, v in h)
    assert not torch.equal(result.generator_ema.net[0].weight, init.net[0].weight)


def test_bad_settings_are_config_errors(data, tmp_path):
    with pytest.raises(ConfigError, match="batch size 64"):
        train(data, config(batch_size=64), tmp_path)
    with pytest.raises(ConfigError, match="unknown augmentation 'flip'"):
        train(data, config(augment=("flip",)), tmp_path)
    with pytest.raises(ConfigError, match="log_every"):
        train(data, config(log_every=0), tmp_path)


# ----- the CLI ---------------------------------------------------------------------------------------

CLI_TINY = [
    "--data",
    "phantom:24",
    "--resolution",
    "32",
    "--batch-size",
    "8",
    "--g-width",
    "4",
    "--d-width",
    "4",
]


def test_cli_train_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    argv = [
        "train",
        "--loss",
        "wgangp",
        "--lambda",
        "0",
        "--out",
        str(out),
        "--loss-param",
        "gp_weight=5",
        *CLI_TINY,
    ]
    assert main([*argv, "--steps", "2", "--n-critic", "2"]) == 0
    printed = capsys.readouterr().out
    assert "checkpoint" in printed
    saved = json.loads((out / "config.json").read_text())
    assert f"trained 2 steps of wgangp (λ=0, seed 0) in {saved['precision']} on 24 images" in printed
    assert f"next: lossbench evaluate --checkpoint {out / 'checkpoint.pt'} --data " in printed
    for name in ("config.json", "checkpoint.pt", "samples.png", "loss_curves.png"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "config.json").read_text())
    assert saved["train"]["loss_params"] == {"gp_weight": 5} and saved["n_critic"] == 2
    assert saved["train"]["lam"] == 0 and saved["data"]["n_images"] == 24
    assert main([*argv, "--steps", "3", "--n-critic", "2", "--resume"]) == 0
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 3


def test_cli_missing_vgg_weights_is_one_line_exit_2(tmp_path, capsys):
    argv = ["train", "--lambda", "5", "--steps", "1", "--out", str(tmp_path), *CLI_TINY]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err.startswith("error: ")
        and "\n" not in err
        and "vgg16-397923af.pth" in err
        and "--random-weights" in err
    )


@pytest.mark.parametrize(
    "extra,message",
    [(["--loss", "nope"], "unknown loss 'nope'"), (["--loss-param", "gp_weight"], "malformed --loss-param")],
)
def test_cli_bad_input_is_one_line_exit_2(extra, message, tmp_path, capsys):
    argv = ["train", "--lambda", "0", "--steps", "1", "--out", str(tmp_path), *CLI_TINY, *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_cli_train_config_file_and_set(tmp_path, capsys):
    path = tmp_path / "run.toml"
    path.write_text(
        '[data]\nspec = "phantom:24"\nresolution = 32\n'
        '[train]\nloss = "bce"\nlam = 0\nsteps = 5\nbatch_size = 8\ng_width = 4\nd_width = 4\n'
    )
    out = tmp_path / "run"
    argv = ["train", "--config", str(path), "--out", str(out), "--no-progress"]
    assert main([*argv, "--steps", "2", "--set", "train.z_dim=8", "--set", "train.betas=[0.5, 0.99]"]) == 0
    saved = json.loads((out / "config.json").read_text())["train"]
    assert (saved["loss"], saved["steps"], saved["z_dim"], saved["betas"]) == ("bce", 2, 8, [0.5, 0.99])
    capsys.readouterr()
    assert main([*argv, "--set", "train.stepz=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown key 'train.stepz' (did you mean train.steps?)" in err and "\n" not in err
    path.write_text("[train]\nbatch_size = 1.5\n")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "batch_size must be an integer, got 1.5" in err and "\n" not in err


# ----- differentiable augmentation ------------------------------------------------------------------


def test_translation_shifts_by_whole_pixels_with_zero_padding():
    x = torch.rand(4, 1, 32, 32) * 2 - 1
    out = translation(x, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)  # the same draws: x shifts, then y shifts, in [-4, 4]
    sx, sy = torch.randint(-4, 5, (4,), generator=g), torch.randint(-4, 5, (4,), generator=g)
    for i in range(4):
        expected = torch.zeros(32 + 8, 32 + 8)
        expected[4 + sy[i] : 4 + sy[i] + 32, 4 + sx[i] : 4 + sx[i] + 32] = x[i, 0]
        torch.testing.assert_close(out[i, 0], expected[4:36, 4:36], rtol=0, atol=0)


def test_cutout_zeroes_one_clipped_half_size_square():
    out = cutout(torch.ones(16, 1, 32, 32), torch.Generator().manual_seed(0))
    for image in out[:, 0]:
        rows, cols = (image == 0).nonzero().unbind(1)
        assert rows.numel() == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)  # a rectangle
        assert rows.max() - rows.min() + 1 <= 16 and cols.max() - cols.min() + 1 <= 16
        assert rows.numel() >= 8 * 8  # the centre lies inside the image: at least a quarter remains
    assert (out == 0).sum() < out.numel() / 4 + 1


def test_augmentation_is_differentiable_and_seeded():
    x = (torch.rand(4, 1, 32, 32) * 2 - 1).requires_grad_(True)
    policy = ("color", "translation", "cutout")
    a = diff_augment(x, policy, torch.Generator().manual_seed(1))
    b = diff_augment(x, policy, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, x)
    a.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    # colour alone: per image, brightness shift then contrast scaling around the mean
    g = torch.Generator().manual_seed(5)
    y = color(x.detach(), g)
    g = torch.Generator().manual_seed(5)
    shifted = x.detach() + (torch.rand(4, 1, 1, 1, generator=g) - 0.5)
    mean = shifted.mean(dim=(1, 2, 3), keepdim=True)
    torch.testing.assert_close(y, (shifted - mean) * (torch.rand(4, 1, 1, 1, generator=g) + 0.5) + mean)


def test_loss_curves_of_a_short_run_show_their_points(tmp_path):
    """A 5-step run logs each term once: its panels must not be empty (issue #25)."""
    from PIL import Image

    path = train_module.plot_history({"d/loss": [(5, 1.0)], "g/loss": [(5, 2.0)]}, tmp_path / "c.png")
    pixels = np.asarray(Image.open(path).convert("RGB")).astype(int)
    blue = np.abs(pixels - np.array([31, 119, 180])).sum(-1) < 60  # matplotlib's first colour, C0
    assert blue.sum() > 10
