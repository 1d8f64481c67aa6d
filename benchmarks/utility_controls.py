"""Controls for downstream utility on real data: what balancing alone does, and what synthetic images
without new content do to `utility_gain` (the numbers in docs/metrics.md).

1. The `real` arm's balanced accuracy with uniformly drawn and with class-balanced minibatches.
2. `utility_gain` when the "synthetic" images are uniform noise, or copies of each class's mean
   train image: neither adds content, so neither should count as a gain.

    python benchmarks/utility_controls.py --data ../shared/data/busi [--resolution 64] [--seeds 10]
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import torch
from scipy.stats import ttest_rel

from lossbench.config import DataConfig
from lossbench.data.split import load_split
from lossbench.images import class_labels
from lossbench.metrics import utility


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--holdout", type=float, default=0.2)
    parser.add_argument("--seeds", type=int, default=10, help="classifier seeds")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--bootstrap", type=int, default=1000)
    args = parser.parse_args()

    split = load_split(DataConfig(spec=args.data, resolution=args.resolution, holdout=args.holdout))
    train, held = split.train, split.heldout
    k = len(train.class_names)
    settings = utility.UtilitySettings(
        seeds=args.seeds, steps=args.steps, width=args.width, bootstrap=args.bootstrap
    )
    y = held.labels.numpy()
    print(
        f"data {args.data} at {args.resolution} px, held-out {args.holdout} (split seed 0): "
        f"train {np.bincount(train.labels.numpy()).tolist()}, held-out {np.bincount(y).tolist()}; "
        f"{args.seeds} classifier seeds, {args.steps} steps, width {args.width}, "
        f"{args.bootstrap} bootstrap resamples"
    )

    bacc = {}  # sampling -> balanced accuracy per classifier seed (same seeds: paired)
    for sampling in ("uniform", "class-balanced"):
        drawn = dataclasses.replace(settings, sampling=sampling)
        models = [
            utility.train_classifier(train.images, train.labels, k, s, drawn) for s in range(args.seeds)
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

    noise_rng = torch.Generator().manual_seed(0)
    means = [train.images[train.labels == c].float().mean(0).round().to(torch.uint8) for c in range(k)]

    def noise(counts: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (sum(counts), *train.images.shape[1:])
        return torch.randint(0, 256, shape, generator=noise_rng, dtype=torch.uint8), class_labels(counts)

    def class_mean(counts: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        labels = class_labels(counts)
        return torch.stack([means[c] for c in labels.tolist()]), labels

    for name, sample in (("uniform noise", noise), ("class-mean copies", class_mean)):
        r = utility.downstream_utility(train, held, sample, settings)
        scores = {arm: f"{r.scores[arm]['bacc']:.3f}" for arm in utility.ARMS}
        print(
            f"synthetic = {name}: utility_gain {r.gain:+.3f} "
            f"(95 % CI {r.gain_ci[0]:+.3f}, {r.gain_ci[1]:+.3f}); balanced accuracy "
            f"real {scores['real']}, aug {scores['aug']}, synth (cas) {scores['synth']}"
        )


def _mean_sd(values: np.ndarray) -> str:
    return f"{values.mean():+.3f} ± {values.std(ddof=1):.3f} (mean ± sd over {len(values)} seeds)"


if __name__ == "__main__":
    main()
