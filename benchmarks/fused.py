"""Fused seeds against separate runs: images/s of K runs trained as one fused group (lossbench.training.fused)
and of the same K runs stepped one after the other in one process, for each K and resolution.

Both arms build the same K runs (`lossbench.training.train.build`, seeds 0..K-1, one loss and λ), run
`--warmup` generator steps, then time `--steps` more; the whole comparison is repeated `--repeats`
times, alternating the arms, and the table gives the median and range of each arm and of their
ratio (fused ÷ separate, over the repeats' pairs). images/s counts images through the generators:
K × batch × (n_critic + 1) per generator step. The goal of issue #15 on a GPU is a ratio ≥ 0.7·K
(K fused cost at most as much as K/0.7 … i.e. about one run's time); on a CPU, whose cores a
single run already keeps busy, a ratio near 1 is what grouping can give.

    python benchmarks/fused.py [--ks 1,2,4,8] [--resolutions 64,128] [--device cpu] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

from lossbench.config import TrainConfig, parse_int_list
from lossbench.data import load_dataset
from lossbench.training.fused import FusedGroup
from lossbench.training.train import Member, build, train_step


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(step_fn, warmup: int, steps: int, device: torch.device) -> float:
    """Wall seconds of `steps` calls of step_fn(step) after `warmup` untimed ones."""
    for step in range(warmup):
        step_fn(step)
    _sync(device)
    start = time.perf_counter()
    for step in range(warmup, warmup + steps):
        step_fn(step)
    _sync(device)
    return time.perf_counter() - start


def separate_seconds(images: torch.Tensor, configs: list[TrainConfig], warmup: int, steps: int) -> float:
    runs = [build(images, c) for c in configs]
    device = runs[0].device

    def step_all(step: int) -> None:
        for run in runs:
            train_step(run, step)

    return timed(step_all, warmup, steps, device)


def fused_seconds(images: torch.Tensor, configs: list[TrainConfig], warmup: int, steps: int) -> float:
    runs = [build(images, c) for c in configs]
    with tempfile.TemporaryDirectory() as tmp:
        members = [Member(run, Path(tmp) / str(i), (), 0, defaultdict(list)) for i, run in enumerate(runs)]
        with FusedGroup(members) as group:
            return timed(group.step, warmup, steps, runs[0].device)


def spread(xs: list[float], fmt: str = ".0f") -> str:
    """Median (min–max)."""
    return f"{statistics.median(xs):{fmt}} ({min(xs):{fmt}}–{max(xs):{fmt}})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ks", default="1,2,4,8")
    parser.add_argument("--resolutions", default="64,128")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--width", type=int, default=16, help="g_width and d_width")
    parser.add_argument("--loss", default="wgangp")
    parser.add_argument("--lam", type=float, default=5.0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    print(
        f"{args.loss}, λ = {args.lam:g} (random-weight VGG16 relu1_2, relu2_2), batch {args.batch_size}, "
        f"widths {args.width}, {args.device}, {args.threads} torch threads; {args.steps} timed steps after "
        f"{args.warmup} warm-up, {args.repeats} repeats; load average before {os.getloadavg()[0]:.1f}"
    )
    print("| R | K | separate images/s (median, range) | fused images/s (median, range) | fused ÷ separate |")
    print("|---|---|---|---|---|")
    for resolution in parse_int_list(args.resolutions, "--resolutions"):
        images = load_dataset("phantom", resolution).images
        for k in parse_int_list(args.ks, "--ks"):
            configs = [
                TrainConfig(
                    loss=args.loss,
                    lam=args.lam,
                    seed=seed,
                    batch_size=args.batch_size,
                    g_width=args.width,
                    d_width=args.width,
                    device=args.device,
                    random_weights=True,
                    perceptual_layers=("relu1_2", "relu2_2"),
                    progress=False,
                )
                for seed in range(k)
            ]
            n_critic = build(images[: args.batch_size], configs[0]).n_critic
            per_run = args.steps * args.batch_size * (n_critic + 1)
            separate, fused = [], []
            for _ in range(args.repeats):
                separate.append(k * per_run / separate_seconds(images, configs, args.warmup, args.steps))
                fused.append(k * per_run / fused_seconds(images, configs, args.warmup, args.steps))
            ratios = [f / s for f, s in zip(fused, separate, strict=True)]

            row = (resolution, k, spread(separate), spread(fused), spread(ratios, ".2f"))
            print("| " + " | ".join(map(str, row)) + " |", flush=True)


if __name__ == "__main__":
    main()
