"""How good is the utility judge, and what does a leaky split do to it? Train the `real` arm's
classifier (real train part, classic augmentation) per classifier seed and score it on the held-out
part of two splits of the same data at the same fraction:
- `leak-free`: lossbench's split (images of one lesion kept in one part, lossbench.data.split);
- `leaky`: a plain stratified image-level split (each class shuffled, the first round(fraction × n)
  held out), as most published BUSI numbers use.

Rows (one per split, judge and classifier seed) go to OUT/rows.jsonl; finished rows are skipped when
the same command runs again. Prints the mean and standard deviation over seeds per (split, judge).

    python benchmarks/judge_split.py --data busi --out ~/lossbench-runs/judge --seeds 0,1,2 \\
        [--classifier resnet --steps 1200 --width 32 | --classifier cnn3 --steps 300 --width 16 --no-augment]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import jsonl_rows
import numpy as np
import torch

from lossbench.config import DataConfig
from lossbench.data import ImageDataset
from lossbench.data.split import load_split, subset
from lossbench.metrics.utility import UtilitySettings, predict_proba, score, train_classifier


def leaky_split(data: ImageDataset, fraction: float, seed: int) -> tuple[ImageDataset, ImageDataset]:
    rng = np.random.default_rng(seed)
    labels = data.labels.numpy()
    held = np.concatenate([
        rng.permutation(np.flatnonzero(labels == c))[: round(fraction * int((labels == c).sum()))]
        for c in range(len(data.class_names))
    ])  # fmt: skip
    train = np.setdiff1d(np.arange(len(data)), held)
    return subset(data, train, "train"), subset(data, held, "heldout")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="busi")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--holdout", type=float, default=0.2)
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--splits", default="leak-free,leaky")
    parser.add_argument("--classifier", default=UtilitySettings.classifier)
    parser.add_argument("--steps", type=int, default=UtilitySettings.steps)
    parser.add_argument("--width", type=int, default=UtilitySettings.width)
    parser.add_argument("--no-augment", action="store_true")
    args = parser.parse_args()
    settings = UtilitySettings(
        steps=args.steps, classifier=args.classifier, width=args.width, augment=not args.no_augment
    )
    judge = f"{args.classifier} w{args.width} {args.steps} steps" + ("" if settings.augment else " no-aug")
    split = load_split(DataConfig(args.data, args.resolution, None, args.holdout, args.split_seed))
    parts = {
        "leak-free": (split.train, split.heldout),
        "leaky": leaky_split(split.data, args.holdout, args.split_seed),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    rows = jsonl_rows.load(args.out)
    for name in args.splits.split(","):
        train, heldout = parts[name]
        for seed in (int(s) for s in args.seeds.split(",")):
            key = {"split": name, "split_seed": args.split_seed, "judge": judge}
            key |= {"resolution": args.resolution, "seed": seed}
            if any(all(r.get(k, 0) == v for k, v in key.items()) for r in rows):  # rows before split_seed: 0
                continue
            start = time.perf_counter()
            model = train_classifier(train.images, train.labels, len(train.class_names), seed, settings)
            probs = predict_proba(model, heldout.images)
            row = key | score(probs, heldout.labels.numpy()) | {
                "seconds": round(time.perf_counter() - start, 1), "threads": torch.get_num_threads(),
                "n_train": len(train), "n_heldout": len(heldout),
            }  # fmt: skip
            rows.append(row)
            jsonl_rows.append(args.out, row)
            print(json.dumps(row), flush=True)
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["split"], r.get("split_seed", 0), r["judge"], r["resolution"]), []).append(r)
    print("| split | split seed | judge | px | seeds | balanced accuracy | macro AUC | s per seed |")
    print("|---|---|---|---|---|---|---|---|")
    for (name, split_seed, j, res), rs in sorted(groups.items()):
        b, a = _spread([r["bacc"] for r in rs]), _spread([r["auc"] for r in rs])
        seconds = statistics.mean(r["seconds"] for r in rs)
        print(f"| {name} | {split_seed} | {j} | {res} | {len(rs)} | {b} | {a} | {seconds:.0f} |")


def _spread(values: list[float]) -> str:
    return f"{statistics.mean(values):.3f}" + (
        f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else ""
    )


if __name__ == "__main__":
    main()
