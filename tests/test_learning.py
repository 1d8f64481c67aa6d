"""Learning tests: after a short run, a class-conditional generator must draw each class, keep its
fakes about as varied as the reals of that class, and its critic must tell real from fake.

- On three classes a person tells apart at a glance (a bright disc in the left, middle or right
  third; radius, height and speckle vary), for the paper's two losses; lossbench's recipe until
  2026-12 (z joined to a class embedding, an unnormalised critic) is the negative case: it draws one
  image per class.
- Unconditionally on the same discs: fakes of every class, about as varied as the reals; the
  unnormalised critic (the old default) is the negative case.
- On real BUSI (skipped without ../shared): within-class fake–fake SSIM near real–real.

Why the old recipe failed: docs/training.md, "Why the conditional generator collapsed on BUSI".
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lossbench import health
from lossbench.config import DataConfig, ModelConfig, TrainConfig
from lossbench.data.split import load_split
from lossbench.images import generate_images, sample_classes, to_float
from lossbench.metrics.diversity import msssim_score, pair_values
from lossbench.metrics.utility import recalls
from lossbench.training.train import Run, build, train, train_step

OLD_RECIPE = dict(critic_norm="none", model=ModelConfig(kwargs={"conditioning": "concat"}))


def discs(n: int, seed: int, resolution: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 n×1×R×R images and int64 labels: class k has a bright disc centred in the k-th third."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    yy, xx = torch.meshgrid(torch.arange(resolution).float(), torch.arange(resolution).float(), indexing="ij")
    cx = (labels.float() * 2 + 1) / 6 * resolution + torch.randn(n, generator=g) * 1.5
    cy = (torch.rand(n, generator=g) * 0.5 + 0.25) * resolution
    radius = (torch.rand(n, generator=g) * 0.12 + 0.08) * resolution
    inside = ((xx - cx[:, None, None]) ** 2 + (yy - cy[:, None, None]) ** 2).sqrt() < radius[:, None, None]
    images = 0.25 + 0.6 * inside.float() + 0.08 * torch.randn(n, resolution, resolution, generator=g)
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)[:, None], labels


def pooled(images: torch.Tensor) -> torch.Tensor:
    """8×8 average-pooled pixels in [0, 1]: the disc's place and size, without the speckle."""
    return F.adaptive_avg_pool2d(images.float() / 255, 8).flatten(1)


def trained(images: torch.Tensor, labels: torch.Tensor, config: TrainConfig) -> Run:
    torch.manual_seed(0)
    run = build(images, config, labels)
    for step in range(config.steps):
        train_step(run, step)
    return run


def critic_accuracy(run: Run, real: torch.Tensor, y_real: torch.Tensor, fake: torch.Tensor, y_fake) -> float:
    """How often the critic, with G frozen, scores a real image above the median fake and a fake below
    the median real (0.5: chance)."""
    with torch.no_grad():
        r, f = run.D(to_float(real), y_real), run.D(to_float(fake), y_fake)
    return 0.5 * ((r > f.median()).float().mean() + (f < r.median()).float().mean()).item()


# Every built-in loss, with the steps it needs on the discs (measured: at 600 steps LSGAN, RSGAN and
# RaSGAN still draw the wrong class for about half of the fakes; hinge passed at 600 in fp32, but in
# bf16, the CPU default since 2026-12-05, its mean class recall was 0.57 there).
DRAGAN_STALLS = (
    "DRAGAN's default penalty (weight 10, k 1) around the reals holds the instance-normalised critic "
    "below chance (it scores fakes above reals); with weight 1 it learns (docs/losses.md)"
)
LEARNING_RUNS = [
    pytest.param("bce", 1000, {}, True, id="bce"),
    pytest.param("wgangp", 400, {}, True, id="wgangp"),
    pytest.param("hinge", 1000, {}, True, id="hinge"),
    pytest.param("ns-r1", 600, {}, True, id="ns-r1"),
    pytest.param("lsgan", 1000, {}, True, id="lsgan"),
    pytest.param("rsgan", 1000, {}, True, id="rsgan"),
    pytest.param("rasgan", 1000, {}, True, id="rasgan"),
    pytest.param(
        "dragan", 400, {}, True, id="dragan", marks=pytest.mark.xfail(strict=True, reason=DRAGAN_STALLS)
    ),
    pytest.param("bce", 1000, OLD_RECIPE, False, id="bce-old-recipe"),
]


def test_every_built_in_loss_has_a_learning_test():
    from lossbench.losses import available_losses
    from lossbench.losses.registry import loss_class

    covered = {p.values[0] for p in LEARNING_RUNS}
    in_tree = {n for n in available_losses() if loss_class(n).__module__.startswith("lossbench.losses.")}
    assert covered == in_tree  # (other tests register losses of their own, defined in tests/)


@pytest.mark.slow
@pytest.mark.parametrize("loss, steps, recipe, learns", LEARNING_RUNS)
def test_conditional_generator_draws_each_class_varied(loss, steps, recipe, learns):
    from sklearn.linear_model import LogisticRegression

    images, labels = discs(240, seed=0)
    reference, reference_labels = discs(600, seed=1)
    judge = LogisticRegression(max_iter=2000).fit(pooled(reference).numpy(), reference_labels.numpy())
    assert recalls(judge.predict(pooled(images).numpy()), labels.numpy(), 3).min() > 0.95  # a fair judge
    config = TrainConfig(
        loss=loss, lam=0.0, steps=steps, batch_size=32, z_dim=32, g_width=8, d_width=8, lr_g=2e-4, lr_d=2e-4,
        ema_decay=0.99, conditional=True, perceptual="none", progress=False, **recipe,
    )  # fmt: skip
    run = trained(images, labels, config)
    fakes, y = sample_classes(run.G_ema, [40, 40, 40], seed=1)
    recall = recalls(judge.predict(pooled(fakes).numpy()), y.numpy(), 3)
    spread = np.array([torch.pdist(pooled(x[c == k])).mean().item() for x, c in ((fakes, y), (images, labels))
                       for k in range(3)]).reshape(2, 3)  # fmt: skip
    ratio = spread[0] / spread[1]  # fakes' mean pairwise distance within a class ÷ the reals'
    accuracy = critic_accuracy(run, images[:120], labels[:120], fakes, y)
    verdict = recall.mean() > 0.6 and ((ratio > 0.6) & (ratio < 1.6)).all() and accuracy > 0.6
    assert verdict == learns, (
        f"class recall {recall.round(2)}, diversity ratio {ratio.round(2)}, critic {accuracy:.2f}"
    )


@pytest.mark.slow
@pytest.mark.parametrize("recipe, learns", [({}, True), (OLD_RECIPE, False)], ids=["default", "old-recipe"])
def test_conditional_bce_on_busi_keeps_fakes_as_varied_as_the_reals(busi_dir, recipe, learns, tmp_path):
    """...and the run's health findings say so while it trains (lossbench.health).

    The margin, 0.2, separates a learning run from a collapsed one (the old recipe: 0.6 and more); it
    is not the recipe's target. BCE at 32 px is still 0.10-0.12 above the reals in the normal class
    (docs/training.md), so a margin of 0.1, this test's until 2026-12-05, failed on a train part
    that differs by a few images (0.114 on the split of lossbench.data.split v2, 30 pairs a class)."""
    data = load_split(DataConfig(f"busi:{busi_dir}", 32, holdout=0.2, split_seed=0)).train
    config = TrainConfig(
        loss="bce", lam=0.0, steps=500, batch_size=16, z_dim=64, g_width=16, d_width=16, conditional=True,
        progress=False, sample_every=0, **recipe,
    )  # fmt: skip
    torch.manual_seed(0)
    result = train(data, config, tmp_path)
    fakes, y = sample_classes(result.generator_ema, [60, 60, 60], seed=1)
    real = torch.cat([data.images[data.labels == k][:60] for k in range(3)])
    score = msssim_score(32)
    gap = max(
        pair_values(score, fakes[y == k], 30, 0).mean().item()
        - pair_values(score, real[y == k], 30, 0).mean().item()
        for k in range(3)
    )
    found = [kind for kind, _ in health.findings(result.history, "bce")]
    assert (gap < 0.2) == learns, f"fake-fake minus real-real SSIM {gap:.3f}"
    if learns:
        assert found == [], found
    else:  # z ignored, fakes alike, and a critic at chance: its loss pinned at 2 ln 2, or its
        # mean |logit| below 0.05, or both; which of the two fires hovers with the machine's bf16
        # kernels ("pinned" on the machine before, only "logits" on an AMD EPYC, 2026-12-06)
        assert {"z", "alike"} <= set(found) and {"pinned", "logits"} & set(found), found


@pytest.mark.slow
@pytest.mark.parametrize("critic_norm, learns", [("instancenorm", True), ("none", False)])
def test_unconditional_generator_covers_every_class_varied(critic_norm, learns):
    """Unconditionally too, the unnormalised critic (the old default) lets G collapse onto few discs."""
    from sklearn.linear_model import LogisticRegression

    images, labels = discs(240, seed=0)
    reference, reference_labels = discs(600, seed=1)
    judge = LogisticRegression(max_iter=2000).fit(pooled(reference).numpy(), reference_labels.numpy())
    config = TrainConfig(
        loss="bce", lam=0.0, steps=600, batch_size=32, z_dim=32, g_width=8, d_width=8, lr_g=2e-4, lr_d=2e-4,
        ema_decay=0.99, perceptual="none", progress=False, critic_norm=critic_norm,
    )  # fmt: skip
    torch.manual_seed(0)
    run = build(images, config)
    for step in range(config.steps):
        train_step(run, step)
    fakes = generate_images(run.G_ema, 120, seed=1)
    shares = np.bincount(judge.predict(pooled(fakes).numpy()), minlength=3) / len(fakes)
    ratio = torch.pdist(pooled(fakes)).mean().item() / torch.pdist(pooled(images)).mean().item()
    accuracy = critic_accuracy(run, images[:120], None, fakes, None)
    verdict = shares.min() >= 0.15 and 0.6 < ratio < 1.6 and accuracy > 0.6
    assert verdict == learns, (
        f"class shares {shares.round(2)}, diversity ratio {ratio:.2f}, critic {accuracy:.2f}"
    )
