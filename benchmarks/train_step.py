"""Time per training step of lossbench's trainer against a bare hand-written PyTorch loop.

Both run in this process, interleaved, with the same generator, critic, loss, batch size, n_critic
and (for λ > 0) the same perceptual module, here on a tiny fixed network registered as
"bench-tiny" so the figure measures the trainer and not VGG. The trainer adds what the bare loop
lacks: the epoch sampler, the EMA generator, logged terms with NaN checks, callbacks and the
progress bar. Steady-state time per generator step is measured from an `on_step` callback after
`--warmup` steps (setup, final samples and checkpoint excluded from both); the fastest of
`--repeats` interleaved runs of each is reported. images/s counts the fakes generated per second,
batch × (n_critic + 1) per generator step. `--clock cpu` times process CPU time instead of wall
time, which is steadier on a machine shared with other jobs. The default width is small (8) so that
the trainer's fixed per-step costs weigh as much as they can against the networks. Goal: ratio ≤ 1.05.

`--device cuda`: the bare loop is the well-written CUDA loop of the same model: data and noise on
the device, bf16 autocast and channels_last as the trainer sets them (`TrainConfig.amp`,
`channels_last`), the same prepared perceptual network, fused Adam, cudnn.benchmark, TF32 off. The
device is synchronised before the clock is read, at the end of the warm-up and of the last step.

    python benchmarks/train_step.py                       # R=64, batch 32, wgangp and bce, λ 0 and 5
    python benchmarks/train_step.py --losses wgangp --lambdas 5 --steps 20 --repeats 5
    python benchmarks/train_step.py --device cuda --resolution 128 --batch-size 64 --width 64
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import tempfile
import time
from types import SimpleNamespace

import torch
from torch import nn

from lossbench import precision
from lossbench.config import TrainConfig, check_device
from lossbench.errors import ConfigError
from lossbench.images import to_float
from lossbench.losses import get_loss
from lossbench.models import PerceptualLoss, build_model, register_feature_network
from lossbench.training.train import Callback, channels_last, keeps_channels_last, train

LAYERS = ("relu1_1", "relu2_1")
WIDTHS = (8, 4, 3, 15, 12, 7, 6)  # table columns


def tiny_features(random_weights: bool, weights_dir: str | None) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 16, 3), nn.ReLU()
    )


register_feature_network("bench-tiny", tiny_features)


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
clock = CLOCKS["wall"]


class Stopwatch:
    """Reads the clock after `warmup` steps and after step `steps`, synchronising the device first."""

    def __init__(self, warmup: int, steps: int, device: torch.device) -> None:
        self.warmup, self.steps, self.device = warmup, steps, device
        self.marks: list[float] = []

    def tick(self, step: int) -> None:
        if step in (self.warmup, self.steps):
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.marks.append(clock())

    def per_step(self) -> float:
        start, end = self.marks
        return (end - start) / (self.steps - self.warmup)


class StepClock(Callback):
    def __init__(self, stopwatch: Stopwatch) -> None:
        self.stopwatch = stopwatch

    def on_step(self, step: int, generator_ema: nn.Module) -> None:
        self.stopwatch.tick(step)


def time_trainer(data, config: TrainConfig, warmup: int) -> float:
    stopwatch = Stopwatch(warmup, config.steps, torch.device(config.device))
    with tempfile.TemporaryDirectory() as out:
        train(data, config, out, callbacks=[StepClock(stopwatch)])
    return stopwatch.per_step()


def time_bare(images: torch.Tensor, config: TrainConfig, warmup: int) -> float:
    """The textbook loop: no EMA, no logging, no checks, random batches drawn on the device."""
    device = torch.device(config.device)
    R, B = images.shape[-1], config.batch_size
    images = images.to(device)
    torch.manual_seed(config.seed)
    G, D = build_model(
        config.model.arch,
        resolution=R,
        z_dim=config.z_dim,
        g_width=config.g_width,
        d_width=config.d_width,
        critic_norm=config.critic_norm,
        **config.model.kwargs,
    )
    G, D = G.to(device), D.to(device)
    on_cuda, amp = device.type == "cuda", device.type == "cuda" and config.amp
    if channels_last(config, device):
        G, D = (m.to(memory_format=torch.channels_last) if keeps_channels_last(m) else m for m in (G, D))
    torch.backends.cudnn.benchmark = on_cuda
    autocast = functools.partial(torch.autocast, "cuda", torch.bfloat16) if amp else contextlib.nullcontext
    loss = get_loss(config.loss)
    n_critic = config.n_critic or loss.n_critic
    perceptual = None
    if config.lam > 0:
        perceptual = PerceptualLoss("bench-tiny", LAYERS).to(device)
        perceptual.prepare(torch.bfloat16 if amp else None, channels_last(config, device))
    fused = True if on_cuda else None
    opt_g = torch.optim.Adam(G.parameters(), lr=config.lr_g, betas=config.betas, fused=fused)
    opt_d = torch.optim.Adam(D.parameters(), lr=config.lr_d, betas=config.betas, fused=fused)
    stopwatch = Stopwatch(warmup, config.steps, device)
    with precision.fp32():
        for step in range(1, config.steps + 1):
            for _ in range(n_critic):
                real = to_float(images[torch.randint(len(images), (B,), device=device)])
                with torch.no_grad(), autocast():
                    fake = G(torch.randn(B, config.z_dim, device=device))
                opt_d.zero_grad()
                with autocast():
                    loss_d = loss.discriminator_loss(D, real, fake).loss
                loss_d.backward()
                opt_d.step()
            D.requires_grad_(False)
            with autocast():
                fake = G(torch.randn(B, config.z_dim, device=device))
                loss_g = loss.generator_loss(D, real, fake).loss
                if perceptual is not None:
                    loss_g = loss_g + config.lam * perceptual(fake, real)
            opt_g.zero_grad()
            loss_g.backward()
            opt_g.step()
            D.requires_grad_(True)
            stopwatch.tick(step)
    return stopwatch.per_step()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--width", type=int, default=8, help="G and D width (small: overhead most visible)")
    ap.add_argument("--losses", default="wgangp,bce")
    ap.add_argument("--lambdas", default="0,5")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument(
        "--repeats", type=int, default=3, help="interleaved runs of each; the fastest is reported"
    )
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--clock", choices=CLOCKS, default="wall", help="cpu: process CPU time (busy machines)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (synchronised before each reading)")
    args = ap.parse_args()
    try:
        check_device(args.device)
    except ConfigError as e:
        ap.error(str(e))  # one line, exit status 2
    if not 1 <= args.warmup < args.steps:
        ap.error(f"--warmup must be at least 1 and below --steps ({args.steps}), got {args.warmup}")
    torch.set_num_threads(args.threads)
    global clock
    clock = CLOCKS[args.clock]

    R, B = args.resolution, args.batch_size
    g = torch.Generator().manual_seed(0)
    data = SimpleNamespace(images=torch.randint(0, 256, (512, 1, R, R), dtype=torch.uint8, generator=g))
    print(
        f"R={R} batch={B} width={args.width} threads={args.threads} steps={args.steps} "
        f"(warmup {args.warmup}) repeats={args.repeats} clock={args.clock} device={args.device}"
    )
    header = ("loss", "λ", "n_c", "trainer s/step", "bare s/step", "img/s", "ratio")
    print(" ".join(f"{h:>{w}}" for h, w in zip(header, WIDTHS, strict=True)))
    for loss in args.losses.split(","):
        n_critic = get_loss(loss).n_critic
        for lam in (float(x) for x in args.lambdas.split(",")):
            config = TrainConfig(
                loss=loss,
                lam=lam,
                steps=args.steps,
                batch_size=B,
                g_width=args.width,
                d_width=args.width,
                perceptual="bench-tiny",
                perceptual_layers=LAYERS,
                progress=False,
                device=args.device,
            )
            ours, bare = [], []
            for _ in range(args.repeats):
                ours.append(time_trainer(data, config, args.warmup))
                bare.append(time_bare(data.images, config, args.warmup))
            t_ours, t_bare = min(ours), min(bare)  # the least disturbed run of each (shared machines)
            img_s = B * (n_critic + 1) / t_ours
            row = (
                loss,
                f"{lam:g}",
                n_critic,
                f"{t_ours:.4f}",
                f"{t_bare:.4f}",
                f"{img_s:.1f}",
                f"{t_ours / t_bare:.3f}",
            )
            print(" ".join(f"{c:>{w}}" for c, w in zip(row, WIDTHS, strict=True)))


if __name__ == "__main__":
    main()
