"""Downstream utility: do synthetic images make a classifier better on real, held-out images?

A classifier (`lossbench.metrics.judges`, a ResNet by default) is trained from scratch, once per
classifier seed, on three training sets ("arms"), each with classic augmentation (flips, zoom,
brightness and contrast; the baseline papers on synthetic ultrasound augmentation compare against),
and each is scored on the held-out real part:
- `real`: the real train part (the baseline; identical for every cell of a study, so it is computed
  once per (train part, held-out part, settings, device type) and cached by content);
- `aug`: the real train part plus synthetic images; by default (`ratio` 0) just enough to bring
  every class up to the largest one (class balancing); with `ratio` r > 0, round(r × N_train)
  synthetic images given to the classes with the fewest images first (water-filling);
- `synth`: synthetic images only, with the real train part's class counts (train on synthetic,
  test on real: the classification accuracy score, CAS, of Ravuri & Vinyals 2019).

Scores on the held-out part, each the mean over classifier seeds: balanced accuracy (mean per-class
recall), macro-F1 (mean over the K classes of 2TP / (2TP + FP + FN), 0 for a class never predicted
nor present), per-class recall and macro AUC (one-vs-rest, the mean over classes of the
Mann-Whitney AUC of that class's predicted probability). `utility_gain` = balanced accuracy of
`aug` − `real`. Confidence intervals: 95 % percentile bootstrap over held-out images (the same
resampled indices for every arm, so the gain's interval is paired), classifier seeds averaged
inside each resample.

Training: AdamW (lr `LR`, weight decay `WEIGHT_DECAY`; linear warm-up over the first `WARMUP` of
the steps, then cosine decay to 0), cross-entropy, `steps` minibatches of `batch_size` images drawn
with replacement, every class equally likely (an image of class k with probability 1 / (K · n_k)),
from a generator seeded by the classifier seed, which also draws the augmentation; weights
initialised under that seed too (torch's global RNG is forked, so it is left untouched). Images are
uint8, scaled to [-1, 1]. Same inputs and seeds -> the same numbers on CPU.

Why class-balanced minibatches in every arm: the `aug` arm's classes are balanced by construction;
drawn uniformly, the `real` arm would differ from it in two ways at once (class frequencies and
synthetic content), and the gain would mix both. With balanced draws in every arm the gain measures
what the synthetic images add beyond oversampling, the standard baseline for imbalanced data
(benchmarks/utility_controls.py measures both on real data; docs/metrics.md).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import rankdata
from torch import nn

from lossbench.config import EvalConfig
from lossbench.errors import ConfigError
from lossbench.images import to_float
from lossbench.metrics import cache
from lossbench.metrics.judges import build_judge, check_judge, classic_augment

if TYPE_CHECKING:
    from lossbench.data import ImageDataset

_EVAL = EvalConfig()  # the defaults of the utility_* settings
ARMS = ("real", "aug", "synth")
SCORES = ("bacc", "f1", "auc")
LR = 1e-3
WEIGHT_DECAY = 1e-4
WARMUP = 0.05  # share of the steps with a linear learning-rate warm-up
CI_LEVEL = 0.95

#: counts per class -> (uint8 images sum(counts)×1×R×R, int64 labels); e.g. a conditional generator.
Sampler = Callable[[list[int]], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class UtilitySettings:
    """How the classifiers are trained and scored (EvalConfig's `utility_*` fields, whose defaults
    these are)."""

    seeds: int = _EVAL.utility_seeds  # classifier seeds 0..seeds-1
    steps: int = _EVAL.utility_steps  # optimiser steps per classifier
    batch_size: int = 32
    classifier: str = _EVAL.utility_classifier  # lossbench.metrics.judges.JUDGES
    width: int = _EVAL.utility_width  # channels of the first conv
    augment: bool = _EVAL.utility_augment  # classic augmentation while training (judges.classic_augment)
    ratio: float = _EVAL.utility_ratio  # 0 = balance the classes; r > 0 = add round(r × N_train) synthetic
    sampling: str = "class-balanced"  # minibatches: or "uniform" over images (a control, see above)
    bootstrap: int = _EVAL.utility_bootstrap  # resamples of the held-out part
    seed: int = 0  # seeds the bootstrap

    def __post_init__(self) -> None:
        if self.sampling not in ("class-balanced", "uniform"):
            raise ConfigError(f"utility sampling must be class-balanced or uniform, not {self.sampling!r}")
        check_judge(self.classifier)

    def record(self) -> dict[str, Any]:
        return {f"utility_{k}": v for k, v in self.__dict__.items()}


@dataclass
class UtilityResult:
    """Per arm and score: the seed-mean value and its CI; per arm, per-class recall; the gain."""

    scores: dict[str, dict[str, float]]  # arm -> score -> value
    ci: dict[str, dict[str, tuple[float, float]]]  # arm -> score -> (low, high)
    recall: dict[str, dict[str, float]]  # arm -> class name -> recall
    gain: float
    gain_ci: tuple[float, float]
    counts: dict[str, list[int]]  # training-set class counts per arm, and "heldout"
    settings: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, str] = field(default_factory=dict)  # utility_real_cache: "hit" or "miss"

    def metrics(self) -> dict[str, float]:
        """Flat keys for the metric registry: utility_gain (+ _lo/_hi), cas, utility_<arm>_<score>."""
        out = {
            "utility_gain": self.gain,
            "utility_gain_lo": self.gain_ci[0],
            "utility_gain_hi": self.gain_ci[1],
        }
        out["cas"] = self.scores["synth"]["bacc"]
        out |= {f"utility_{arm}_{s}": self.scores[arm][s] for arm in ARMS for s in SCORES}
        return out


def lr_factor(step: int, steps: int) -> float:
    """The learning rate of optimiser step `step` (0-based) of `steps`, as a fraction of LR."""
    warmup = max(1, round(WARMUP * steps))
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def train_classifier(
    images: torch.Tensor,
    labels: torch.Tensor,
    n_classes: int,
    seed: int,
    settings: UtilitySettings,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """A classifier trained on uint8 `images` with int64 `labels` (see the module docstring), on `device`."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_judge(settings.classifier, n_classes, settings.width).to(device)
    rng = torch.Generator().manual_seed(seed)
    weights = torch.ones(len(labels), dtype=torch.double)
    if settings.sampling == "class-balanced":
        weights /= torch.bincount(labels, minlength=n_classes)[labels]
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: lr_factor(t, settings.steps))
    model.train()
    for _ in range(settings.steps):
        index = torch.multinomial(weights, settings.batch_size, replacement=True, generator=rng)
        x = to_float(images[index].to(device))
        if settings.augment:
            x = classic_augment(x, rng)
        loss = F.cross_entropy(model(x), labels[index].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        schedule.step()
    return model.eval()


@torch.no_grad()
def predict_proba(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """Class probabilities (float64 N×K) for uint8 images, on the model's device."""
    device = next(model.parameters()).device
    chunks = [F.softmax(model(to_float(x.to(device))), 1).double().cpu() for x in images.split(batch_size)]
    return torch.cat(chunks).numpy()


def recalls(pred: np.ndarray, y: np.ndarray, n_classes: int) -> np.ndarray:
    """Per-class recall (NaN for a class absent from y)."""
    hits = np.bincount(y[pred == y], minlength=n_classes).astype(float)
    total = np.bincount(y, minlength=n_classes).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return hits / total


def macro_f1(pred: np.ndarray, y: np.ndarray, n_classes: int) -> float:
    tp = np.bincount(y[pred == y], minlength=n_classes).astype(float)
    fp = np.bincount(pred, minlength=n_classes) - tp
    fn = np.bincount(y, minlength=n_classes) - tp
    denom = 2 * tp + fp + fn
    return float(np.mean(np.divide(2 * tp, denom, out=np.zeros(n_classes), where=denom > 0)))


def macro_auc(probs: np.ndarray, y: np.ndarray) -> float:
    """One-vs-rest macro AUC over the classes with both positives and negatives in y."""
    aucs = []
    for k in range(probs.shape[1]):
        pos = y == k
        n_pos, n_neg = pos.sum(), (~pos).sum()
        if n_pos and n_neg:
            ranks = rankdata(probs[:, k])
            aucs.append((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
    return float(np.mean(aucs)) if aucs else float("nan")


def score(probs: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Balanced accuracy, macro-F1 and macro AUC of one classifier's probabilities (N×K)."""
    pred, k = probs.argmax(1), probs.shape[1]
    return {
        "bacc": float(np.nanmean(recalls(pred, y, k))),
        "f1": macro_f1(pred, y, k),
        "auc": macro_auc(probs, y),
    }


def synthetic_counts(counts: Sequence[int], ratio: float) -> list[int]:
    """Synthetic images per class for the `aug` arm: balance (`ratio` 0) or water-fill round(ratio × N)."""
    total = np.array(counts, dtype=int)
    n = round(ratio * total.sum()) if ratio > 0 else int((total.max() - total).sum())
    added = np.zeros_like(total)
    for _ in range(n):
        k = int(np.argmin(total + added))  # ties: the lower class index
        added[k] += 1
    return added.tolist()


def _arms(train: ImageDataset, sample: Sampler, n_classes: int, ratio: float) -> dict[str, tuple]:
    """Training images and labels of each arm."""
    counts = np.bincount(train.labels.numpy(), minlength=n_classes).tolist()
    extra_x, extra_y = sample(synthetic_counts(counts, ratio))
    synth_x, synth_y = sample(counts)
    for x, y in ((extra_x, extra_y), (synth_x, synth_y)):
        if x.dtype != torch.uint8 or x.shape[1:] != train.images.shape[1:] or len(x) != len(y):
            raise ConfigError(
                f"synthetic images must be uint8 N×{tuple(train.images.shape[1:])} with N labels"
            )
    return {
        "real": (train.images, train.labels),
        "aug": (torch.cat([train.images, extra_x]), torch.cat([train.labels, extra_y])),
        "synth": (synth_x, synth_y),
    }


def _check(train: ImageDataset, heldout: ImageDataset) -> None:
    if tuple(train.class_names) != tuple(heldout.class_names):
        raise ConfigError(
            f"train classes {train.class_names} differ from held-out classes {heldout.class_names}"
        )
    if train.images.shape[1:] != heldout.images.shape[1:]:
        raise ConfigError("the train and held-out parts have different image sizes")
    if len(set(heldout.labels.tolist())) < 2:
        raise ConfigError("the held-out part needs images of at least two classes")


def downstream_utility(
    train: ImageDataset,
    heldout: ImageDataset,
    sample: Sampler,
    settings: UtilitySettings,
    device: str | torch.device = "cpu",
    cache_folder: str | os.PathLike | None = None,
) -> UtilityResult:
    """Train the three arms' classifiers over `settings.seeds` seeds on `device`; score them on `heldout`.

    With `cache_folder`, the `real` arm's held-out probabilities are read from (or stored in) the
    cache (`lossbench.metrics.cache`), keyed by both parts' fingerprints, the settings and the
    device type; `provenance["utility_real_cache"]` says "hit" or "miss"."""
    _check(train, heldout)
    n_classes = len(train.class_names)
    arms = _arms(train, sample, n_classes, settings.ratio)
    y = heldout.labels.numpy()

    def arm_probs(arm: str) -> torch.Tensor:
        x, t = arms[arm]
        return torch.from_numpy(np.stack([
            predict_proba(train_classifier(x, t, n_classes, s, settings, device), heldout.images)
            for s in range(settings.seeds)
        ]))  # fmt: skip

    probs = {arm: arm_probs(arm).numpy() for arm in ("aug", "synth")}
    provenance = {}
    if cache_folder is None:
        probs["real"] = arm_probs("real").numpy()
    else:
        key = {
            "kind": "utility-real-arm-v1",
            "train": train.fingerprint,
            "heldout": heldout.fingerprint,
            "device": torch.device(device).type,
            "settings": json.dumps(_arm_settings(settings), sort_keys=True),
        }
        real, hit = cache.cached(cache_folder, key, lambda: arm_probs("real"))
        probs["real"] = real.numpy()
        provenance["utility_real_cache"] = "hit" if hit else "miss"
    probs = {arm: probs[arm] for arm in ARMS}
    boot = _bootstrap(probs, y, settings)
    scores = {arm: _seed_mean(p, y) for arm, p in probs.items()}
    gain = boot["aug"]["bacc"] - boot["real"]["bacc"]
    return UtilityResult(
        scores=scores,
        ci={arm: {s: _interval(v) for s, v in b.items()} for arm, b in boot.items()},
        recall={arm: _mean_recall(p, y, train.class_names) for arm, p in probs.items()},
        gain=scores["aug"]["bacc"] - scores["real"]["bacc"],
        gain_ci=_interval(gain),
        counts={arm: np.bincount(t.numpy(), minlength=n_classes).tolist() for arm, (_, t) in arms.items()}
        | {"heldout": np.bincount(y, minlength=n_classes).tolist()},
        settings=settings.record() | {"utility_n_heldout": len(y), "utility_n_train": len(train)},
        provenance=provenance,
    )


def _arm_settings(settings: UtilitySettings) -> dict[str, Any]:
    """The settings a classifier's probabilities depend on (not the bootstrap's, not the ratio)."""
    out = settings.record()
    for name in ("utility_bootstrap", "utility_seed", "utility_ratio"):
        del out[name]
    return out


def _mean_recall(probs: np.ndarray, y: np.ndarray, names: Sequence[str]) -> dict[str, float]:
    """Class name -> recall, the mean over seeds (NaN for a class absent from the held-out part)."""
    mean = np.mean([recalls(p.argmax(1), y, len(names)) for p in probs], 0)
    return dict(zip(names, mean.tolist(), strict=True))


def _seed_mean(probs: np.ndarray, y: np.ndarray) -> dict[str, float]:
    per_seed = [score(p, y) for p in probs]
    return {s: float(np.mean([d[s] for d in per_seed])) for s in SCORES}


def _bootstrap(probs: dict[str, np.ndarray], y: np.ndarray, settings: UtilitySettings) -> dict[str, dict]:
    """arm -> score -> array of `bootstrap` seed-mean values over resampled held-out indices."""
    rng = np.random.default_rng(settings.seed)
    index = rng.integers(0, len(y), (settings.bootstrap, len(y)))
    out: dict[str, dict[str, np.ndarray]] = {}
    for arm, p in probs.items():
        values = [_seed_mean(p[:, i], y[i]) for i in index]
        out[arm] = {s: np.array([v[s] for v in values]) for s in SCORES}
    return out


def _interval(values: np.ndarray) -> tuple[float, float]:
    tail = 100 * (1 - CI_LEVEL) / 2
    low, high = np.nanpercentile(values, [tail, 100 - tail])
    return float(low), float(high)
