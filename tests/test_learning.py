"""Learning on real BUSI (skipped without ../shared): a class-conditional generator must keep its
fakes as diverse as the reals within each class, and its critic must tell real from fake.

The old recipe (z joined to a class embedding, an unnormalised critic) fails both on BUSI: its
fakes become one image per class while the critic's logits stay near 0 (docs/training.md, "Why
the conditional generator collapsed"); the test keeps it as its negative case.
"""

from __future__ import annotations

import pytest
import torch

from lossbench.config import ModelConfig, TrainConfig
from lossbench.data import load_dataset
from lossbench.data.split import holdout_split
from lossbench.images import sample_classes, to_float
from lossbench.metrics.diversity import msssim_score, pair_scores
from lossbench.train import build, train_step

STEPS = 500
RECIPES = {
    "busi-cpu": dict(critic_norm="instancenorm", model=ModelConfig(kwargs={"conditioning": "batchnorm"})),
    "old": dict(critic_norm="none", model=ModelConfig(kwargs={"conditioning": "concat"})),
}


def within_class_ssim(images: torch.Tensor, labels: torch.Tensor) -> list[float]:
    """Mean SSIM of 30 random pairs within each class (lower: more diverse)."""
    score = msssim_score(images.shape[-1])
    return [pair_scores(score, images[labels == k], 30, seed=0)[0] for k in range(int(labels.max()) + 1)]


@pytest.mark.parametrize("recipe, learns", [("busi-cpu", True), ("old", False)])
def test_conditional_bce_on_busi_keeps_fakes_diverse_and_the_critic_awake(busi_dir, recipe, learns):
    data = holdout_split(load_dataset(f"busi:{busi_dir}", 32), 0.2, 0).train
    config = TrainConfig(
        loss="bce", lam=0.0, steps=STEPS, batch_size=16, z_dim=64, g_width=16, d_width=16, conditional=True,
        progress=False, **RECIPES[recipe],
    )  # fmt: skip
    torch.manual_seed(0)
    run = build(data.images, config, data.labels)
    for step in range(STEPS):
        train_step(run, step)
    fakes, labels = sample_classes(run.G_ema, [60, 60, 60], seed=1)
    real = torch.cat([data.images[data.labels == k][:60] for k in range(3)])
    gap = max(
        f - r for f, r in zip(within_class_ssim(fakes, labels), within_class_ssim(real, labels), strict=True)
    )
    with torch.no_grad():  # the critic against the generator it trained with, G frozen
        y = labels.to(torch.int64)
        logits = torch.cat([run.D(to_float(real), y), run.D(to_float(fakes), y)])
    scale = logits.abs().mean().item()
    assert (gap < 0.1 and scale > 0.1) == learns, (
        f"fake-fake minus real-real SSIM {gap:.3f}, |logit| {scale:.3f}"
    )
