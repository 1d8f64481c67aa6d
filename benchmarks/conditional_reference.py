"""An independent reference for the conditional BUSI collapse: a plain class-conditional GAN loop in
the style of PyTorch-GAN's `cgan` / the PyTorch DCGAN tutorial (BCE on logits, one critic step per
generator step, Adam 2e-4, betas (0.5, 0.999), uniform minibatches), written without lossbench's
trainer, on lossbench's networks. It separates a wiring bug in the trainer from a recipe problem.

For each (generator conditioning, critic norm) it prints the within-class fake–fake SSIM of the
generator (lower: more diverse; the reals' own value beside it) and the critic's BCE loss
(2 ln 2 = 1.386 is a critic at chance). Usage:

    python benchmarks/conditional_reference.py [--data busi] [--resolution 32] [--steps 800]
"""

from __future__ import annotations

import argparse
import itertools
import time

import torch
import torch.nn.functional as F
from pytorch_msssim import ssim

from lossbench.config import DataConfig
from lossbench.data.split import load_split
from lossbench.models.dgan import dgan


def within_class_ssim(x: torch.Tensor) -> float:
    """Mean SSIM of consecutive pairs of a batch in [-1, 1] (window 3)."""
    i = torch.arange(len(x))
    return ssim((x + 1) / 2, (x[(i + 1) % len(x)] + 1) / 2, data_range=1, win_size=3).item()


def run(images, labels, resolution, steps, conditioning, norm, seed=0, batch=16, z_dim=64):
    torch.manual_seed(seed)
    G, D = dgan(resolution, z_dim, 16, 16, norm, n_classes=3, conditioning=conditioning)
    opt_g = torch.optim.Adam(G.parameters(), 2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), 2e-4, betas=(0.5, 0.999))
    d_losses = []
    for _ in range(steps):
        idx = torch.randint(len(images), (batch,))
        real, y = images[idx], labels[idx]
        fake = G(torch.randn(batch, z_dim), y)
        loss_d = F.softplus(-D(real, y)).mean() + F.softplus(D(fake.detach(), y)).mean()
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()
        loss_g = F.softplus(-D(fake, y)).mean()
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()
        d_losses.append(loss_d.item())
    with torch.no_grad():
        G.eval()
        fake = [within_class_ssim(G(torch.randn(64, z_dim), torch.full((64,), k))) for k in range(3)]
    real = [within_class_ssim(images[labels == k][:64]) for k in range(3)]
    return fake, real, sum(d_losses[-100:]) / 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="busi")
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--seeds", type=int, default=1)
    args = parser.parse_args()
    train = load_split(DataConfig(args.data, args.resolution, holdout=0.2, split_seed=0)).train
    images, labels = train.images.float() / 127.5 - 1, train.labels
    print("conditioning  critic norm    seed  fake-fake SSIM per class   real-real          critic BCE  s")
    for conditioning, norm in itertools.product(("concat", "batchnorm"), ("none", "instancenorm")):
        for seed in range(args.seeds):
            t = time.perf_counter()
            fake, real, loss_d = run(images, labels, args.resolution, args.steps, conditioning, norm, seed)
            fake_s, real_s = (" ".join(f"{v:.3f}" for v in vs) for vs in (fake, real))
            seconds = time.perf_counter() - t
            row = f"{conditioning:<13} {norm:<14} {seed:<4}  {fake_s:<25}  {real_s:<17}  {loss_d:.3f}"
            print(f"{row}       {seconds:.0f}", flush=True)


if __name__ == "__main__":
    main()
