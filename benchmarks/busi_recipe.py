"""Does a recipe learn BUSI? Train the class-conditional generator for each (resolution, loss, λ,
seed) and report within-class fake–fake MS-SSIM against real–real (single-scale SSIM where the
five-scale pyramid does not fit, see lossbench.metrics.diversity.msssim_window), the run's health
findings (lossbench.health), and where its sample grid is, so that every row can be looked at.

The perceptual loss runs on a random-weight VGG16 unless --pretrained (the pretrained file cannot be
fetched on the development machine); every row says which. Finished runs are kept in OUT/rows.jsonl
and skipped when the same command runs again, so a killed run resumes.

    python benchmarks/busi_recipe.py --out ~/lossbench-runs/recipe --resolutions 32 \\
        --losses bce,wgangp --lambdas 0,0.5,5 --seeds 0,1,2 --steps 1000 [--recipe old]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import jsonl_rows
import torch

from lossbench import health
from lossbench.config import DataConfig, ModelConfig, TrainConfig
from lossbench.data.split import load_split
from lossbench.images import sample_classes
from lossbench.metrics.diversity import msssim_score, pair_values
from lossbench.training.train import CHECKPOINT, train

RECIPES = {  # TrainConfig fields each recipe sets on top of the defaults
    "default": {},
    "diffaug": dict(augment=("color", "translation", "cutout")),  # DiffAugment on every critic input
    "fp32": dict(amp=False),  # the default recipe in fp32 where the CPU would train in bf16
    "old": dict(
        critic_norm="none", perceptual_pairing="paired", model=ModelConfig(kwargs={"conditioning": "concat"})
    ),
}
N_PER_CLASS, N_PAIRS = 60, 30


def within_class(images: torch.Tensor, labels: torch.Tensor, resolution: int) -> list[float]:
    score = msssim_score(resolution)
    return [
        pair_values(score, images[labels == k], N_PAIRS, seed=0).mean().item()
        for k in range(int(labels.max()) + 1)
    ]


def one_run(data, resolution: int, loss: str, lam: float, seed: int, args, out: Path) -> dict:
    config = TrainConfig(
        loss=loss, lam=lam, seed=seed, steps=args.steps, batch_size=16, z_dim=64, g_width=16, d_width=16,
        conditional=True, perceptual_layers=("relu1_2", "relu2_2"), random_weights=not args.pretrained,
        progress=False, log_every=25, checkpoint_every=max(args.steps // 4, 1), sample_every=args.steps // 4,
        n_samples=24, **RECIPES[args.recipe],
    )  # fmt: skip
    start = time.perf_counter()
    result = train(data, config, out, resume=True)
    seconds = time.perf_counter() - start
    fakes, labels = sample_classes(result.generator_ema, [N_PER_CLASS] * 3, seed=1)
    return {
        "recipe": args.recipe, "resolution": resolution, "loss": loss, "lambda": lam, "seed": seed,
        "steps": result.steps, "fake_fake": within_class(fakes, labels, resolution),
        "perceptual_weights": result.perceptual_weights, "precision": result.precision,
        "seconds": round(seconds, 1),
        "health": [kind for kind, _ in health.findings(result.history, loss)],
        "grid": str(result.sample_grid),
    }  # fmt: skip


def table(rows: list[dict], real: dict[int, list[float]]) -> str:
    lines = [
        "| recipe | px | loss | λ | seeds | fake–fake per class (mean ± sd over seeds) | real–real "
        "| worst gap | health findings | s per run |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["recipe"], r["resolution"], r["loss"], r["lambda"]), []).append(r)
    for (recipe, res, loss, lam), runs in sorted(groups.items()):
        per_class = list(zip(*(r["fake_fake"] for r in runs), strict=True))
        cells = " ".join(
            f"{statistics.mean(v):.3f}±{statistics.stdev(v):.3f}" if len(v) > 1 else f"{v[0]:.3f}"
            for v in per_class
        )
        gap = max(f - r for r_run in runs for f, r in zip(r_run["fake_fake"], real[res], strict=True))
        found = sorted({k for r in runs for k in _findings(r)})
        lines.append(
            f"| {recipe} | {res} | {loss} | {lam:g} | {len(runs)} | {cells} | "
            f"{' '.join(f'{v:.3f}' for v in real[res])} | {gap:+.3f} | {', '.join(found) or 'none'} | "
            f"{statistics.mean(r['seconds'] for r in runs):.0f} |"
        )
    return "\n".join(lines)


def _findings(row: dict) -> list[str]:
    """The run's health findings as lossbench judges its logged history now (from its checkpoint when it
    is still there; else as recorded when it ran)."""
    checkpoint = Path(row["grid"]).parent / CHECKPOINT
    if not checkpoint.exists():
        return row["health"]
    history = torch.load(checkpoint, map_location="cpu", weights_only=True)["history"]
    return [kind for kind, _ in health.findings(history, row["loss"])]


def _key(row: dict) -> tuple:
    return row["recipe"], row["resolution"], row["loss"], row["lambda"], row["seed"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data", default="busi")
    parser.add_argument("--resolutions", default="32")
    parser.add_argument("--losses", default="bce,wgangp")
    parser.add_argument("--lambdas", default="0,0.5,5")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="default")
    parser.add_argument(
        "--pretrained", action="store_true", help="the pretrained VGG16 (else random weights)"
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = jsonl_rows.load(args.out)
    rows = list({_key(r): r for r in rows}.values())  # a run recorded twice counts once
    real = {}
    for res in (int(r) for r in args.resolutions.split(",")):
        data = load_split(DataConfig(args.data, res, holdout=0.2, split_seed=0)).train
        per_class = [data.images[data.labels == k][:N_PER_CLASS] for k in range(3)]
        labels = torch.cat([torch.full((len(x),), k) for k, x in enumerate(per_class)])
        real[res] = within_class(torch.cat(per_class), labels, res)
        for loss in args.losses.split(","):
            for lam in (float(x) for x in args.lambdas.split(",")):
                for seed in (int(s) for s in args.seeds.split(",")):
                    if any(_key(r) == (args.recipe, res, loss, lam, seed) for r in rows):
                        continue
                    name = f"{args.recipe}-{res}px-{loss}-lam{lam:g}-s{seed}"
                    row = one_run(data, res, loss, lam, seed, args, args.out / name)
                    rows.append(row)
                    jsonl_rows.append(args.out, row)
                    print(name, row["fake_fake"], row["health"], f"{row['seconds']:.0f} s", flush=True)
    print(table([r for r in rows if r["resolution"] in real], real))


if __name__ == "__main__":
    main()
