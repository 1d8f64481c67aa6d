"""Does bf16 training change quality? The same cells trained in fp32 and in bf16, scored side by side.

Reads the runs `busi_recipe.py` trained with `--recipe fp32` and `--recipe default` (bf16 autocast
where the CPU has it) into the same OUT, scores each run's EMA generator on the train part of BUSI
(holdout 0.2, split seed 0) with SWD and FID in the domain encoder's space (`--extractor
encoder:PATH`, the encoder trained on the same split), takes the within-class fake–fake SSIM gap
to the reals from the recipe's rows, and pairs the runs by (loss, λ, seed). Per metric: the mean
of bf16 − fp32 with its 95 % interval, a paired two-sided t test (scipy), and the smallest
difference that test detects with power 0.8 at these pairs (statsmodels `TTestPower`, the sd of
the differences).

    python benchmarks/busi_recipe.py --out OUT --recipe fp32 ...
    python benchmarks/busi_recipe.py --out OUT ...          (the same cells, default recipe)
    python benchmarks/precision_quality.py --out OUT --extractor encoder:runs/busi32-encoder.pt
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import jsonl_rows
import numpy as np
from scipy import stats
from statsmodels.stats.power import TTestPower

from lossbench.config import DataConfig, EvalConfig
from lossbench.data.split import load_split
from lossbench.metrics.evaluation import evaluate
from lossbench.training.train import CHECKPOINT, load_generator

ALPHA, POWER = 0.05, 0.8
METRICS = ("swd", "fid", "ssim_gap")


def scores(row: dict, data, config: EvalConfig, real_fake_fake: list[float]) -> dict[str, float]:
    generator = load_generator(Path(row["grid"]).parent / CHECKPOINT)
    metrics = evaluate(generator, data, config).metrics
    gaps = [f - r for f, r in zip(row["fake_fake"], real_fake_fake, strict=True)]
    return {"swd": metrics["swd"], "fid": metrics["fid"], "ssim_gap": statistics.mean(gaps)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="busi_recipe.py's OUT")
    parser.add_argument("--extractor", required=True, help="FID's space: encoder:PATH, of the same split")
    parser.add_argument("--data", default="busi")
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--n-fake", type=int, default=500)
    args = parser.parse_args()
    import torch
    from busi_recipe import N_PER_CLASS, within_class  # the recipe's own diversity measure

    data = load_split(DataConfig(args.data, args.resolution, holdout=0.2, split_seed=0)).train
    per_class = [data.images[data.labels == k][:N_PER_CLASS] for k in range(3)]
    labels = torch.cat([torch.full((len(x),), k) for k, x in enumerate(per_class)])
    real = within_class(torch.cat(per_class), labels, args.resolution)
    config = EvalConfig(metrics=("swd", "fid"), feature_extractor=args.extractor, n_fake=args.n_fake)
    runs = {
        (r["recipe"], r["loss"], r["lambda"], r["seed"]): r
        for r in jsonl_rows.load(args.out)
        if r["resolution"] == args.resolution
    }
    pairs = sorted(k[1:] for k in runs if k[0] == "fp32" and ("default",) + k[1:] in runs)
    if not pairs:
        raise SystemExit(f"no cell of {args.out} was trained with both recipes")
    table = {
        key: {recipe: scores(runs[(recipe, *key)], data, config, real) for recipe in ("fp32", "default")}
        for key in pairs
    }
    default_precision = runs[("default", *pairs[0])].get("precision")
    print(f"{len(pairs)} pairs at {args.resolution} px; fid in {config.feature_extractor}'s space")
    print(f"n_fake {args.n_fake}; the default recipe trained in {default_precision}")
    print(md("loss", "λ", "seed", *(f"{m} fp32 / bf16" for m in METRICS)))
    print(md(*["---"] * (3 + len(METRICS))))
    for (loss, lam, seed), s in table.items():
        print(md(loss, f"{lam:g}", seed, *(f"{s['fp32'][m]:.4g} / {s['default'][m]:.4g}" for m in METRICS)))
    print()
    print(
        md("metric", "mean bf16 − fp32 [95 % CI]", "sd of differences", "paired t p", "detectable, power 0.8")
    )
    print(md(*["---"] * 5))
    for metric in METRICS:
        bf16, fp32 = (np.array([s[recipe][metric] for s in table.values()]) for recipe in ("default", "fp32"))
        diffs = bf16 - fp32
        n, mean, sd = len(diffs), diffs.mean(), float(diffs.std(ddof=1))
        half = stats.t.ppf(1 - ALPHA / 2, n - 1) * sd / np.sqrt(n)
        p = stats.ttest_rel(bf16, fp32).pvalue
        detectable = TTestPower().solve_power(nobs=n, alpha=ALPHA, power=POWER) * sd
        interval = f"{mean:+.4g} [{mean - half:+.4g}, {mean + half:+.4g}]"
        print(md(metric, interval, f"{sd:.4g}", f"{p:.3f}", f"{detectable:.4g}"))


def md(*cells) -> str:
    """One markdown table row."""
    return "| " + " | ".join(str(c) for c in cells) + " |"


if __name__ == "__main__":
    main()
