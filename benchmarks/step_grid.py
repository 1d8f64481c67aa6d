"""Cost as work grows: seconds per generator step of the trainer at each resolution × batch size.

One loss and λ (default wgangp, λ = 5, the perceptual loss on a random-weight VGG16 up to relu2_2:
the compute of the pretrained one), on the built-in phantom, with the widths of studies/busi-cpu.toml.
Each cell of the grid builds a fresh run (`lossbench.training.train.build`), runs `--warmup` generator steps,
then times `--steps` more; the best of `--repeats` such timings is printed with the spread. images/s
counts images through the generator: batch × (n_critic + 1) per generator step.

    python benchmarks/step_grid.py [--resolutions 32,64,128] [--batches 16,32,64] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from lossbench.config import TrainConfig, parse_int_list
from lossbench.data import load_dataset
from lossbench.losses import get_loss
from lossbench.training.train import build, train_step


def seconds_per_step(images: torch.Tensor, config: TrainConfig, warmup: int, steps: int) -> float:
    """Wall seconds per generator step of a fresh run, after `warmup` steps."""
    run = build(images, config)
    for step in range(warmup):
        train_step(run, step)
    start = time.perf_counter()
    for step in range(warmup, warmup + steps):
        train_step(run, step)
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolutions", default="32,64,128")
    parser.add_argument("--batches", default="16,32,64")
    parser.add_argument("--loss", default="wgangp")
    parser.add_argument("--lam", type=float, default=5.0)
    parser.add_argument("--width", type=int, default=16, help="g_width and d_width")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    print(
        f"{args.loss}, λ = {args.lam:g} (random-weight VGG16 relu1_2, relu2_2), widths {args.width}, "
        f"{args.threads} torch threads, CPU; best of {args.repeats} × {args.steps} steps after "
        f"{args.warmup} warm-up; load average before {os.getloadavg()[0]:.1f}"
    )
    print("| R | batch | s / generator step (best, range) | images/s |")
    print("|---|---|---|---|")
    for resolution in parse_int_list(args.resolutions, "--resolutions"):
        images = load_dataset("phantom", resolution).images
        for batch in parse_int_list(args.batches, "--batches"):
            config = TrainConfig(
                loss=args.loss,
                lam=args.lam,
                batch_size=batch,
                g_width=args.width,
                d_width=args.width,
                z_dim=64,
                perceptual_layers=("relu1_2", "relu2_2"),
                random_weights=True,
            )
            times = [seconds_per_step(images, config, args.warmup, args.steps) for _ in range(args.repeats)]
            n_critic = config.n_critic or get_loss(config.loss).n_critic
            best = min(times)
            print(
                f"| {resolution} | {batch} | {best:.3f} ({min(times):.3f}-{max(times):.3f}) "
                f"| {batch * (n_critic + 1) / best:.0f} |"
            )
    print(f"load average after {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
