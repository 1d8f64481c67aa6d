"""Training precision on the CPU (bf16 where the processor has it, recorded everywhere, never changed
on resume or within a study) and the perceptual loss's cached real side."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

import lossbench.training.train as train_module
from lossbench import precision
from lossbench.config import StudyConfig, TrainConfig
from lossbench.errors import ConfigError
from lossbench.models.perceptual import PerceptualLoss
from lossbench.study.grid import check_identity, identity
from lossbench.training.train import build, train, train_step

TINY = dict(batch_size=8, z_dim=16, g_width=4, d_width=4, progress=False, log_every=1, sample_every=0)
X86_FLAGS = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512bw {}\nbogomips\t: 4000\n"


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.interpolate(torch.rand(40, 1, 8, 8, generator=g), size=32, mode="bilinear")
    return SimpleNamespace(images=(x * 255).round().to(torch.uint8), source="test", fingerprint="0")


@pytest.fixture
def cpu_bf16(monkeypatch):
    """Set whether this CPU 'has' native bf16."""

    def set_to(value: bool) -> None:
        monkeypatch.setattr(precision, "cpu_has_bf16", lambda: value)

    return set_to


@pytest.mark.parametrize(
    "text, has",
    [
        (X86_FLAGS.format("avx512_bf16 avx512_vnni"), True),
        (X86_FLAGS.format("amx_bf16 amx_tile"), True),
        (X86_FLAGS.format("avx512_vnni"), False),  # AVX512 without bf16: oneDNN would only emulate it
        ("processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n", True),  # Arm
        ("processor\t: 0\nFeatures\t: fp asimd\n", False),
        ("", False),
    ],
)
def test_cpu_bf16_read_from_the_flags_linux_lists(tmp_path, text, has):
    info = tmp_path / "cpuinfo"
    info.write_text(text)
    assert precision.cpu_has_bf16.__wrapped__(str(info)) is has


def test_no_cpuinfo_means_fp32(tmp_path):
    assert precision.cpu_has_bf16.__wrapped__(str(tmp_path / "absent")) is False


@pytest.mark.parametrize(
    "device, amp, cpu, expected",
    [("cpu", True, True, "bf16"), ("cpu", True, False, "fp32"), ("cpu", False, True, "fp32"),
     ("cuda:1", True, False, "bf16"), ("cuda", False, True, "fp32")],
)  # fmt: skip
def test_training_precision(cpu_bf16, device, amp, cpu, expected):
    cpu_bf16(cpu)
    assert precision.training_precision(device, amp) == expected


class DtypeProbe(torch.nn.Module):
    """Wraps the critic: the dtypes of its scores, inside and outside the penalty passes."""

    def __init__(self, D):
        super().__init__()
        self.D, self.seen = D, set()

    def forward(self, *args):
        out = self.D(*args)
        self.seen.add((out.dtype, torch.is_autocast_enabled("cpu")))
        return out


@pytest.mark.parametrize("cpu", [True, False])
def test_a_cpu_run_trains_in_bf16_where_the_cpu_has_it_and_records_it(data, tmp_path, cpu_bf16, cpu):
    cpu_bf16(cpu)
    config = TrainConfig(**TINY, loss="wgangp", lam=0.0, steps=1)
    run = build(data.images, config)
    run.D = DtypeProbe(run.D)
    train_step(run, 0)
    penalty = (torch.float32, False)  # WGAN-GP's penalty pass: fp32, autocast off, in both precisions
    assert run.D.seen == ({(torch.bfloat16, True), penalty} if cpu else {penalty})
    result = train(data, config, tmp_path)
    assert result.precision == ("bf16" if cpu else "fp32")
    assert json.loads((tmp_path / "config.json").read_text())["precision"] == result.precision


def test_bf16_runs_repeat_and_resume_bit_for_bit(data, tmp_path, cpu_bf16):
    cpu_bf16(True)
    config = TrainConfig(**TINY, loss="wgangp", lam=0.0, steps=4, checkpoint_every=2)
    straight = train(data, config, tmp_path / "a")
    again = train(data, config, tmp_path / "b")
    train(data, TrainConfig(**{**TINY, "loss": "wgangp", "lam": 0.0, "steps": 2}), tmp_path / "c")
    resumed = train(data, config, tmp_path / "c", resume=True)
    final = straight.generator_ema.state_dict()
    for other in (again, resumed):
        assert all(torch.equal(final[k], v) for k, v in other.generator_ema.state_dict().items())


def test_a_run_never_resumes_in_another_precision(data, tmp_path, cpu_bf16):
    cpu_bf16(True)
    train(data, TrainConfig(**TINY, loss="bce", lam=0.0, steps=2), tmp_path)
    cpu_bf16(False)  # the same checkpoint on a machine without bf16
    with pytest.raises(ConfigError, match="trained in bf16 and would go on in fp32"):
        train(data, TrainConfig(**TINY, loss="bce", lam=0.0, steps=4), tmp_path, resume=True)


def test_a_checkpoint_from_before_the_precision_was_recorded_is_read_as_fp32_on_cpu(data, tmp_path, cpu_bf16):
    cpu_bf16(True)
    train(data, TrainConfig(**TINY, loss="bce", lam=0.0, steps=2, amp=False), tmp_path)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    del state["precision"]
    torch.save(state, tmp_path / "checkpoint.pt")
    assert (
        train(data, TrainConfig(**TINY, loss="bce", lam=0.0, steps=3, amp=False), tmp_path, resume=True).steps
        == 3
    )
    with pytest.raises(ConfigError, match="configuration changed"):  # amp itself is a result setting
        train(data, TrainConfig(**TINY, loss="bce", lam=0.0, steps=4), tmp_path, resume=True)


def test_a_study_refuses_to_go_on_in_another_precision(cpu_bf16):
    config = StudyConfig(devices=("cpu",))
    cpu_bf16(False)
    made_without_bf16 = identity(config, "f")
    assert made_without_bf16["precision"] == {"cpu": "fp32"}
    cpu_bf16(True)
    with pytest.raises(ConfigError, match=r"precision.cpu=fp32 \(now bf16\)"):
        check_identity(made_without_bf16, identity(config, "f"), "s")
    legacy = {k: v for k, v in made_without_bf16.items() if k != "precision"}  # before it was recorded
    with pytest.raises(ConfigError, match=r"precision.cpu=fp32 \(now bf16\)"):
        check_identity(legacy, identity(config, "f"), "s")
    cpu_bf16(False)
    check_identity(legacy, identity(config, "f"), "s")  # same precision: resumes


# ----------------------------------------------------------------- the perceptual loss's real side


@pytest.mark.parametrize("pairing", ["mean", "paired"])
def test_cached_real_features_give_the_loss_computed_per_batch(pairing):
    images = torch.randint(0, 256, (10, 1, 32, 32), dtype=torch.uint8)
    loss = PerceptualLoss("tiny-train", ("relu1_1", "relu2_1"), pairing=pairing, random_weights=True)
    fake = torch.rand(4, 1, 32, 32) * 2 - 1
    index = torch.tensor([7, 2, 2, 9])
    real = images[index].float() / 127.5 - 1
    computed = loss(fake, real)
    assert loss.cache_reals(images, batch_size=4, budget=2**30)
    cached = loss(fake, real, index)
    assert torch.allclose(cached, computed, rtol=1e-6, atol=1e-7)
    shuffled = loss(fake, real, index.flip(0))  # the wrong images: the test can tell
    assert pairing == "mean" or not torch.allclose(shuffled, computed, rtol=1e-4)
    other = loss(fake, real, torch.tensor([0, 1, 3, 4]))
    assert not torch.allclose(other, computed, rtol=1e-4)


def test_no_cache_above_the_budget():
    images = torch.randint(0, 256, (10, 1, 32, 32), dtype=torch.uint8)
    loss = PerceptualLoss("tiny-train", ("relu1_1",), random_weights=True)
    one = loss.extract(images[:1].float())[0]
    budget = 10 * one.numel() * one.element_size()
    assert not loss.cache_reals(images, 4, budget - 1) and loss.cache is None
    assert loss.cache_reals(images, 4, budget) and loss.cache[0].shape == (10, *one.shape[1:])


def test_the_trainer_uses_the_cache_and_its_loss_matches_the_uncached_one(data, monkeypatch):
    config = TrainConfig(**TINY, loss="bce", lam=5.0, steps=2, amp=False, perceptual="tiny-train",
                         perceptual_layers=("relu1_1", "relu2_1"), random_weights=True)  # fmt: skip
    cached = build(data.images, config)
    assert cached.perceptual.cache is not None
    monkeypatch.setattr(train_module, "REAL_FEATURE_BUDGET", 0)
    uncached = build(data.images, config)
    assert uncached.perceptual.cache is None
    for step in range(2):
        a, b = train_step(cached, step), train_step(uncached, step)
        assert torch.allclose(a["g/perc"], b["g/perc"], rtol=1e-5), step
    cached.perceptual.cache = [torch.zeros_like(layer) for layer in cached.perceptual.cache]
    assert not torch.allclose(train_step(cached, 2)["g/perc"], train_step(uncached, 2)["g/perc"], rtol=1e-2)
