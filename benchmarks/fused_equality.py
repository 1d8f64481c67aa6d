"""How far a fused member is from its separate run: for each loss, K members (seeds 0..K-1, λ 2, 5, 1,
...) trained with `lossbench.training.fused.train_fused` and each trained alone with
`lossbench.training.train`, then the largest |Δ| over the final checkpoints' tensors of G, D and the
EMA G, with the tensor where it occurs. In fp32 (`--precision fp32`, the default) the difference is
float rounding (grouped convolutions sum in another order); in bf16 (`--precision bf16`: CUDA, or a
CPU with native bf16) expect more.

    python benchmarks/fused_equality.py [--losses wgangp,bce] [--steps 3] [--device cpu] [--precision fp32]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from types import SimpleNamespace

import torch

from lossbench.config import TrainConfig, parse_name_list
from lossbench.losses import available_losses
from lossbench.training.fused import train_fused
from lossbench.training.train import train


def _load(path: Path) -> dict:
    return torch.load(path, weights_only=True)


def largest_difference(a: dict, b: dict) -> tuple[float, str]:
    """max |a - b| over the networks' tensors of two checkpoints, and where."""
    return max(
        ((a[net][name].float() - b[net][name].float()).abs().max().item(), f"{net}.{name}")
        for net in ("G", "D", "G_ema")
        for name in a[net]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--losses", default=",".join(available_losses()))
    parser.add_argument("--members", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="bf16: train.amp")
    args = parser.parse_args()

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 1, args.resolution, args.resolution), dtype=torch.uint8, generator=g)
    data = SimpleNamespace(images=images, labels=None, source="random", fingerprint="random")
    print(
        f"{args.members} members, {args.steps} steps, R = {args.resolution}, batch 8, widths 4, "
        f"random-weight VGG16 perceptual loss, augmentation on, {args.device}"
    )
    print("| loss | largest |Δ| | where |")
    print("|---|---|---|")
    for loss in parse_name_list(args.losses, "loss"):
        configs = [
            TrainConfig(
                loss=loss,
                seed=seed,
                lam=lam,
                steps=args.steps,
                batch_size=8,
                g_width=4,
                d_width=4,
                z_dim=8,
                perceptual="vgg16",
                random_weights=True,
                augment=("color", "translation", "cutout"),
                device=args.device,
                amp=args.precision == "bf16",
                progress=False,
            )
            for seed, lam in zip(
                range(args.members), (2.0, 5.0, 1.0, 3.0, 0.5, 7.0, 10.0, 4.0) * 4, strict=False
            )
        ]
        with tempfile.TemporaryDirectory() as tmp:
            alone = [train(data, c, Path(tmp) / f"alone{i}") for i, c in enumerate(configs)]
            fused = train_fused(configs, data, [Path(tmp) / f"fused{i}" for i in range(len(configs))])
            worst = max(
                largest_difference(_load(a.checkpoint), _load(f.checkpoint))
                for a, f in zip(alone, fused, strict=True)
            )
        print(f"| {loss} | {worst[0]:.1e} | {worst[1]} |", flush=True)


if __name__ == "__main__":
    main()
