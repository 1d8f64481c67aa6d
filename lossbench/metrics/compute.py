"""How the built-in metrics (declared in `metrics.builtin`) are computed from an `EvalState`.

Each `compute` returns its result keys and records the settings its numbers depend on; each
`prepare` loads a network before any fake image is generated. Formulas live in `fidelity`,
`diversity`, `swd`, `coverage`, `memorisation` and `utility`; this module only wires them to the
shared state.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import torch

from lossbench.config import EvalConfig
from lossbench.errors import ConfigError
from lossbench.images import sample_classes
from lossbench.metrics import coverage, diversity, fidelity, memorisation, noise
from lossbench.metrics.evaluation import EvalState
from lossbench.metrics.swd import sliced_wasserstein
from lossbench.metrics.utility import UtilitySettings, downstream_utility

MAX_KID_SUBSET = 1000
CLOSEST_SHOWN = 8  # fakes nearest a training image kept for the report (pixel space)


def load_fid_extractor(state: EvalState) -> None:
    state.extractor("fid", state.config.feature_extractor)


def load_prc_extractor(state: EvalState) -> None:
    state.extractor("prc", state.config.prc_extractor)


def load_lpips(state: EvalState) -> None:
    config = state.config
    state.networks["lpips"] = diversity.load_lpips(
        config.weights_dir, config.random_weights, config.seed, state.device
    )


def _bootstrap(
    state: EvalState, key: str, statistic: Callable[[np.ndarray], float], n: int
) -> dict[str, float]:
    """`{key}_se` over `config.bootstrap` resamples of n fakes (nothing when bootstrap is 0)."""
    config = state.config
    if not config.bootstrap:
        return {}
    state.settings["bootstrap"] = config.bootstrap
    return {f"{key}_se": noise.bootstrap_se(statistic, n, config.bootstrap, config.seed)}


def fid(state: EvalState) -> dict[str, float]:
    fake_f, real_f = state.features("fid", state.config.feature_extractor)
    se = _bootstrap(state, "fid", lambda i: fidelity.fid(fake_f[i], real_f), len(fake_f))
    return {"fid": fidelity.fid(fake_f, real_f), **se, **_fid_yardstick(state, fake_f, real_f)}


def _fid_yardstick(state: EvalState, fake_f: torch.Tensor, real_f: torch.Tensor) -> dict[str, float]:
    """With a held-out part of n images: `fid_heldout`, the FID of those unseen real images against
    the reference (what real data scores), and `fid_at_heldout_n`, the FID of n of the fakes drawn
    at random (seeded by `seed`) against it. FID's bias grows as the sample shrinks, so the two are
    read side by side at one n, not against `fid` (all the fakes)."""
    if state.heldout is None:
        return {}
    heldout_f = state.heldout_features("fid", state.config.feature_extractor)
    n = len(heldout_f)
    if not 2 <= n <= len(fake_f):
        return {}
    pick = torch.randperm(len(fake_f), generator=torch.Generator().manual_seed(state.config.seed))[:n]
    return {
        "fid_heldout": fidelity.fid(heldout_f, real_f),
        "fid_at_heldout_n": fidelity.fid(fake_f[pick], real_f),
    }


def kid(state: EvalState) -> dict[str, float]:
    """KID with subset size `kid_subset_size`, by default min(1000, n_real, n_fake)."""
    config = state.config
    fake_f, real_f = state.features("fid", config.feature_extractor)
    n_fake, n_real = len(fake_f), len(real_f)
    subset = config.kid_subset_size or min(MAX_KID_SUBSET, n_real, n_fake)
    if subset > min(n_real, n_fake):
        raise ConfigError(f"kid_subset_size {subset} exceeds the samples (n_real {n_real}, n_fake {n_fake})")
    mean, std = fidelity.kid(fake_f, real_f, subset, config.kid_subsets, config.seed)
    state.settings.update(kid_subset_size=subset, kid_subsets=config.kid_subsets)
    resampled = lambda i: fidelity.kid(fake_f[i], real_f, subset, config.kid_subsets, config.seed)[0]  # noqa: E731
    return {"kid": mean, "kid_std": std, **_bootstrap(state, "kid", resampled, n_fake)}


def precision_recall(state: EvalState) -> dict[str, float]:
    fake_f, real_f = state.features("prc", state.config.prc_extractor)
    precision, recall = fidelity.precision_recall(fake_f, real_f)
    state.settings["prc_neighborhood"] = fidelity.PRC_NEIGHBORHOOD
    return {"precision": precision, "recall": recall}


def density_coverage(state: EvalState) -> dict[str, float]:
    """Naeem et al.'s density and coverage in the precision/recall extractor's space."""
    fake_f, real_f = state.features("prc", state.config.prc_extractor)
    if len(real_f) <= coverage.NEAREST_K:
        raise ConfigError(f"density/coverage need more than {coverage.NEAREST_K} real images")
    density, cov = coverage.density_coverage(fake_f, real_f)
    state.settings["dc_nearest_k"] = coverage.NEAREST_K
    return {"density": density, "coverage": cov}


def copy_detection(state: EvalState) -> dict[str, float]:
    """C_T and authenticity against the training images, in the FID extractor's space and in pixel
    space; the held-out images' authenticity beside them as the yardstick."""
    config = state.config
    fake_f, train_f = state.features("fid", config.feature_extractor)
    held_f = state.heldout_features("fid", config.feature_extractor)
    assert state.heldout is not None
    train_px = memorisation.pixels(state.real.images)
    held_px, fake_px = (memorisation.orient(train_px, x) for x in (state.heldout.images, state.fakes))
    spaces = {
        "feat": (train_f.double().numpy(), held_f.double().numpy(), fake_f.double().numpy()),
        "pixel": (train_px, held_px, fake_px),
    }
    cells = memorisation.ct_cells(len(state.heldout))
    out: dict[str, float] = {}
    for space, (train, held, fake) in spaces.items():
        out[f"authenticity_{space}"] = memorisation.authenticity(train, fake)
        out[f"authenticity_heldout_{space}"] = memorisation.authenticity(train, held)
        out[f"ct_{space}"] = memorisation.data_copying_ct(train, held, fake, cells, config.seed)
    state.settings.update(copy_ct_cells=cells, copy_ct_min_fakes=memorisation.CT_MIN_FAKES)
    pairs = memorisation.closest_to_train(train_px, fake_px, CLOSEST_SHOWN)
    fake_i, train_i, dist = (list(x) for x in zip(*pairs, strict=True))
    state.closest_pairs = state.fakes[fake_i], state.real.images[train_i], dist
    return out


def lpips(state: EvalState) -> dict[str, float]:
    model, weights = state.networks["lpips"]
    state.settings.update(lpips_net="alex", lpips_version="0.1", lpips_weights=weights)
    return state.pairs("lpips", diversity.lpips_score(model), weights)


def msssim(state: EvalState) -> dict[str, float]:
    resolution = state.real.images.shape[-1]
    mode, win = diversity.msssim_window(resolution)
    state.settings.update(msssim_mode=mode, msssim_win_size=win)
    return state.pairs("msssim", diversity.msssim_score(resolution), f"{mode}:{win}")


def swd(state: EvalState) -> dict[str, float]:
    config = state.config
    state.settings.update(swd_directions=config.swd_directions, swd_space="pixels")
    return {"swd": sliced_wasserstein(state.fakes, state.real.images, config.swd_directions, config.seed)}


def utility_settings(config: EvalConfig) -> UtilitySettings:
    """The utility metric's settings from an EvalConfig (bootstrap seeded by `config.seed`)."""
    return UtilitySettings(
        seeds=config.utility_seeds,
        steps=config.utility_steps,
        classifier=config.utility_classifier,
        width=config.utility_width,
        augment=config.utility_augment,
        ratio=config.utility_ratio,
        bootstrap=config.utility_bootstrap,
        seed=config.seed,
    )


def utility(state: EvalState) -> dict[str, float]:
    """Downstream utility; synthetic images drawn by class counts with z seeded by `config.seed`."""
    config = state.config
    sample = functools.partial(
        sample_classes, state.generator, seed=config.seed, batch_size=config.batch_size, device=state.device
    )
    settings = utility_settings(config)
    result = downstream_utility(state.real, state.heldout, sample, settings, state.device, state.folder)
    state.settings.update(result.settings)
    state.provenance.update(result.provenance)
    for arm, recall in result.recall.items():
        state.settings[f"utility_{arm}_recall"] = ", ".join(f"{k} {v:.3f}" for k, v in recall.items())
    return result.metrics()
