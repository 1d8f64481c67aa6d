"""Typed configuration: every default lossbench uses lives here, in one place.

Units and conventions:
- images are in [-1, 1] inside models and losses, uint8 [0, 255] on disk and for feature extractors;
- `resolution` is the side R of the square training images, a power of two in [32, 512];
- `steps` counts generator steps; each is preceded by `n_critic` critic steps;
- `lam` is the perceptual-loss weight λ in L_G = L_adv + λ · L_perc.

A study is the grid (losses × lambdas × seeds) over one `TrainConfig`/`EvalConfig` template.
TOML study files (see `studies/`) map one-to-one onto `StudyConfig`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lossbench.errors import ConfigError

MIN_RESOLUTION = 32
MAX_RESOLUTION = 512


def check_resolution(resolution: int) -> int:
    """Return `resolution` if it is a power of two in [32, 512]; raise ConfigError otherwise."""
    r = int(resolution)
    if r < MIN_RESOLUTION or r > MAX_RESOLUTION or r & (r - 1):
        raise ConfigError(
            f"resolution {resolution} is not a power of two in [{MIN_RESOLUTION}, {MAX_RESOLUTION}] "
            "(use 32, 64, 128, 256 or 512)"
        )
    return r


@dataclass
class DataConfig:
    """Which images to train on and at what size."""

    spec: str = "phantom"  # "phantom", "phantom:N", a BUSI folder, or any image folder
    resolution: int = 128
    classes: tuple[str, ...] | None = None  # None = every class

    def __post_init__(self) -> None:
        self.resolution = check_resolution(self.resolution)
        if self.classes is not None:
            self.classes = tuple(self.classes)


@dataclass
class TrainConfig:
    """One training run of DGAN-WP-TL with one adversarial loss and one λ."""

    loss: str = "wgangp"
    loss_params: dict[str, Any] = field(default_factory=dict)
    lam: float = 5.0
    seed: int = 0
    steps: int = 2000
    batch_size: int = 64
    lr_g: float = 1e-4
    lr_d: float = 1e-4
    betas: tuple[float, float] = (0.0, 0.9)
    n_critic: int | None = None  # None = the loss's own recommendation
    z_dim: int = 128
    g_width: int = 64  # channels of the generator's last hidden layer; doubled per upsampling stage
    d_width: int = 64  # channels of the critic's first layer
    critic_norm: str = "none"  # "none" or "layernorm"; never BatchNorm (breaks gradient penalties)
    perceptual: str = "vgg16"  # "vgg16", "vgg19", "none", or a registered feature network
    perceptual_layers: tuple[str, ...] = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")
    perceptual_distance: str = "l1"  # "l1" or "mse"
    perceptual_pairing: str = "paired"  # "paired": fake i vs real i of the batch; "mean": batch-mean features
    ema_decay: float = 0.999
    augment: tuple[str, ...] = ()  # differentiable augmentation: "translation", "cutout", "color"
    device: str = "cpu"
    amp: bool = True  # bf16 autocast on CUDA only; always fp32 on CPU
    channels_last: bool = True  # CUDA only
    checkpoint_every: int = 500
    log_every: int = 10
    sample_every: int = 500
    random_weights: bool = False  # explicit opt-in to random pretrained-network weights (demos, tests)
    weights_dir: str | None = None
    progress: bool = True  # progress bar on stderr (shown only when stderr is a terminal)
    n_samples: int = 64  # images in the sample grids (fixed z from `seed`, EMA generator)

    def __post_init__(self) -> None:
        self.betas = tuple(float(b) for b in self.betas)  # torch 2.14 rejects int betas
        self.perceptual_layers = tuple(self.perceptual_layers)
        self.augment = tuple(self.augment)
        if not math.isfinite(self.lam) or self.lam < 0:
            raise ConfigError(f"lambda must be a finite number >= 0, got {self.lam}")
        for name in ("steps", "batch_size", "z_dim", "g_width", "d_width"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.critic_norm not in ("none", "layernorm"):
            raise ConfigError(f"critic_norm must be 'none' or 'layernorm', got {self.critic_norm!r}")
        if self.perceptual_distance not in ("l1", "mse"):
            raise ConfigError(f"perceptual_distance must be 'l1' or 'mse', got {self.perceptual_distance!r}")
        if self.perceptual_pairing not in ("paired", "mean"):
            raise ConfigError(
                f"perceptual_pairing must be 'paired' or 'mean', got {self.perceptual_pairing!r}"
            )

    @property
    def uses_perceptual(self) -> bool:
        return self.lam > 0 and self.perceptual != "none"


@dataclass
class EvalConfig:
    """How generated images are scored. Every field is logged beside the numbers it produces."""

    metrics: tuple[str, ...] = ("fid", "kid", "lpips", "msssim")
    n_fake: int = 1000
    feature_extractor: str = "inception-v3-compat"
    kid_subset_size: int | None = None  # None = min(1000, n_real, n_fake)
    kid_subsets: int = 100  # torch-fidelity's default
    prc_extractor: str = "vgg16"  # precision/recall features (torch-fidelity's PRC default)
    swd_directions: int = 128  # random projections of the sliced Wasserstein distance
    n_pairs: int = 500  # random disjoint pairs for LPIPS / MS-SSIM fake-fake and real-real
    batch_size: int = 100
    seed: int = 0
    cache_dir: str | None = None  # real-feature cache; None = mlruns/feature-cache
    random_weights: bool = False  # explicit opt-in (demos, tests); tagged on every result
    weights_dir: str | None = None

    def __post_init__(self) -> None:
        self.metrics = tuple(self.metrics)
        if self.n_fake < 2:
            raise ConfigError(f"n_fake must be at least 2, got {self.n_fake}")
        if self.n_pairs < 1:
            raise ConfigError(f"n_pairs must be at least 1, got {self.n_pairs}")
        for name in ("kid_subsets", "swd_directions", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.kid_subset_size is not None and self.kid_subset_size < 2:
            raise ConfigError(f"kid_subset_size must be at least 2, got {self.kid_subset_size}")


@dataclass
class StudyConfig:
    """A (loss × λ × seed) grid and how to run it."""

    name: str = "lossbench"
    losses: tuple[str, ...] = ("wgangp", "bce")
    lambdas: tuple[float, ...] = (0.5, 3.0, 5.0, 7.0, 10.0)
    seeds: tuple[int, ...] = (0, 1, 2)
    loss_params: dict[str, dict[str, Any]] = field(default_factory=dict)  # loss name -> its hyper-parameters
    data: DataConfig = field(default_factory=lambda: DataConfig(spec="busi"))  # "busi": found by study_config
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    objective: str = "fid"
    eval_every: int = 0  # 0 = evaluate only at the end
    search: str = "grid"  # "grid" or "tpe"
    n_trials: int | None = None  # tpe only
    lambda_range: tuple[float, float] = (0.0, 10.0)  # tpe only
    prune: bool = False  # tpe only
    storage: str | None = None  # None = journal file under mlruns/
    tracking_uri: str | None = None  # None = sqlite:///mlruns/mlflow.db
    workers: int = 1
    devices: tuple[str, ...] = ("cpu",)

    def __post_init__(self) -> None:
        self.losses = tuple(self.losses)
        self.lambdas = tuple(float(x) for x in self.lambdas)
        self.seeds = tuple(int(s) for s in self.seeds)
        self.devices = tuple(self.devices)
        if not self.losses:
            raise ConfigError("a study needs at least one loss")
        if not self.lambdas:
            raise ConfigError("a study needs at least one lambda")
        bad = [lam for lam in self.lambdas if not math.isfinite(lam) or lam < 0]
        if bad:
            raise ConfigError(f"lambda must be a finite number >= 0, got {bad[0]}")
        if not self.seeds:
            raise ConfigError("a study needs at least one seed")
        if self.workers < 1:
            raise ConfigError(f"workers must be at least 1, got {self.workers}")
        if self.search not in ("grid", "tpe"):
            raise ConfigError(f"search must be 'grid' or 'tpe', got {self.search!r}")


def to_dict(config: Any) -> dict[str, Any]:
    """A dataclass config as a plain, JSON-serialisable dict (tuples become lists)."""
    return dataclasses.asdict(config)


def _parse_list(text: str, what: str, convert: Callable[[str], Any], kind: str, example: str) -> tuple:
    """Split a comma-separated list and convert each item; ConfigError naming the bad item."""
    items = [t.strip() for t in str(text).split(",")]
    if not text or any(t == "" for t in items):
        raise ConfigError(f"malformed {what} list {text!r}: expected comma-separated {kind}s like {example}")
    try:
        return tuple(convert(t) for t in items)
    except ValueError as e:
        raise ConfigError(f"malformed {what} list {text!r}: {e}") from None


def _finite_float(item: str) -> float:
    try:
        value = float(item)
    except ValueError:
        raise ValueError(f"{item!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{item!r} is not a finite number")
    return value


def _integer(item: str) -> int:
    try:
        return int(item)
    except ValueError:
        raise ValueError(f"{item!r} is not an integer") from None


def parse_float_list(text: str, what: str = "lambda") -> tuple[float, ...]:
    """Parse '0.5,3,5' into finite floats; raise ConfigError naming the bad item."""
    return _parse_list(text, what, _finite_float, "number", "0.5,3,5")


def parse_int_list(text: str, what: str = "seed") -> tuple[int, ...]:
    """Parse '0,1,2' into ints; raise ConfigError naming the bad item."""
    return _parse_list(text, what, _integer, "integer", "0,1,2")


def parse_name_list(text: str, what: str = "loss") -> tuple[str, ...]:
    """Parse 'wgangp,bce' into names; raise ConfigError on empty items."""
    return _parse_list(text, what, str, "name", "wgangp,bce")
