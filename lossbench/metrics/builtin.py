"""lossbench's own metrics, declared (names, keys, directions, weights); computed in `metrics.compute`.

Keys: `fid`, `kid` (mean over subsets; `kid_std` beside it), `lpips_ff` / `lpips_rr` (LPIPS over
random fake-fake / real-real pairs; `_std` beside each), `msssim_ff` / `msssim_rr` (likewise),
`precision`, `recall`, `swd` (sliced Wasserstein distance), `utility_gain` and `cas` (downstream
utility, `metrics.utility`; needs a conditional generator and a held-out part). The real-real
figures are references, without a direction. This module imports nothing heavy; see
`lossbench.metrics.registry`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lossbench.metrics.registry import register_metric

if TYPE_CHECKING:
    from lossbench.config import EvalConfig

#: Extractors whose pretrained file lossbench locates itself (key in `lossbench.weights.WEIGHTS`).
WEIGHT_KEYS: dict[str, str] = {"inception-v3-compat": "inception-v3-compat", "vgg16": "vgg16"}

_COMPUTE = "lossbench.metrics.compute"
INF = float("inf")


def _fid_weights(config: EvalConfig) -> list[str]:
    return [WEIGHT_KEYS[config.feature_extractor]] if config.feature_extractor in WEIGHT_KEYS else []


def _prc_weights(config: EvalConfig) -> list[str]:
    return [WEIGHT_KEYS[config.prc_extractor]] if config.prc_extractor in WEIGHT_KEYS else []


def _lpips_weights(config: EvalConfig) -> list[str]:
    return [] if config.random_weights else ["alexnet"]


def _pair_keys(name: str) -> tuple[str, ...]:
    return (f"{name}_ff_std", f"{name}_rr", f"{name}_rr_std")


register_metric(
    "fid",
    keys={"fid": "min"},
    ranges={"fid": (0, INF)},
    compute=f"{_COMPUTE}:fid",
    prepare=f"{_COMPUTE}:load_fid_extractor",
    weights=_fid_weights,
    description="Fréchet distance of extractor features (torch-fidelity)",
)
register_metric(
    "kid",
    keys={"kid": "min"},
    ranges={"kid": (0, INF)},  # MMD² >= 0; a subset estimate may dip below
    auxiliary=("kid_std",),
    compute=f"{_COMPUTE}:kid",
    prepare=f"{_COMPUTE}:load_fid_extractor",
    weights=_fid_weights,
    description="kernel inception distance, mean and std over subsets (torch-fidelity)",
)
register_metric(
    "lpips",
    keys={"lpips_ff": "max"},  # more diverse fakes
    ranges={"lpips_ff": (0, 1)},
    auxiliary=_pair_keys("lpips"),
    compute=f"{_COMPUTE}:lpips",
    prepare=f"{_COMPUTE}:load_lpips",
    weights=_lpips_weights,
    description="LPIPS (AlexNet) over random fake-fake pairs; real-real for reference",
)
register_metric(
    "msssim",
    keys={"msssim_ff": "min"},  # more diverse fakes
    ranges={"msssim_ff": (0, 1)},
    auxiliary=_pair_keys("msssim"),
    compute=f"{_COMPUTE}:msssim",
    description="MS-SSIM (SSIM at 32 px) over random fake-fake pairs; real-real for reference",
)
register_metric(
    "pr",
    keys={"precision": "max", "recall": "max"},
    ranges={"precision": (0, 1), "recall": (0, 1)},
    compute=f"{_COMPUTE}:precision_recall",
    prepare=f"{_COMPUTE}:load_prc_extractor",
    weights=_prc_weights,
    description="improved precision and recall, k-NN manifolds (torch-fidelity)",
)
register_metric(
    "swd",
    keys={"swd": "min"},
    ranges={"swd": (0, INF)},
    compute=f"{_COMPUTE}:swd",
    description="sliced Wasserstein distance on raw pixels",
)
register_metric(
    "utility",
    keys={"utility_gain": "max", "cas": "max"},
    auxiliary=(
        "utility_gain_lo",
        "utility_gain_hi",
        *(f"utility_{arm}_{score}" for arm in ("real", "aug", "synth") for score in ("bacc", "f1", "auc")),
    ),
    compute=f"{_COMPUTE}:utility",
    needs=("heldout", "conditional"),
    description="held-out balanced accuracy of a classifier: real + synthetic minus real; train-on-synthetic",
)
