"""Controls for downstream utility on real data: what balancing alone does, and what synthetic images
without new content do to `utility_gain` (the numbers in docs/metrics.md).

1. (--sampling) The `real` arm's balanced accuracy with uniformly drawn and with class-balanced
   minibatches.
2. `utility_gain` when the "synthetic" images are uniform noise, copies of each class's mean train
   image, or copies of training images (drawn at random within each class): none adds content, so
   none should count as a gain; copies of training images should score a CAS near the `real` arm.

The judge is lossbench's default (`UtilitySettings`) unless --classifier/--steps/--width/--no-augment
say otherwise; the `real` arm is computed once and cached in --cache (shared by the controls).

    python benchmarks/utility_controls.py --data ../shared/data/busi [--resolution 64] [--seeds 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import ttest_rel

from lossbench.config import DataConfig
from lossbench.data.split import load_split
from lossbench.images import class_labels
from lossbench.metrics import cache, utility


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--holdout", type=float, default=0.2)
    parser.add_argument("--seeds", type=int, default=3, help="classifier seeds")
    parser.add_argument("--classifier", default=utility.UtilitySettings.classifier)
    parser.add_argument("--steps", type=int, default=utility.UtilitySettings.steps)
    parser.add_argument("--width", type=int, default=utility.UtilitySettings.width)
    parser.add_argument("--no-augment", action="store_true")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--sampling", action="store_true", help="also compare minibatch sampling")
    parser.add_argument("--cache", type=Path, default=cache.DEFAULT_DIR, help="cache of the real arm")
    args = parser.parse_args()

    split = load_split(DataConfig(spec=args.data, resolution=args.resolution, holdout=args.holdout))
    train, held = split.train, split.heldout
    k = len(train.class_names)
    settings = utility.UtilitySettings(
        seeds=args.seeds, steps=args.steps, classifier=args.classifier, width=args.width,
        augment=not args.no_augment, bootstrap=args.bootstrap,
    )  # fmt: skip
    y = held.labels.numpy()
    print(
        f"data {args.data} at {args.resolution} px, held-out {args.holdout} (split seed 0): "
        f"train {np.bincount(train.labels.numpy()).tolist()}, held-out {np.bincount(y).tolist()}; "
        f"{args.seeds} classifier seeds, judge {settings.record()}"
    )
    if args.sampling:
        compare_sampling(train, held, settings)

    noise_rng = torch.Generator().manual_seed(0)
    copy_rng = torch.Generator().manual_seed(0)
    means = [train.images[train.labels == c].float().mean(0).round().to(torch.uint8) for c in range(k)]

    def noise(counts: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (sum(counts), *train.images.shape[1:])
        return torch.randint(0, 256, shape, generator=noise_rng, dtype=torch.uint8), class_labels(counts)

    def class_mean(counts: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        labels = class_labels(counts)
        return torch.stack([means[c] for c in labels.tolist()]), labels

    def train_copies(counts: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        picks = []
        for c, n in enumerate(counts):
            members = torch.nonzero(train.labels == c)[:, 0]
            picks.append(members[torch.randint(len(members), (n,), generator=copy_rng)])
        return train.images[torch.cat(picks)], class_labels(counts)

    controls = (("uniform noise", noise), ("class-mean copies", class_mean), ("train copies", train_copies))
    for name, sample in controls:
        start = time.perf_counter()
        r = utility.downstream_utility(train, held, sample, settings, cache_folder=args.cache)
        scores = {arm: f"{r.scores[arm]['bacc']:.3f}" for arm in utility.ARMS}
        print(
            f"synthetic = {name}: utility_gain {r.gain:+.3f} "
            f"(95 % CI {r.gain_ci[0]:+.3f}, {r.gain_ci[1]:+.3f}); balanced accuracy "
            f"real {scores['real']} (cache {r.provenance['utility_real_cache']}), aug {scores['aug']}, "
            f"synth (cas) {scores['synth']}; {time.perf_counter() - start:.0f} s",
            flush=True,
        )


def compare_sampling(train, held, settings) -> None:
    """The real arm with uniformly drawn and with class-balanced minibatches, paired by seed."""
    k, y = len(train.class_names), held.labels.numpy()
    bacc = {}  # sampling -> balanced accuracy per classifier seed (same seeds: paired)
    for sampling in ("uniform", "class-balanced"):
        drawn = dataclasses.replace(settings, sampling=sampling)
        models = [
            utility.train_classifier(train.images, train.labels, k, s, drawn) for s in range(settings.seeds)
        ]
        bacc[sampling] = np.array(
            [utility.score(utility.predict_proba(m, held.images), y)["bacc"] for m in models]
        )
        print(f"real arm, {sampling} minibatches: balanced accuracy {_mean_sd(bacc[sampling])}")
    diff = bacc["class-balanced"] - bacc["uniform"]
    test = ttest_rel(bacc["class-balanced"], bacc["uniform"])
    print(
        f"  class-balanced - uniform, paired by seed: {_mean_sd(diff)}, paired t-test p = {test.pvalue:.2g}"
    )


def _mean_sd(values: np.ndarray) -> str:
    return f"{values.mean():+.3f} ± {values.std(ddof=1):.3f} (mean ± sd over {len(values)} seeds)"


if __name__ == "__main__":
    main()
