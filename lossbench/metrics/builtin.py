"""lossbench's own metrics, declared (names, keys, directions, weights); computed in `metrics.compute`.

Keys: `fid`, `kid` (mean over subsets; `kid_std` beside it), `lpips_ff` / `lpips_rr` (LPIPS over
random fake-fake / real-real pairs; `_std` beside each), `msssim_ff` / `msssim_rr` (likewise),
`precision`, `recall`, `density`, `coverage`, `swd` (sliced Wasserstein distance), copy detection
(`authenticity_feat`/`_pixel`, with `ct_*` and the held-out yardstick `authenticity_heldout_*`),
`utility_gain` and `cas` (downstream utility, `metrics.utility`). With `EvalConfig.bootstrap`,
`fid_se`, `kid_se`, `lpips_ff_se`, `msssim_ff_se` (bootstrap SEs). What a metric needs beyond the
fakes and the train part (a held-out part: copy, utility; a conditional generator: utility) is its
`needs`. The real-real figures are references, without a direction. This module imports nothing
heavy; see `lossbench.metrics.registry`.
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
    return [WEIGHT_KEYS[x] for x in (config.feature_extractor, *config.extra_extractors) if x in WEIGHT_KEYS]


def _prc_weights(config: EvalConfig) -> list[str]:
    return [WEIGHT_KEYS[x] for x in (config.prc_extractor, *config.extra_extractors) if x in WEIGHT_KEYS]


def _lpips_weights(config: EvalConfig) -> list[str]:
    return [] if config.random_weights else ["alexnet"]


def _pair_keys(name: str) -> tuple[str, ...]:
    return (f"{name}_ff_std", f"{name}_ff_se", f"{name}_rr", f"{name}_rr_std")


register_metric(
    "fid",
    keys={"fid": "min"},
    ranges={"fid": (0, INF)},
    auxiliary=("fid_se", "fid_heldout", "fid_at_heldout_n"),  # the last two: with a held-out part
    compute=f"{_COMPUTE}:fid",
    prepare=f"{_COMPUTE}:load_fid_extractor",
    weights=_fid_weights,
    description="Fréchet distance of extractor features (torch-fidelity)",
    extractor_roles=("fid",),
)
register_metric(
    "kid",
    keys={"kid": "min"},
    ranges={"kid": (0, INF)},  # MMD² >= 0; a subset estimate may dip below
    auxiliary=("kid_std", "kid_se"),
    compute=f"{_COMPUTE}:kid",
    prepare=f"{_COMPUTE}:load_fid_extractor",
    weights=_fid_weights,
    description="kernel inception distance, mean and std over subsets (torch-fidelity)",
    extractor_roles=("fid",),
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
    key_descriptions={
        "precision": "improved precision (Kynkäänniemi et al. 2019, torch-fidelity): the share of fakes "
        "inside the real images' k-NN manifold",
        "recall": "improved recall (Kynkäänniemi et al. 2019, torch-fidelity): the share of real images "
        "inside the fakes' k-NN manifold",
    },
    extractor_roles=("prc",),
)
register_metric(
    "dc",
    aliases=("density_coverage",),
    keys={"density": "max", "coverage": "max"},
    ranges={"density": (0, INF), "coverage": (0, 1)},
    compute=f"{_COMPUTE}:density_coverage",
    prepare=f"{_COMPUTE}:load_prc_extractor",
    weights=_prc_weights,
    description="density and coverage (Naeem et al. 2020), k = 5, precision/recall features",
    key_descriptions={
        "density": "density (Naeem et al. 2020): how many real k-NN balls (k = 5) hold each fake, "
        "on average over fakes, divided by k; precision/recall features",
        "coverage": "coverage (Naeem et al. 2020): the share of real images whose k-NN ball (k = 5) "
        "holds a fake; precision/recall features",
    },
    extractor_roles=("prc",),
)
register_metric(
    "copy",
    keys={"authenticity_feat": "max", "authenticity_pixel": "max"},
    ranges={"authenticity_feat": (0, 1), "authenticity_pixel": (0, 1)},
    auxiliary=("ct_feat", "ct_pixel", "authenticity_heldout_feat", "authenticity_heldout_pixel"),
    compute=f"{_COMPUTE}:copy_detection",
    prepare=f"{_COMPUTE}:load_fid_extractor",
    weights=_fid_weights,
    description="copy detection vs the train part: authenticity (Alaa 2022), C_T (Meehan 2020; "
    "<< 0 = copying); needs a held-out part",
    key_descriptions={
        f"authenticity_{space}": f"authenticity (Alaa 2022) in {where}: the share of fakes farther "
        "from their nearest training image than it is from its own nearest training neighbour "
        "(held-out images score authenticity_heldout)"
        for space, where in (("feat", "the FID extractor's space"), ("pixel", "pixel space"))
    },
    extractor_roles=("fid",),
    needs=("heldout",),
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
    ranges={"utility_gain": (-1, 1), "cas": (0, 1)},  # a difference of balanced accuracies; one
    auxiliary=(
        "utility_gain_lo",
        "utility_gain_hi",
        *(f"utility_{arm}_{score}" for arm in ("real", "aug", "synth") for score in ("bacc", "f1", "auc")),
    ),
    details=tuple(f"utility_{arm}_recall" for arm in ("real", "aug", "synth")),
    compute=f"{_COMPUTE}:utility",
    needs=("heldout", "conditional"),
    description="held-out balanced accuracy of a classifier: real + synthetic minus real; train-on-synthetic",
    key_descriptions={
        "utility_gain": "held-out balanced accuracy of a classifier trained on real + synthetic minus "
        "one trained on real only (both with classic augmentation)",
        "cas": "classification accuracy score: held-out balanced accuracy of a classifier trained on "
        "synthetic images only",
    },
)
