"""Evaluation metrics. Result keys and their better direction are defined here, once.

Keys: `fid`, `kid` (mean over subsets; `kid_std` beside it), `lpips_ff` / `lpips_rr` (LPIPS over
random fake-fake / real-real pairs; `_std` beside each), `msssim_ff` / `msssim_rr` (likewise),
`precision`, `recall`, `swd` (sliced Wasserstein distance).

`lossbench.metrics.evaluate.evaluate(fake, real, config)` computes them. This module stays free of
heavy imports (stats and reports read the keys without loading torch). The pieces live in
`fidelity` (FID/KID/PR via torch-fidelity), `diversity` (LPIPS, MS-SSIM pairs), `swd`, `cache` (real
features on disk) and `extractors` (the weight-free `lossbench-tiny` extractor).
"""

from __future__ import annotations

__all__ = ["ALIASES", "DIRECTIONS", "metric_key"]

#: "min" when lower is better, "max" when higher is better.
DIRECTIONS: dict[str, str] = {
    "fid": "min",
    "kid": "min",
    "lpips_ff": "max",  # more diverse fakes
    "msssim_ff": "min",  # more diverse fakes
    "precision": "max",
    "recall": "max",
    "swd": "min",
}

#: Short names accepted on the command line (`--objective lpips`) and the result key they mean.
ALIASES: dict[str, str] = {"lpips": "lpips_ff", "msssim": "msssim_ff", "pr": "precision"}


def metric_key(name: str) -> str:
    """The result key for a metric name or alias (`lpips` -> `lpips_ff`)."""
    return ALIASES.get(name, name)
