"""`evaluate`: score generated images against a real dataset with every requested metric.

Metric names (`EvalConfig.metrics`): fid, kid, lpips, msssim, pr (precision and recall), swd;
result keys are those of `lossbench.metrics` (fid, kid, kid_std, lpips_ff, ...). Fakes come from a
generator (`generate_images`: batches under no_grad, eval mode, seeded with `EvalConfig.seed`) or
are given as a uint8 tensor. Every network is loaded before any work, so a missing weight file
fails fast. Real-data quantities (extractor features, real-real LPIPS / MS-SSIM) are cached on disk
(`lossbench.metrics.cache`). Every setting a number depends on is returned beside the numbers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn

from lossbench.config import EvalConfig
from lossbench.errors import ConfigError
from lossbench.metrics import cache, diversity, fidelity
from lossbench.metrics.swd import sliced_wasserstein
from lossbench.models.dgan import generate_images

if TYPE_CHECKING:
    from lossbench.data import ImageDataset

#: Accepted metric names (and aliases) -> the metric computed.
METRICS: dict[str, str] = {
    "fid": "fid",
    "kid": "kid",
    "lpips": "lpips",
    "lpips_ff": "lpips",
    "msssim": "msssim",
    "msssim_ff": "msssim",
    "pr": "pr",
    "precision": "pr",
    "recall": "pr",
    "swd": "swd",
}

MAX_KID_SUBSET = 1000


@dataclass
class EvalResult:
    """Scores, the settings they depend on, FID-extractor features, and seconds spent per stage."""

    metrics: dict[str, float]
    settings: dict[str, str | int | float]
    fake_features: np.ndarray | None = None
    real_features: np.ndarray | None = None
    timings: dict[str, float] = field(default_factory=dict)


def resolve_metrics(names: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The distinct metrics meant by `names`, in order; ConfigError for an unknown name."""
    out: list[str] = []
    for name in names:
        if name not in METRICS:
            raise ConfigError(
                f"unknown metric {name!r} (choose from {', '.join(dict.fromkeys(METRICS.values()))})"
            )
        if METRICS[name] not in out:
            out.append(METRICS[name])
    return tuple(out)


def _check_fakes(fakes: torch.Tensor, real: ImageDataset) -> torch.Tensor:
    if fakes.dtype != torch.uint8 or fakes.dim() != 4 or fakes.shape[1:] != real.images.shape[1:]:
        raise ConfigError(
            f"fake images must be a uint8 tensor N×{'×'.join(map(str, real.images.shape[1:]))} like the real "
            f"data, got {fakes.dtype} {tuple(fakes.shape)}"
        )
    if len(fakes) < 2:
        raise ConfigError(f"need at least 2 fake images, got {len(fakes)}")
    return fakes


class _Run:
    """The state shared by the stages of one evaluation: inputs, cache folder, outputs."""

    def __init__(self, real: ImageDataset, config: EvalConfig, device: str) -> None:
        self.real, self.config, self.device = real, config, device
        self.fakes = torch.empty(0, dtype=torch.uint8)
        self.folder = Path(config.cache_dir) if config.cache_dir else cache.DEFAULT_DIR
        self.data_key = {"dataset": real.fingerprint, "resolution": real.images.shape[-1]}
        self.metrics: dict[str, float] = {}
        self.settings: dict[str, str | int | float] = {}
        self.timings: dict[str, float] = {}

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        """Add the seconds spent in the block to `timings[stage]`."""
        start = time.perf_counter()
        yield
        self.timings[stage] = self.timings.get(stage, 0.0) + time.perf_counter() - start

    def features(self, role: str, ext: fidelity.Extractor) -> tuple[torch.Tensor, torch.Tensor]:
        """Fake and (cached) real features of extractor `ext`, recorded under `role` ("fid" or "prc")."""
        config, device = self.config, self.device
        with self.timed("real_features"):
            real_f, hit = cache.cached(
                self.folder,
                {"kind": "features", **self.data_key, **ext.identity},
                lambda: fidelity.extract_features(ext, self.real.images, config.batch_size, device),
            )
        with self.timed("fake_features"):
            fake_f = fidelity.extract_features(ext, self.fakes, config.batch_size, device)
        self.settings.update(
            {
                f"{role}_extractor": ext.name,
                f"{role}_layer": ext.layer,
                f"{role}_feature_dim": fake_f.shape[1],
                f"{role}_weights": ext.weights,
                f"{role}_cache": "hit" if hit else "miss",
            }
        )
        return fake_f, real_f

    def pairs(self, name: str, score: Callable[[Tensor, Tensor], Tensor], variant: str, n_pairs: int) -> None:
        """`{name}_ff` (+ std) over fake pairs and the cached `{name}_rr` (+ std) over real pairs."""
        config, device = self.config, self.device
        with self.timed(name):
            ff = diversity.pair_scores(score, self.fakes, n_pairs, config.seed, config.batch_size, device)
            rr, _ = cache.cached(
                self.folder,
                {"kind": name, **self.data_key, "variant": variant, "n_pairs": n_pairs, "seed": config.seed},
                lambda: torch.tensor(
                    diversity.pair_scores(
                        score, self.real.images, n_pairs, config.seed, config.batch_size, device
                    )
                ),
            )
        self.metrics.update(
            {
                f"{name}_ff": ff[0],
                f"{name}_ff_std": ff[1],
                f"{name}_rr": rr[0].item(),
                f"{name}_rr_std": rr[1].item(),
            }
        )


def evaluate(
    fake: nn.Module | torch.Tensor, real: ImageDataset, config: EvalConfig, device: str = "cpu"
) -> EvalResult:
    """Score `fake` (a generator, or uint8 images N×C×R×R) against `real` with `config.metrics`."""
    wanted = resolve_metrics(config.metrics)
    fid_ext = prc_ext = lpips_model = None
    if "fid" in wanted or "kid" in wanted:
        fid_ext = fidelity.load_extractor(config.feature_extractor, "fid", config.weights_dir, device)
    if "pr" in wanted:
        prc_ext = fidelity.load_extractor(config.prc_extractor, "prc", config.weights_dir, device)
    if "lpips" in wanted:
        lpips_model, lpips_weights = diversity.load_lpips(
            config.weights_dir, config.random_weights, config.seed, device
        )

    run = _Run(real, config, device)
    if isinstance(fake, nn.Module):
        with run.timed("generate"):
            fake = generate_images(fake, config.n_fake, config.seed, config.batch_size, device)
    run.fakes = _check_fakes(fake, real)
    n_fake, n_real = len(run.fakes), len(real.images)
    resolution = real.images.shape[-1]
    run.settings.update(resolution=resolution, seed=config.seed, n_fake=n_fake, n_real=n_real)

    fid_features = None
    if fid_ext is not None:
        fid_features = fake_f, real_f = run.features("fid", fid_ext)
        if "fid" in wanted:
            with run.timed("fid"):
                run.metrics["fid"] = fidelity.fid(fake_f, real_f)
        if "kid" in wanted:
            subset = config.kid_subset_size or min(MAX_KID_SUBSET, n_real, n_fake)
            if subset > min(n_real, n_fake):
                raise ConfigError(
                    f"kid_subset_size {subset} exceeds the samples (n_real {n_real}, n_fake {n_fake})"
                )
            with run.timed("kid"):
                run.metrics["kid"], run.metrics["kid_std"] = fidelity.kid(
                    fake_f, real_f, subset, config.kid_subsets, config.seed
                )
            run.settings.update(kid_subset_size=subset, kid_subsets=config.kid_subsets)

    if prc_ext is not None:
        same = fid_ext is not None and (fid_ext.name, fid_ext.layer) == (prc_ext.name, prc_ext.layer)
        prc_features = fid_features if same else run.features("prc", prc_ext)
        with run.timed("pr"):
            run.metrics["precision"], run.metrics["recall"] = fidelity.precision_recall(*prc_features)
        run.settings.update(prc_extractor=prc_ext.name, prc_layer=prc_ext.layer, prc_weights=prc_ext.weights)
        run.settings["prc_neighborhood"] = fidelity.PRC_NEIGHBORHOOD

    if "lpips" in wanted or "msssim" in wanted:
        n_pairs = min(config.n_pairs, n_fake // 2, n_real // 2)
        run.settings["n_pairs"] = n_pairs
        if lpips_model is not None:
            run.pairs("lpips", diversity.lpips_score(lpips_model), lpips_weights, n_pairs)
            run.settings.update(lpips_net="alex", lpips_version="0.1", lpips_weights=lpips_weights)
        if "msssim" in wanted:
            mode, win = diversity.msssim_window(resolution)
            run.pairs("msssim", diversity.msssim_score(resolution), f"{mode}:{win}", n_pairs)
            run.settings.update(msssim_mode=mode, msssim_win_size=win)

    if "swd" in wanted:
        with run.timed("swd"):
            run.metrics["swd"] = sliced_wasserstein(
                run.fakes, real.images, config.swd_directions, config.seed
            )
        run.settings.update(swd_directions=config.swd_directions, swd_space="pixels")

    used = [run.settings[k] for k in ("fid_weights", "prc_weights", "lpips_weights") if k in run.settings]
    if any(str(w).startswith("random") for w in used):
        run.settings["weights"] = "random"
    else:
        run.settings["weights"] = "pretrained" if any(w != "none" for w in used) else "none"
    return EvalResult(
        metrics=run.metrics,
        settings=run.settings,
        fake_features=fid_features[0].numpy() if fid_features else None,
        real_features=fid_features[1].numpy() if fid_features else None,
        timings=run.timings,
    )
