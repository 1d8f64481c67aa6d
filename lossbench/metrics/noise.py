"""Metric noise: the bootstrap standard error of a score over resamples of the fakes.

`bootstrap_se(statistic, n, resamples, seed)`: draw `resamples` index vectors of length n with
replacement (numpy's default_rng(seed)), evaluate `statistic(indices)` on each, and return the
sample standard deviation (ddof = 1) of the values. For FID and KID the indices resample the fake
features (the real features stay fixed); for the fake-fake diversity scores they resample the
pairs (each pair is two distinct fakes). With duplicates in a resample, KID's unbiased within-set
term sees identical points as distinct; the SE is then slightly conservative.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def bootstrap_se(statistic: Callable[[np.ndarray], float], n: int, resamples: int, seed: int) -> float:
    """Bootstrap standard error of `statistic` over `resamples` resamples of n items (>= 2 resamples)."""
    if resamples < 2:
        raise ValueError(f"the bootstrap needs at least 2 resamples, got {resamples}")
    rng = np.random.default_rng(seed)
    values = [statistic(rng.integers(0, n, n)) for _ in range(resamples)]
    return float(np.std(values, ddof=1))
