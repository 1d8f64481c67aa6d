"""Training health: is the critic awake, and does the generator still use z and vary?

A comparison of losses means something only when every generator learns (docs/training.md, "Why the
conditional generator collapsed on BUSI"). Every `health_every` generator steps the trainer calls
`probe`, which reads the run without changing it (no gradient, no draw from the run's streams, both
generators in eval mode, a critic with no state), and logs its figures as terms beside the losses
(MLflow curves in a study):

- `health/critic_acc`: with G frozen, how often the critic scores a real image above the median
  fake of the generator it trains against (G, not its EMA) and such a fake below the median real
  (0.5: at chance);
- `health/logit_scale`: the mean |D(x)| over those real and fake images;
- `health/z_share` (conditional runs, EMA generator): the share of the fakes' pixel variance that z
  explains, E_y Var_z G(z, y) ÷ Var_{z,y} G(z, y) (0: G ignores z);
- `health/ssim_gap` (EMA generator): within-class fake–fake SSIM minus real–real SSIM of the training
  images (`metrics.diversity.msssim_score`; > 0: the fakes are more alike than the reals).

`findings(history, loss)` turns the logged history into (kind, one-line warning) pairs, each with its
numbers: a critic whose logits vanish, a BCE critic loss pinned at 2 ln 2, a negative Wasserstein
estimate, z ignored, fakes less varied than the reals. Each looks at the last `WINDOW` logged values
after `WARMUP` steps, so one noisy log or the first steps raise nothing; "pinned" looks at every log
since `WARMUP`: near equilibrium a learning BCE critic's loss comes near 2 ln 2 too, but it left
that band at some log (on BUSI at 32 px, 1000 steps: by 0.026-0.048 in 9 runs of the recipe, by
0.002-0.006 in the 6 stalled runs of the old one). A critic at chance against the current G is no
finding by itself: near equilibrium G fools it half the time (the accuracy stays a curve); a
stalled critic shows as logits near 0.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from lossbench.images import generate_images, to_float

if TYPE_CHECKING:
    from lossbench.training.train import History, Run

PROBE_SEED = 20261205  # fixed z and real images of every probe: the curves follow one sample
N_PROBE = 48  # images per probe (per class: N_PROBE // classes, at least 4)
N_PAIRS = 12  # SSIM pairs per class
WINDOW = 3  # logged values a finding looks at
WARMUP = 200  # generator steps before the first window may begin: early training is all transients
SMALL_LOGITS = 0.05  # mean |D(x)| below this: a critic that barely separates anything
PINNED = 0.01  # a BCE critic loss within this of 2 ln 2 at every log since WARMUP is pinned there
Z_IGNORED = 0.3  # z_share below this: G barely uses z (BUSI's old recipe: 0.07-0.29; the fix: 0.80-0.89)
SSIM_GAP = 0.1  # fake–fake SSIM more than this above real–real: fakes too alike


@torch.no_grad()
def probe(run: Run) -> dict[str, float]:
    """The health figures of `run` now (see the module docstring)."""
    G, D, images, labels = run.G_ema, run.D, run.images, run.labels
    pick = torch.Generator().manual_seed(PROBE_SEED)
    if labels is None:
        classes = [torch.randperm(len(images), generator=pick)[:N_PROBE].to(images.device)]
    else:
        per_class = max(4, N_PROBE // int(labels.max() + 1))
        classes = [(labels == k).nonzero().flatten() for k in range(int(labels.max()) + 1)]
        classes = [c[torch.randperm(len(c), generator=pick)[:per_class].to(c.device)] for c in classes]
    real = torch.cat([images[c] for c in classes])
    y = None if labels is None else labels[torch.cat(classes)]
    fake, sample = (
        generate_images(g, len(real), PROBE_SEED, device=run.device, labels=None if y is None else y.cpu())
        for g in (run.G, G)
    )
    scores = [D(to_float(x)) if y is None else D(to_float(x), y) for x in (real, fake.to(run.device))]
    r, f = (s.float().flatten() for s in scores)
    figures = {
        "health/critic_acc": 0.5 * ((r > f.median()).float().mean() + (f < r.median()).float().mean()).item(),
        "health/logit_scale": torch.cat([r, f]).abs().mean().item(),
        "health/ssim_gap": _ssim_gap(real.cpu(), sample, [len(c) for c in classes]),
    }
    if y is not None:
        figures["health/z_share"] = _z_share(G, y, run.device)
    return figures


def _ssim_gap(real: torch.Tensor, fake: torch.Tensor, sizes: list[int]) -> float:
    """Mean over classes of (fake–fake − real–real) SSIM of N_PAIRS random pairs each."""
    from lossbench.metrics.diversity import msssim_score, pair_values  # imports lpips: only when probing

    score = msssim_score(real.shape[-1])
    gaps = []
    for r, f in zip(real.split(sizes), fake.split(sizes), strict=True):
        pairs = min(N_PAIRS, len(r) // 2)
        gaps.append((pair_values(score, f, pairs, 0).mean() - pair_values(score, r, pairs, 0).mean()).item())
    return sum(gaps) / len(gaps)


def _z_share(G: torch.nn.Module, y: torch.Tensor, device: torch.device) -> float:
    """E_y Var_z G(z, y) ÷ Var G(z, y) over pixels, from 8 z for each probed class."""
    classes = y.unique().cpu()
    labels = classes.repeat_interleave(8)
    x = generate_images(G, len(labels), PROBE_SEED + 1, device=device, labels=labels).float()
    per_class = x.view(len(classes), 8, -1)
    within = per_class.var(1, correction=0).mean()
    total = x.view(len(labels), -1).var(0, correction=0).mean()
    return (within / total).item() if total > 0 else 0.0


def findings(history: History, loss: str) -> list[tuple[str, str]]:
    """(kind, one-line warning) about the run whose logged `history` this is (see the module docstring)."""
    out: list[tuple[str, str]] = []

    def last(term: str) -> list[float] | None:
        logged = history.get(term, [])[-WINDOW:]
        return [v for _, v in logged] if len(logged) == WINDOW and logged[0][0] >= WARMUP else None

    acc, scale = last("health/critic_acc"), last("health/logit_scale")
    if acc and scale and max(scale) < SMALL_LOGITS:
        out.append(
            (
                "logits",
                f"critic barely separates anything: mean |logit| {_span(scale)}, accuracy {_span(acc)}",
            )
        )
    d_loss = [v for step, v in history.get("d/loss", []) if step >= WARMUP]  # the whole run since WARMUP
    if loss == "bce" and len(d_loss) >= WINDOW and all(abs(v - 2 * math.log(2)) < PINNED for v in d_loss):
        out.append(("pinned", f"BCE critic loss pinned at 2 ln 2 since step {WARMUP} ({_span(d_loss)})"))
    wdist = last("d/wdist")
    if wdist and max(wdist) < 0:
        out.append(("wdist", f"Wasserstein estimate negative ({_span(wdist)}): the critic ranks fakes first"))
    z = last("health/z_share")
    if z and max(z) < Z_IGNORED:
        out.append(("z", f"generator barely uses z: z explains {_span(z)} of the fakes' variance"))
    gap = last("health/ssim_gap")
    if gap and min(gap) > SSIM_GAP:
        out.append(
            ("alike", f"fakes less varied than the reals: fake-fake SSIM above real-real by {_span(gap)}")
        )
    return out


def _span(values: list[float]) -> str:
    lo, hi = min(values), max(values)
    return f"{lo:.3g}" if f"{lo:.3g}" == f"{hi:.3g}" else f"{lo:.3g} to {hi:.3g}"
