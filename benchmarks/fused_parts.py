"""The two measurements behind lossbench.training.fused's CPU choices, forward and backward, best of repeats:

- the perceptual network (random-weight VGG16 to relu2_2) on K batches of B images against one
  batch of K·B (`fused.batches_perceptual`: one batch on CUDA only);
- the grouped G and D of K members (`fused.Grouped`) in NCHW and in channels_last, against the K
  separate pairs (`fused.fused_channels_last`: channels_last on a CPU).

    python benchmarks/fused_parts.py [--resolution-vgg 64] [--resolution-gan 128] [--k 4] [--batch 16]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from lossbench.models.dgan import dgan
from lossbench.models.perceptual import PerceptualLoss
from lossbench.training.fused import Grouped


def best_seconds(fn: Callable[[], None], repeats: int) -> float:
    """Best wall time of `repeats` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def perceptual_rows(resolution: int, k: int, batch: int, repeats: int) -> list[tuple[str, float]]:
    perceptual = PerceptualLoss("vgg16", ("relu1_2", "relu2_2"), random_weights=True)
    x = (torch.rand(k * batch, 1, resolution, resolution) * 2 - 1).requires_grad_(True)

    def passes(batches: list[torch.Tensor]) -> Callable[[], None]:
        def run() -> None:
            for b in batches:
                sum(f.sum() for f in perceptual.extract(b)).backward()

        return run

    return [
        (f"VGG16 to relu2_2, {k} batches of {batch}", best_seconds(passes(list(x.split(batch))), repeats)),
        (f"VGG16 to relu2_2, 1 batch of {k * batch}", best_seconds(passes([x]), repeats)),
    ]


def gan_rows(resolution: int, k: int, batch: int, width: int, repeats: int) -> list[tuple[str, float]]:
    pairs = [
        dgan(resolution, 128, width, width, "none", rng=torch.Generator().manual_seed(i)) for i in range(k)
    ]
    G, D = Grouped([g for g, _ in pairs]), Grouped([d for _, d in pairs])
    z = torch.randn(batch, 128)
    grouped_z = torch.randn(batch, k * 128, 1, 1)

    def separate() -> None:
        for g, d in pairs:
            d(g(z)).sum().backward()

    def grouped() -> None:
        D.net(G.net(grouped_z)).sum().backward()

    rows = [(f"G+D, {k} separate pairs", best_seconds(separate, repeats))]
    rows.append((f"G+D, grouped K={k}, NCHW", best_seconds(grouped, repeats)))
    G.to(memory_format=torch.channels_last)
    D.to(memory_format=torch.channels_last)
    rows.append((f"G+D, grouped K={k}, channels_last", best_seconds(grouped, repeats)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution-vgg", type=int, default=64)
    parser.add_argument("--resolution-gan", type=int, default=128)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"CPU, {args.threads} threads, forward + backward, best of {args.repeats} after a warm-up; "
        f"VGG at {args.resolution_vgg} px, G+D at {args.resolution_gan} px, widths {args.width}"
    )
    print("| part | seconds |")
    print("|---|---|")
    rows = perceptual_rows(args.resolution_vgg, args.k, args.batch, args.repeats)
    rows += gan_rows(args.resolution_gan, args.k, args.batch, args.width, args.repeats)
    for name, seconds in rows:
        print(f"| {name} | {seconds:.3f} |", flush=True)


if __name__ == "__main__":
    main()
