"""The CUDA path, checked on CPU: host-device transfers per step (counted on the meta device), no
sync under CUDA's sync debug mode (GPU only), TF32 off where fp32 is promised, the device in the
feature cache key, the foreach EMA, the bf16/channels_last perceptual network, channels_last choice."""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import lossbench.training.train as train_module
from lossbench.config import EvalConfig, ModelConfig, TrainConfig
from lossbench.losses.penalties import input_gradients
from lossbench.metrics import evaluate
from lossbench.metrics.evaluation import EvalState
from lossbench.metrics.extractors import TINY
from lossbench.models import PerceptualLoss, register_feature_network, register_model
from lossbench.models.dgan import Critic, Generator
from lossbench.training.randomness import Draw, Draws

ROOT = Path(__file__).resolve().parents[1]
TINY_TRAIN = dict(batch_size=8, z_dim=16, g_width=4, d_width=4, perceptual="none", progress=False)
AUGMENT = ("color", "translation", "cutout")


def _load_benchmark(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _images(n: int = 40) -> torch.Tensor:
    return torch.randint(
        0, 256, (n, 1, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )


def tiny_features(random_weights: bool, weights_dir: str | None) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 4, 3), nn.ReLU()
    )


register_feature_network("tiny-cuda-path", tiny_features)


# ----- randomness: the step's CPU draws in one buffer ----------------------------------------------


def test_draws_are_torchs_own_draws_in_order():
    plan = [Draw("randn", (3, 5)), Draw("rand", (3, 1, 1, 1)), Draw("randint", (3, 1), -4, 5)]
    draws = Draws(plan, torch.Generator().manual_seed(9), torch.device("cpu"))
    g = torch.Generator().manual_seed(9)
    expected = [
        torch.randn(3, 5, generator=g),
        torch.rand(3, 1, 1, 1, generator=g),
        torch.randint(-4, 5, (3, 1), generator=g),
    ]
    for draw, value in zip(plan, expected, strict=True):
        assert torch.equal(draws.take(draw), value.float())
    with pytest.raises(RuntimeError, match="out of plan order"):
        draws.take(plan[0])


# ----- item 4: transfer points per generator step ----------------------------------------------------


@pytest.mark.parametrize("loss", ["wgangp", "bce"])
@pytest.mark.parametrize("augment", [(), AUGMENT])
def test_no_blocking_transfer_per_step(loss, augment):
    """Counted on the meta device (benchmarks/transfers.py): before this change wgangp took 11
    blocking copies per generator step, 83 with every augmentation."""
    transfers = _load_benchmark("transfers")
    config = TrainConfig(**TINY_TRAIN, loss=loss, device="meta", augment=augment)
    counts = transfers.count_per_step(config, n_images=400, steps=3)  # no epoch boundary in 4 steps
    assert counts == {"blocking": 0, "non_blocking": 1}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_train_step_never_synchronises_on_cuda():
    run = train_module.build(
        _images(), TrainConfig(**TINY_TRAIN, loss="wgangp", device="cuda", augment=AUGMENT)
    )
    train_module.train_step(run, 0)  # warm-up: lazy initialisation, cuDNN benchmarking
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for step in range(1, 4):
            train_module.train_step(run, step)
    finally:
        torch.cuda.set_sync_debug_mode("default")


# ----- item 3: TF32 off where fp32 is promised; the device in the cache key ---------------------------


class FlagRecorder(nn.Module):
    """A critic that records the TF32 flags and its input dtype on every forward."""

    def __init__(self) -> None:
        super().__init__()
        self.critic = Critic(32, 4)
        self.seen: list[tuple[bool, bool, torch.dtype]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append((torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32, x.dtype))
        return self.critic(x)


def test_penalty_runs_in_fp32_without_tf32_and_restores_the_flags():
    D = FlagRecorder()
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True  # as a user might set it
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            grad = input_gradients(D, torch.rand(2, 1, 32, 32).to(torch.bfloat16))
        assert grad.dtype == torch.float32 and D.seen == [(False, False, torch.float32)]
        assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == (before[0], True)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


@register_model("tf32-recorder")
def dgan_recording_flags(resolution, z_dim, g_width, d_width, critic_norm, rng=None):
    return Generator(resolution, z_dim, g_width, rng=rng), FlagRecorder()


def test_train_step_runs_without_tf32():
    config = TrainConfig(**TINY_TRAIN, loss="ns-r1", n_critic=1, model=ModelConfig("tf32-recorder"))
    run = train_module.build(_images(), config)
    train_module.train_step(run, 0)
    assert len(run.D.seen) == 4  # real, fake, the R1 pass, the generator step
    assert all(not conv and not matmul for conv, matmul, _ in run.D.seen)
    assert torch.backends.cudnn.allow_tf32  # PyTorch's default, restored after the step


def test_device_type_and_dtype_in_settings_and_cache_key(tmp_path):
    from lossbench.data import ImageDataset, fingerprint

    images, labels = _images(16), torch.zeros(16, dtype=torch.int64)
    real = ImageDataset(images, labels, ("all",), fingerprint(images, labels, ("all",)), "test")
    config = EvalConfig(metrics=("fid",), feature_extractor=TINY, n_fake=8, cache_dir=str(tmp_path))
    result = evaluate(images[:8], real, config)
    assert result.settings["device_type"] == "cpu" and result.settings["dtype"] == "fp32"
    (entry,) = tmp_path.glob("*.pt")
    key = json.loads(torch.load(entry, weights_only=True)["key"])
    assert key["device_type"] == "cpu" and key["dtype"] == "fp32"
    on_gpu = EvalState(real, config, "cuda:1").data_key  # a GPU's real features never hit a CPU entry
    assert on_gpu["device_type"] == "cuda" and on_gpu != EvalState(real, config, "cpu").data_key


# ----- item 5: EMA as foreach, bit-identical to the loop ---------------------------------------------


def test_foreach_ema_is_bit_identical_to_the_loop():
    G = Generator(32, 16, 4, rng=torch.Generator().manual_seed(1))
    G(torch.randn(4, 16))  # BatchNorm statistics and num_batches_tracked move
    ema_a = Generator(32, 16, 4, rng=torch.Generator().manual_seed(2))
    ema_b = copy.deepcopy(ema_a)
    for decay in (0.999, 0.5, 0.1):
        train_module.update_ema(ema_a, G, decay)
        with torch.no_grad():  # the reference: the per-parameter loop this replaced
            for p_ema, p in zip(ema_b.parameters(), G.parameters(), strict=True):
                p_ema.lerp_(p, 1.0 - decay)
            for b_ema, b in zip(ema_b.buffers(), G.buffers(), strict=True):
                b_ema.copy_(b)
        sa, sb = ema_a.state_dict(), ema_b.state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa), decay
    assert not torch.equal(ema_a.net[0].weight, G.net[0].weight)


def test_fused_adam_on_cpu_and_cuda_not_meta():
    G = Generator(32, 16, 4)
    assert train_module._adam(G, 1e-4, (0.0, 0.9), torch.device("cuda")).defaults["fused"] is True
    assert train_module._adam(G, 1e-4, (0.0, 0.9), torch.device("cpu")).defaults["fused"] is True
    assert not train_module._adam(G, 1e-4, (0.0, 0.9), torch.device("meta")).defaults["fused"]


# ----- item 6: perceptual network prepared once; channels_last choice --------------------------------


def test_prepared_perceptual_network_equals_autocast_recasting():
    """bf16 weights made once give the numbers autocast gives by re-casting fp32 weights per pass."""
    fake = (torch.rand(4, 1, 32, 32) * 2 - 1).requires_grad_(True)
    real = torch.rand(4, 1, 32, 32) * 2 - 1
    plain = PerceptualLoss("tiny-cuda-path", ("relu1_1", "relu2_1"), random_weights=True)
    prepared = copy.deepcopy(plain).prepare(torch.bfloat16, channels_last=True)
    conv = prepared.features[0].weight
    assert conv.dtype == torch.bfloat16 and conv.is_contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        a = plain(fake, real)
        (grad_a,) = torch.autograd.grad(a, fake)
        b = prepared(fake, real)
        (grad_b,) = torch.autograd.grad(b, fake)
    torch.testing.assert_close(b, a, rtol=1e-2, atol=0)  # channels_last kernels may round differently
    torch.testing.assert_close(grad_b, grad_a, rtol=2e-2, atol=1e-4)
    same_layout = copy.deepcopy(plain).prepare(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(same_layout(fake, real), a)  # bf16 once == bf16 per pass, bit for bit


def test_channels_last_only_on_cuda_and_never_for_a_groupnorm_critic():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert train_module.channels_last(TrainConfig(), cuda) and not train_module.channels_last(
        TrainConfig(), cpu
    )
    assert not train_module.channels_last(TrainConfig(channels_last=False), cuda)
    assert train_module.keeps_channels_last(Critic(32, 4, norm="none"))
    assert train_module.keeps_channels_last(Generator(32)) and train_module.keeps_channels_last(
        Generator(32, n_classes=3)
    )
    for norm in ("layernorm", "instancenorm"):  # instancenorm: the default
        assert not train_module.keeps_channels_last(Critic(32, 4, norm=norm))


def test_gpu_check_runs_on_cpu_quick():
    gpu_check = _load_benchmark("gpu_check")
    table = gpu_check.run_checks(SimpleNamespace(device="cpu", quick=True))
    text = gpu_check.format_table(table)
    assert "NaN" not in text and "FAIL" not in text, text
    checks = [row[0] for row in table]
    for name in (
        "train wgangp",
        "train bce",
        "train ns-r1",
        "resume",
        "trainer/bare",
        "fused K=1",
        "inception",
    ):
        assert any(c.startswith(name) for c in checks), (name, checks)
