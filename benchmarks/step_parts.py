"""Where a CPU training step's time goes, and would torch.compile pay? Eager against compiled.

Builds the run of one busi-cpu cell kind (class-conditional, batch 16, widths 16, z 64, VGG16
relu1_2 + relu2_2 with random weights, at `--resolution`) in its default precision and times, with
one torch thread, the parts of a step: the generator's forward without gradients (a critic step's
fakes), the critic's forward and backward on a real and a fake batch, WGAN-GP's penalty pass (fp32
by design; double backward cannot be compiled, so eager only), the generator step's forward and
backward through the critic, and the perceptual loss's fake side (forward and backward) and real
side (forward: what the cached real side saves). Each part eager, then with its networks compiled
by `torch.compile` (inductor) after the first calls (the compile, timed apart). Run it twice: the
second process finds the first one's compiled graphs in inductor's on-disk cache, as every cell of
a study after the first would.

    python benchmarks/step_parts.py [--resolution 64] [--repeats 20]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from lossbench.config import TrainConfig
from lossbench.data import load_dataset
from lossbench.losses.penalties import gradient_penalty
from lossbench.models.registry import BoundCritic
from lossbench.training.train import build


def timed(fn, repeats: int) -> list[float]:
    """Milliseconds per call of `fn`, each of `repeats` calls timed alone, after 3 warm-up calls."""
    for _ in range(3):
        fn()
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = load_dataset("phantom:64", args.resolution)
    config = TrainConfig(loss="wgangp", lam=5.0, batch_size=16, z_dim=64, g_width=16, d_width=16,
                         conditional=True, perceptual_layers=("relu1_2", "relu2_2"), random_weights=True,
                         progress=False)  # fmt: skip
    run = build(data.images, config, data.labels)
    x = torch.rand(16, 1, args.resolution, args.resolution) * 2 - 1
    y, z = torch.randint(0, 3, (16,)), torch.randn(16, 64)
    autocast = torch.autocast("cpu", torch.bfloat16, enabled=run.precision == "bf16")

    fake = (torch.rand(16, 1, args.resolution, args.resolution) * 2 - 1).requires_grad_(True)

    def parts(G, D, extract) -> dict:
        def fakes():
            with torch.no_grad(), autocast:
                G(z, y)

        def critic():
            with autocast:
                loss = D(x, y).sum() + D(x, y).sum()
            loss.backward()

        def generator():
            with autocast:
                loss = D(G(z, y), y).sum()
            loss.backward()

        def perceptual_fake():
            with autocast:
                loss = sum(f.float().mean() for f in extract(fake))
            loss.backward()

        def perceptual_real():
            with torch.no_grad(), autocast:
                extract(x)

        return {
            "G forward, no grad": fakes,
            "D forward+backward, 2 batches": critic,
            "G step through D": generator,
            "perceptual, fake side": perceptual_fake,
            "perceptual, real side": perceptual_real,
        }

    penalty = timed(lambda: gradient_penalty(BoundCritic(run.D, y), x).backward(), args.repeats)
    eager = parts(run.G, run.D, run.perceptual.extract)
    start = time.perf_counter()
    compiled = parts(torch.compile(run.G), torch.compile(run.D), torch.compile(run.perceptual.extract))
    for fn in compiled.values():
        fn()
    compile_s = time.perf_counter() - start
    print(f"R = {args.resolution}, {run.precision}, one thread; compiling (first calls): {compile_s:.1f} s")
    print("| part | eager ms (median, range) | compiled ms | compiled / eager |")
    print("|---|---|---|---|")
    for name in eager:
        a, b = timed(eager[name], args.repeats), timed(compiled[name], args.repeats)
        ratio = statistics.median(b) / statistics.median(a)
        print(f"| {name} | {statistics.median(a):.1f} ({min(a):.1f}-{max(a):.1f}) | "
              f"{statistics.median(b):.1f} ({min(b):.1f}-{max(b):.1f}) | {ratio:.2f} |")  # fmt: skip
    cells = f"{statistics.median(penalty):.1f} ({min(penalty):.1f}-{max(penalty):.1f}) | - | -"
    print(f"| WGAN-GP penalty pass (fp32), forward+backward | {cells} |")


if __name__ == "__main__":
    main()
