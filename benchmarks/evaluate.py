"""Evaluation cost on CPU: a first evaluation (cold real-data cache) against a second one (warm).

For each resolution: the built-in phantom (780 real images) against `--n-fake` fakes from an
untrained DGAN generator (seeded; generated once and timed apart, so both evaluations score the
same images). Evaluation 1 computes and caches the real-data quantities (extractor features,
real-real LPIPS and MS-SSIM); evaluation 2 finds them in the cache. Printed: seconds per stage for
both, and the ratio first / second, without and with the generation time.

Pretrained weights are absent on this machine, so this run uses the weight-free `lossbench-tiny`
extractor for FID/KID/precision-recall and a random AlexNet for LPIPS; compute cost does not depend
on the weight values. Part 2 registers torchvision's Inception-v3 architecture with random weights
as a torch-fidelity extractor and times it on `--inception-images` images per side, then
extrapolates linearly to the full set sizes: the realistic cost of FID features with
`inception-v3-compat`, which runs the same architecture at 299×299.

    python benchmarks/evaluate.py [--resolutions 64,128] [--n-fake 1000] [--inception-images 64]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time

import torch
import torch.nn.functional as F
import torchvision
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

from lossbench.config import EvalConfig
from lossbench.data import load_dataset
from lossbench.images import generate_images
from lossbench.metrics import evaluate
from lossbench.metrics.extractors import TINY
from lossbench.models.dgan import Generator

INCEPTION_RANDOM = "bench-inception-v3-random"
STAGES = ("real_features", "fake_features", "fid", "kid", "pr", "lpips", "msssim", "swd")


class RandomInceptionV3(FeatureExtractorBase):
    """torchvision's Inception-v3 with RANDOM weights (timing only): 2048 pool features at 299×299."""

    def __init__(self, name, features_list, **kwargs):
        super().__init__(name, features_list)
        torch.manual_seed(0)
        self.net = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False)
        self.net.fc = torch.nn.Identity()

    @staticmethod
    def get_provided_features_list():
        return ("2048",)

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return "2048"

    def forward(self, x):
        x = F.interpolate(x.float(), size=(299, 299), mode="bilinear", align_corners=False) / 127.5 - 1
        return (self.net(x),)


def run_twice(fake: torch.Tensor, real, config: EvalConfig) -> tuple[dict[str, float], dict[str, float]]:
    """Timings of a cold-cache and a warm-cache evaluation of the same images."""
    first = evaluate(fake, real, config)
    second = evaluate(fake, real, config)
    assert second.metrics == first.metrics, "cached real data changed a result"
    assert set(second.provenance.values()) == {"hit"}, f"cache missed: {second.provenance}"
    return first.timings, second.timings


def print_split(title: str, cold: dict[str, float], warm: dict[str, float]) -> None:
    print(f"\n{title}")
    print(f"  {'stage':<14}{'first (s)':>11}{'second (s)':>12}")
    for stage in STAGES:
        if stage in cold:
            print(f"  {stage:<14}{cold[stage]:>11.3f}{warm[stage]:>12.3f}")
    total_cold, total_warm = sum(cold.values()), sum(warm.values())
    ratio = total_cold / total_warm
    print(f"  {'total':<14}{total_cold:>11.3f}{total_warm:>12.3f}   ratio first/second = {ratio:.2f}")


def timed_fakes(resolution: int, n: int) -> tuple[torch.Tensor, float]:
    """`n` images from an untrained, seeded DGAN generator at its default width, and the seconds taken."""
    torch.manual_seed(0)
    generator = Generator(resolution)
    start = time.perf_counter()
    fakes = generate_images(generator, n, seed=0)
    return fakes, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resolutions", default="64,128")
    parser.add_argument("--n-fake", type=int, default=1000)
    parser.add_argument("--inception-images", type=int, default=64, help="0 skips part 2")
    args = parser.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    print(f"CPU, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"Part 1: extractor {TINY} (weight-free) for FID/KID/PR, LPIPS with a RANDOM AlexNet (timing only)")

    with tempfile.TemporaryDirectory() as cache_dir:
        for resolution in map(int, args.resolutions.split(",")):
            real = load_dataset("phantom", resolution)
            fakes, seconds = timed_fakes(resolution, args.n_fake)
            config = EvalConfig(
                metrics=("fid", "kid", "pr", "lpips", "msssim", "swd"),
                feature_extractor=TINY,
                prc_extractor=TINY,
                random_weights=True,
                cache_dir=cache_dir,
            )
            cold, warm = run_twice(fakes, real, config)
            title = f"R={resolution}: {len(fakes)} fakes vs {len(real.images)} reals, {config.n_pairs} pairs"
            print_split(title, cold, warm)
            total_cold, total_warm = sum(cold.values()) + seconds, sum(warm.values()) + seconds
            print(
                f"  generating the fakes (DGAN, width 64, untrained) took {seconds:.3f} s once; with it, "
                f"first {total_cold:.1f} s, second {total_warm:.1f} s, ratio {total_cold / total_warm:.2f}"
            )

        if args.inception_images:
            n = args.inception_images
            if INCEPTION_RANDOM not in FEATURE_EXTRACTORS_REGISTRY:
                register_feature_extractor(INCEPTION_RANDOM, RandomInceptionV3)
            resolution = 128
            real = load_dataset("phantom", resolution)
            subset = dataclasses.replace(
                real, images=real.images[:n], fingerprint=f"{real.fingerprint}:first{n}"
            )
            fakes, _ = timed_fakes(resolution, n)
            config = EvalConfig(
                metrics=("fid", "kid"), feature_extractor=INCEPTION_RANDOM, cache_dir=cache_dir
            )
            start = time.perf_counter()
            cold, warm = run_twice(fakes, subset, config)
            print(f"\nPart 2: {INCEPTION_RANDOM} = torchvision Inception-v3, RANDOM weights (timing only)")
            print_split(f"R={resolution}: measured on {n} fakes vs {n} reals (FID, KID)", cold, warm)
            per_image = (cold["real_features"] + cold["fake_features"] + warm["fake_features"]) / (3 * n)
            n_real = len(real.images)
            est_cold, est_warm = per_image * (n_real + args.n_fake), per_image * args.n_fake
            print(
                f"  {per_image * 1000:.0f} ms/image; extrapolated to {args.n_fake} fakes, {n_real} reals: "
                f"features first {est_cold:.0f} s, second {est_warm:.0f} s, ratio {est_cold / est_warm:.2f} "
                f"(part 2 took {time.perf_counter() - start:.0f} s)"
            )


if __name__ == "__main__":
    main()
