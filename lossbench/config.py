"""Typed configuration: every default lossbench uses lives here, and each field says what it is.

Units and conventions:
- images are in [-1, 1] inside models and losses, uint8 [0, 255] on disk and for feature extractors;
- `resolution` is the side R of the square training images, a power of two in [32, 512];
- `steps` counts generator steps; each is preceded by `n_critic` critic steps;
- `lam` is the perceptual-loss weight λ in L_G = L_adv + λ · L_perc.

Field roles (dataclass metadata "role", declared once on each field and read by `field_role`):
- RESULT: changes what a run computes. Part of a study's identity (`results_identity`) and of the
  provenance logged beside results; a resumed run or study must keep it. Any field that could
  change a number, however slightly (amp, channels_last, eval batch size), is RESULT.
- RUN: where or how a run executes or reports, never what it computes: devices, storage, tracking,
  workers, progress, logging/checkpoint/sample cadence, sample grids, weight and cache folders,
  names. It may change on resume. (The data path is RUN: data enter a study's identity by content,
  through the fingerprint the study adds.) CPU runs are bit-identical across `device` changes; a
  GPU may change rounding, which is accepted as "how", like the worker count.
- CELL: set per cell of a study grid (loss, lam, seed, loss_params); never set in a study's [train].
A resume may also extend `steps` (see train.RESUMABLE_CHANGES).

Every field carries its meaning in its metadata (`help=`, one sentence); an option that sets a field
shows it with the command's default (`cli.options.config_option`).

Every field's type is checked in `__post_init__` (TOML `batch_size = 1.5`, `seeds = "01"` and
`losses = "bce"` are ConfigErrors, ints are accepted for floats, lists for tuples), then its range:
a number field declares the values it accepts in its metadata (`result(64, within=(1, MAX_BATCH))`),
read by one check (`_check_ranges`; floats must also be finite); rules that are not a plain range
(λ, betas, ema_decay, holdout, resolution, choices) have their own checks.
A study is the grid (losses × lambdas × seeds) over one `TrainConfig`/`EvalConfig` template; TOML
study files (see `studies/`) and `lossbench train --config` files map one-to-one onto
`StudyConfig` and `RunConfig` (`config_from_dict`, `load_toml`, `with_overrides`).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import os
import re
import sys
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

from lossbench.errors import ConfigError

MIN_RESOLUTION = 32
MAX_RESOLUTION = 512
# Sizes beyond any run this tool is for (and beyond what a run could finish): refused at once.
MAX_STEPS = 10**8  # generator steps (and the cadences counted in them)
MAX_BATCH = 2**16  # images per batch or sample grid
MAX_WIDTH = 2**14  # z_dim, network widths, n_critic
MAX_IMAGES = 10**7  # generated images or pairs one evaluation scores
MAX_RESAMPLES = 10**6  # bootstrap resamples, KID subsets, SWD directions
MAX_PROCESSES = 1024  # workers, threads, cells per fused group
CRITIC_NORMS = (
    "none",
    "layernorm",
    "instancenorm",
)  # never BatchNorm: it breaks per-sample gradient penalties
PERCEPTUAL_DISTANCES = ("l1", "mse")
PERCEPTUAL_PAIRINGS = ("paired", "mean")  # fake i vs real i of the batch; batch-mean features
UTILITY_CLASSIFIERS = ("resnet", "cnn3")  # the judges of downstream utility (lossbench.metrics.judges)
AUGMENTATIONS = ("color", "translation", "cutout")  # DiffAugment policies (lossbench.training.augment)

RESULT, RUN, CELL = "result", "run", "cell"
ROLES = (RESULT, RUN, CELL)


Range = tuple[float, float | None]  # (lowest, highest) value a number field accepts; None: no highest


def _field(
    role: str,
    default: Any = dataclasses.MISSING,
    *,
    factory: Any = dataclasses.MISSING,
    within: Range | None = None,
    help: str = "",
) -> Any:
    """A dataclass field with its role; `within`: the values a number accepts (`_check_ranges`);
    `help`: what it is, one sentence (the command line's help for the option that sets it)."""
    metadata = (
        {"role": role} | ({"within": within} if within is not None else {}) | ({"help": help} if help else {})
    )
    return field(default=default, default_factory=factory, metadata=metadata)


result = functools.partial(_field, RESULT)  # a field that changes what a run computes
run_only = functools.partial(_field, RUN)  # a field that may change on resume without changing results
per_cell = functools.partial(_field, CELL)  # a field that a study sets per grid cell


def config_field(root: Any, key: str) -> tuple[dataclasses.Field, Any]:
    """The field that dotted `key` names in config `root` (an instance: "train.steps" of a StudyConfig)
    and its value there (the default the command line shows)."""
    *path, name = key.split(".")
    config = root
    for part in path:
        config = getattr(config, part)
    return {f.name: f for f in dataclasses.fields(config)}[name], getattr(config, name)


def field_role(cls: type, name: str) -> str:
    """The role (RESULT, RUN or CELL) declared on field `name` of config class `cls`."""
    return {f.name: f for f in dataclasses.fields(cls)}[name].metadata["role"]


def fields_with_role(cls: type, role: str) -> frozenset[str]:
    """The names of `cls`'s fields declared with `role`."""
    return frozenset(f.name for f in dataclasses.fields(cls) if f.metadata.get("role") == role)


def results_identity(config: Any) -> dict[str, Any]:
    """`config`'s RESULT fields as nested JSON values (tuples become lists); RUN and CELL fields are
    left out, nested configs recursed into. What two runs must share to have the same results."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        if f.metadata["role"] != RESULT:
            continue
        value = getattr(config, f.name)
        out[f.name] = results_identity(value) if dataclasses.is_dataclass(value) else _json(value)
    return out


def _json(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_json(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _json(v) for k, v in value.items()}
    return value


# ----------------------------------------------------------------------------- checks


def check_resolution(resolution: int) -> int:
    """Return `resolution` if it is a power of two in [32, 512]; raise ConfigError otherwise."""
    r = int(resolution)
    if r < MIN_RESOLUTION or r > MAX_RESOLUTION or r & (r - 1):
        raise ConfigError(
            f"resolution {resolution} is not a power of two in [{MIN_RESOLUTION}, {MAX_RESOLUTION}] "
            "(use 32, 64, 128, 256 or 512)"
        )
    return r


def check_device_name(name: str) -> str:
    """Return `name` if it is spelled like a torch device ("cpu", "cuda", "cuda:N", "mps", ...);
    ConfigError otherwise. Does not look at this machine (see `check_device`)."""
    if not re.fullmatch(r"[a-z]+(:\d+)?", name):
        raise ConfigError(f"unknown device {name!r} (use cpu, cuda or cuda:N)")
    return name


def check_device(name: str) -> str:
    """Return `name` if this machine has that device ("cpu", "cuda", "cuda:N", ...); ConfigError
    otherwise. torch is imported only for a device other than "cpu"."""
    if check_device_name(name) == "cpu":
        return name
    import torch

    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r} (use cpu, cuda or cuda:N)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} requested but CUDA is not available (use cpu)")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ConfigError(f"device {name!r} requested but this machine has {count} CUDA device(s)")
    return name


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def _check_ranges(config: Any) -> None:
    """Every number field declared `within=(low, high)` (dataclass metadata): finite, >= low and
    <= high (None: no highest). One place for every field's range; run after `_check_types`."""
    for f in dataclasses.fields(config):
        if "within" not in f.metadata or (value := getattr(config, f.name)) is None:
            continue
        low, high = f.metadata["within"]
        if isinstance(value, float) and not (math.isfinite(value) and value >= low):
            raise ConfigError(f"{f.name} must be a finite number >= {low}, got {value}")
        if value < low:
            raise ConfigError(f"{f.name} must be at least {low}, got {value}")
        if high is not None and value > high:
            raise ConfigError(f"{f.name} must be at most {high:,}, got {value:,}")


def _check_betas(config: Any) -> None:
    """What Adam accepts: betas in [0, 1)."""
    if len(config.betas) != 2 or not all(math.isfinite(b) and 0 <= b < 1 for b in config.betas):
        raise ConfigError(f"betas must be two numbers in [0, 1), got {list(config.betas)}")


def _check_lambda(lam: float) -> None:
    if not math.isfinite(lam) or lam < 0:
        raise ConfigError(f"lambda must be a finite number >= 0, got {lam}")


_KINDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("none" if a is type(None) else _describe(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_describe(args[0]).removeprefix('a ').removeprefix('an ')}s"
        return f"a list of {len(args)} {_describe(args[0]).removeprefix('a ').removeprefix('an ')}s"
    if origin is dict:
        return "a table"
    return _KINDS.get(hint, getattr(hint, "__name__", str(hint)))


def _coerce(value: Any, hint: Any, name: str) -> Any:
    """`value` as type `hint` (ints for floats, lists for tuples); ConfigError on any other mismatch."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            return _coerce(value, arg, name)
    ok = True
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif hint is str:
        ok = isinstance(value, str)
    elif origin is tuple:
        ok = isinstance(value, tuple | list) and (
            (len(args) == 2 and args[1] is Ellipsis) or len(value) == len(args)
        )
        if ok:
            items = args[:1] * len(value) if args[-1] is Ellipsis else args
            value = tuple(_coerce(v, a, name) for v, a in zip(value, items, strict=True))
    elif origin is dict:
        ok = isinstance(value, Mapping) and all(isinstance(k, str) for k in value)
        value = {k: _coerce(v, args[1], f"{name}.{k}") for k, v in value.items()} if ok else value
    elif dataclasses.is_dataclass(hint):
        ok = isinstance(value, hint)
    if not ok:
        raise ConfigError(f"{name} must be {_describe(hint)}, got {value!r}")
    return value


def _check_types(config: Any) -> None:
    """Coerce every field of `config` to its annotated type in place (see `_coerce`)."""
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        setattr(config, f.name, _coerce(getattr(config, f.name), hints[f.name], f.name))


# ----------------------------------------------------------------------------- the configs


@dataclass
class DataConfig:
    """Which images to train on and at what size."""

    spec: str = run_only(
        "phantom", help="phantom, phantom:N, busi (looked for; docs/data.md), a BUSI or an image folder."
    )
    resolution: int = result(128, help=f"Image side R, a power of two in {MIN_RESOLUTION}..{MAX_RESOLUTION}.")
    classes: tuple[str, ...] | None = result(None, help="The classes to keep (None: all).")
    holdout: float = result(
        0.0, help="Share of each class held out of training, images of one lesion kept together."
    )
    split_seed: int = result(0, help="Seed of the held-out split (with the data's content fingerprint).")

    def __post_init__(self) -> None:
        _check_types(self)
        self.resolution = check_resolution(self.resolution)
        if not 0.0 <= self.holdout < 1.0:
            raise ConfigError(f"data.holdout must be in [0, 1), got {self.holdout}")


@dataclass
class ModelConfig:
    """Which registered architecture (lossbench.models) builds the generator and critic."""

    arch: str = result("dgan", help="Registered architecture (lossbench.models).")
    kwargs: dict[str, Any] = result(factory=dict, help="Extra architecture-specific arguments.")

    def __post_init__(self) -> None:
        _check_types(self)


@dataclass
class TrainConfig:
    """One training run of DGAN-WP-TL with one adversarial loss and one λ."""

    loss: str = per_cell("wgangp", help="Adversarial loss (see `lossbench losses list`).")
    loss_params: dict[str, Any] = per_cell(factory=dict, help="The loss's hyper-parameters (docs/losses.md).")
    lam: float = per_cell(5.0, help="Perceptual-loss weight λ (0: no perceptual loss).")
    seed: int = per_cell(0, within=(0, None), help="Seed of weights, data order, noise and samples.")
    steps: int = result(2000, within=(1, MAX_STEPS), help="Generator steps.")
    batch_size: int = result(64, within=(1, MAX_BATCH), help="Images per batch.")
    lr_g: float = result(1e-4, within=(0, None), help="Generator learning rate (0 freezes it).")
    lr_d: float = result(1e-4, within=(0, None), help="Critic learning rate (0 freezes it).")
    betas: tuple[float, float] = result((0.0, 0.9), help="Adam's betas, both networks.")
    n_critic: int | None = result(
        None, within=(1, MAX_WIDTH), help="Critic steps per generator step (None: the loss's own)."
    )
    model: ModelConfig = result(factory=ModelConfig, help="The architecture that builds G and D.")
    z_dim: int = result(128, within=(1, MAX_WIDTH), help="Length of the generator's noise vector z.")
    g_width: int = result(
        64, within=(1, MAX_WIDTH), help="Channels of the generator's last hidden layer, doubled per stage up."
    )
    d_width: int = result(64, within=(1, MAX_WIDTH), help="Channels of the critic's first layer.")
    critic_norm: str = result(
        "instancenorm", help="The critic's normalisation (never BatchNorm; docs/training.md)."
    )
    perceptual: str = result("vgg16", help="vgg16, vgg19, none or a registered feature network.")
    perceptual_layers: tuple[str, ...] = result(
        ("relu1_2", "relu2_2", "relu3_3", "relu4_3"), help="The perceptual network's layers compared."
    )
    perceptual_distance: str = result("l1", help="Distance between features.")
    perceptual_pairing: str = result(
        "mean", help="Each fake against the batch-mean real features (mean) or real i (paired)."
    )
    ema_decay: float = result(0.999, help="Decay of the generator's exponential moving average, in [0, 1).")
    augment: tuple[str, ...] = result((), help="DiffAugment policies (differentiable augmentation).")
    conditional: bool = result(
        False, help="Class-conditional generator and projection critic (labels from the data)."
    )
    device: str = run_only("cpu", help="cpu, cuda, cuda:1, ...")
    amp: bool = result(
        True, help="bf16 autocast where the device computes bf16 natively (lossbench.precision)."
    )
    channels_last: bool = result(True, help="Channels-last memory format (CUDA only).")
    checkpoint_every: int = run_only(500, within=(1, MAX_STEPS), help="Steps between checkpoints.")
    log_every: int = run_only(10, within=(1, MAX_STEPS), help="Steps between logged losses.")
    health_every: int = run_only(
        50, within=(0, MAX_STEPS), help="Steps between training-health probes (lossbench.health; 0: never)."
    )
    sample_every: int = run_only(
        500, within=(0, MAX_STEPS), help="Steps between sample grids (0: the final one only)."
    )
    random_weights: bool = result(
        False, help="Explicit opt-in to random weights for the pretrained networks (demos, tests)."
    )
    weights_dir: str | None = run_only(None, help="Extra folder searched first for weight files.")
    progress: bool = run_only(True, help="A progress bar on stderr (shown only on a terminal).")
    n_samples: int = run_only(
        64, within=(1, MAX_BATCH), help="Images in the sample grids (fixed z from `seed`, EMA generator)."
    )

    def __post_init__(self) -> None:
        _check_types(self)
        _check_ranges(self)
        _check_lambda(self.lam)
        _check_betas(self)
        _check_choice("critic_norm", self.critic_norm, CRITIC_NORMS)
        _check_choice("perceptual_distance", self.perceptual_distance, PERCEPTUAL_DISTANCES)
        _check_choice("perceptual_pairing", self.perceptual_pairing, PERCEPTUAL_PAIRINGS)
        unknown = [a for a in self.augment if a not in AUGMENTATIONS]
        if unknown:
            raise ConfigError(f"unknown augmentation {unknown[0]!r} (known: {', '.join(AUGMENTATIONS)})")
        if not 0 <= self.ema_decay < 1:
            raise ConfigError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        self.device = check_device(self.device)

    @property
    def uses_perceptual(self) -> bool:
        return self.lam > 0 and self.perceptual != "none"

    @property
    def warnings(self) -> list[str]:
        """One line per setting that is allowed but known to spoil training (the CLI prints them)."""
        if self.uses_perceptual and self.perceptual_pairing == "paired":
            return [
                'perceptual_pairing "paired" compares each fake with an unrelated real image of its batch: '
                "it pulls noise-driven fakes toward the mean image (docs/training.md)"
            ]
        return []


@dataclass
class EvalConfig:
    """How generated images are scored. Every field is logged beside the numbers it produces."""

    metrics: tuple[str, ...] = result(
        ("fid", "kid", "lpips", "msssim"), help="Metrics computed (`lossbench metrics`)."
    )
    n_fake: int = result(1000, within=(2, MAX_IMAGES), help="Generated images per evaluation.")
    feature_extractor: str = result("inception-v3-compat", help="FID/KID feature extractor.")
    kid_subset_size: int | None = result(
        None, within=(2, MAX_IMAGES), help="KID subset size (None: min(1000, n_real, n_fake))."
    )
    kid_subsets: int = result(100, within=(1, MAX_RESAMPLES), help="KID subsets (torch-fidelity's default).")
    prc_extractor: str = result(
        "vgg16", help="Features of precision/recall and density/coverage (torch-fidelity's PRC default)."
    )
    extra_extractors: tuple[str, ...] = result(
        (), help="Feature metrics again in each of these spaces (keys `fid.<name>`)."
    )
    swd_directions: int = result(
        128, within=(1, MAX_RESAMPLES), help="Random projections of the sliced Wasserstein distance."
    )
    n_pairs: int = result(
        500, within=(1, MAX_IMAGES), help="Random disjoint pairs for LPIPS / MS-SSIM fake-fake and real-real."
    )
    utility_seeds: int = result(
        3, within=(1, MAX_PROCESSES), help="Classifier seeds of the downstream utility."
    )
    utility_steps: int = result(
        1200, within=(1, MAX_STEPS), help="Optimiser steps per utility classifier (~60 epochs of BUSI)."
    )
    utility_classifier: str = result(
        "resnet", help="The utility's judge (lossbench.metrics.judges; cnn3: fast, weak)."
    )
    utility_width: int = result(32, within=(1, MAX_WIDTH), help="The judge's first-layer channels.")
    utility_augment: bool = result(True, help="Classic augmentation while the judge trains.")
    utility_ratio: float = result(
        0.0, within=(0, None), help="Synthetic images added: 0 balances the classes; r adds r × N_train."
    )
    utility_bootstrap: int = result(
        1000, within=(1, MAX_RESAMPLES), help="Held-out resamples for the utility's confidence intervals."
    )
    batch_size: int = result(
        100, within=(1, MAX_BATCH), help="Images per batch of the evaluation's networks."
    )
    seed: int = result(0, within=(0, None), help="Seed of the generated images, pairs and projections.")
    bootstrap: int = result(
        0, within=(0, MAX_RESAMPLES), help="Resamples of the fakes for the standard errors `*_se` (0: none)."
    )
    cache_dir: str | None = run_only(None, help="Real-feature cache (None: <root>/feature-cache).")
    random_weights: bool = result(
        False, help="Explicit opt-in to random extractor weights (demos, tests); tagged on every result."
    )
    weights_dir: str | None = run_only(None, help="Extra folder searched first for weight files.")

    def __post_init__(self) -> None:
        _check_types(self)
        _check_ranges(self)
        if self.bootstrap == 1:
            raise ConfigError("eval.bootstrap must be 0 (none) or at least 2 resamples")
        if self.utility_classifier not in UTILITY_CLASSIFIERS:
            known = ", ".join(UTILITY_CLASSIFIERS)
            raise ConfigError(f"unknown utility_classifier {self.utility_classifier!r} (known: {known})")


@dataclass
class StudyConfig:
    """A (loss × λ × seed) grid and how to run it."""

    name: str = run_only("lossbench", help="Study name (MLflow experiment, Optuna study).")
    losses: tuple[str, ...] = result(("wgangp", "bce"), help="Losses of the grid.")
    lambdas: tuple[float, ...] = result((0.5, 3.0, 5.0, 7.0, 10.0), help="λ values of the grid.")
    seeds: tuple[int, ...] = result((0, 1, 2), help="Seeds of the grid.")
    loss_params: dict[str, dict[str, Any]] = result(factory=dict, help="Loss name -> its hyper-parameters.")
    data: DataConfig = result(
        factory=lambda: DataConfig(spec="busi", holdout=0.2), help="The images (lossbench.data)."
    )
    train: TrainConfig = result(factory=TrainConfig, help="Each cell's training, but for its cell fields.")
    eval: EvalConfig = result(factory=EvalConfig, help="How each cell is scored.")
    objective: str = result(
        "fid", help="The metric each trial reports: fid, kid, lpips, msssim, utility_gain, ..."
    )
    eval_every: int = result(
        0, within=(0, MAX_STEPS), help="Steps between curve evaluations (0: at the end only)."
    )
    curve_metrics: tuple[str, ...] = result(
        ("swd", "msssim"),
        help="Cheap metrics evaluated every `eval_every` steps (MLflow curves `eval/<key>`).",
    )
    best_metric: str | None = result(
        None,
        help="Chooses the generator kept as best.pt (None: the objective if a curve metric, else the first).",
    )
    threads: int = result(
        1, within=(1, MAX_PROCESSES), help="torch CPU threads per cell (results depend on it)."
    )
    # lossbench.training.fused: a worker trains up to `fuse` waiting cells of one loss as one grouped
    # network; their numbers equal the unfused ones up to float rounding.
    fuse: int = result(
        1,
        within=(1, MAX_PROCESSES),
        help="Cells of one loss a worker trains as one fused group (docs/study.md).",
    )
    storage: str | None = run_only(
        None, help="Optuna storage: RDB URL or journal file (None: the root's journal)."
    )
    tracking_uri: str | None = run_only(None, help="MLflow tracking URI (None: the root's store).")
    workers: int = run_only(
        1,
        within=(0, MAX_PROCESSES),
        help="Worker processes (0: the cells run in this process, for a debugger).",
    )
    devices: tuple[str, ...] = run_only(("cpu",), help="cpu, or cuda:0,cuda:1 (round-robin).")
    # RDB storages (several machines): a worker records a heartbeat every `heartbeat_s` seconds; a
    # RUNNING trial without one for `grace_s` seconds is failed by whichever machine notices, and a
    # worker that cannot reach the database retries for at most `grace_s` seconds (docs/cluster.md).
    heartbeat_s: int = run_only(
        60, within=(1, None), help="Seconds between a worker's heartbeats (RDB storages)."
    )
    grace_s: int = run_only(
        180, within=(1, None), help="Seconds without a heartbeat after which a trial is failed and requeued."
    )

    def __post_init__(self) -> None:
        _check_types(self)
        _check_ranges(self)
        for axis, item in (
            ("losses", "loss"),
            ("lambdas", "lambda"),
            ("seeds", "seed"),
            ("devices", "device"),
        ):
            if not getattr(self, axis):
                raise ConfigError(f"a study needs at least one {item}")
        for lam in self.lambdas:
            _check_lambda(lam)
        if min(self.seeds) < 0:
            raise ConfigError(f"seeds must be >= 0, got {min(self.seeds)}")
        if self.grace_s <= self.heartbeat_s:
            raise ConfigError(f"grace_s ({self.grace_s}) must exceed heartbeat_s ({self.heartbeat_s})")
        for device in self.devices:  # spelling only: a study file may be written for another machine;
            check_device_name(device)  # the study checks `check_device` before it starts workers


@dataclass
class RunConfig:
    """One `lossbench train` run: a TOML file with [data] and [train] tables."""

    data: DataConfig = result(factory=DataConfig, help="The images (lossbench.data).")
    train: TrainConfig = result(factory=TrainConfig, help="The training run.")

    def __post_init__(self) -> None:
        _check_types(self)


def to_dict(config: Any) -> dict[str, Any]:
    """A dataclass config as a plain, JSON-serialisable dict (tuples become lists)."""
    return dataclasses.asdict(config)


# ----------------------------------------------------------------- files and overrides


def _unknown(key: str, known: list[str]) -> str:
    """'unknown key ... (did you mean ...?)', or listing every known key when none is close."""
    parent, _, leaf = key.rpartition(".")
    siblings = {k.rpartition(".")[2]: k for k in known if k.rpartition(".")[0] == parent}
    close = [siblings[k] for k in difflib.get_close_matches(leaf, list(siblings), n=3, cutoff=0.6)]
    close = close or difflib.get_close_matches(key, known, n=3, cutoff=0.8)
    hint = f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(known)}"
    return f"unknown key {key!r} ({hint})"


def _check_keys(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        message = _unknown(unknown[0], sorted(allowed))
        raise ConfigError(message.replace(" (", f" in {where} (", 1))


def _build(cls: type, values: Mapping[str, Any], where: str) -> Any:
    try:
        return cls(**values)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


def config_from_dict(
    cls: type, raw: Mapping[str, Any], where: str, exclude: Mapping[str, frozenset[str]] | None = None
) -> Any:
    """A `cls` config from nested plain values (a parsed TOML file): each nested config is a table
    that updates that field's default; `exclude[table]` are keys that table may not set. Unknown keys
    and bad values are one-line ConfigErrors naming `where`."""
    exclude = exclude or {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a table, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    _check_keys(raw, set(fields), where)
    values = dict(raw)
    for name, f in fields.items():
        hint = typing.get_type_hints(cls)[name]
        if not dataclasses.is_dataclass(hint) or isinstance(values.get(name), hint):
            continue
        table = values.get(name, {})
        inner = f"[{name}] of {where}"
        if not isinstance(table, Mapping):
            raise ConfigError(f"[{name}] in {where} must be a table")
        _check_keys(table, {g.name for g in dataclasses.fields(hint)} - exclude.get(name, frozenset()), inner)
        base = f.default_factory() if f.default_factory is not dataclasses.MISSING else hint()
        values[name] = config_from_dict(hint, {**_shallow(base), **table}, inner)
    return _build(cls, values, where)


def _shallow(config: Any) -> dict[str, Any]:
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}


def load_toml(path: str | os.PathLike, what: str) -> dict[str, Any]:
    """A TOML file's tables; one-line ConfigError when it is missing or malformed."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{what} file {path} does not exist (see studies/ for examples)") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{what} file {path} is not UTF-8 text (byte {e.start})") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{what} file {path} is not valid TOML: {e}") from None


def parse_assignments(
    items: list[str], option: str = "--set", example: str = "train.steps=10"
) -> dict[str, Any]:
    """['train.steps=5', 'data.spec=phantom:24'] -> {'train.steps': 5, 'data.spec': 'phantom:24'}.

    The one key=value syntax of the command line (`--set`, `--loss-param`): a value is read as a TOML
    literal (5, 1e-4, true, [0, 1], "text"), as in study files; anything that is not one is a
    string. Keys are dotted paths into the config (`--set`) or names of a loss's keywords."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"malformed {option} {item!r}: expected key=value, e.g. {example}")
        try:
            out[key.strip()] = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            out[key.strip()] = text.strip()
    return out


def dotted_keys(cls: type, exclude: Mapping[str, frozenset[str]] | None = None) -> list[str]:
    """Every settable key of `cls` as a dotted path ('train.steps'), nested configs expanded."""
    keys = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            skip = (exclude or {}).get(f.name, frozenset())
            keys += [f"{f.name}.{k}" for k in dotted_keys(hints[f.name]) if k not in skip]
        else:
            keys.append(f.name)
    return keys


def with_overrides(
    config: Any, overrides: Mapping[str, Any], exclude: Mapping[str, frozenset[str]] | None = None
) -> Any:
    """A copy of `config` with dotted keys replaced (`"train.steps": 5`, `"losses": [...]`).

    None values are skipped (unset command-line options leave the value in place); a dict value for
    a dict field (e.g. `loss_params`) is merged one level deep. An unknown key is a ConfigError that
    lists close matches."""
    raw = _nested(config)
    known = dotted_keys(type(config), exclude)
    for key, value in overrides.items():
        if value is None:
            continue
        head = key.partition(".")[0]
        if key not in known and not (head in known and isinstance(raw[head], Mapping)):
            raise ConfigError(_unknown(key, known))
        *parents, leaf = key.split(".")
        table = raw
        for part in parents:
            table = table.setdefault(part, {})
        table[leaf] = _merge(table.get(leaf), value)
    for section, names in (exclude or {}).items():
        for name in names:
            raw[section].pop(name, None)
    return config_from_dict(type(config), raw, "the options", exclude)


def _merge(old: Any, new: Any) -> Any:
    """`new`, with tables merged into `old`'s recursively."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        return {**old, **{k: _merge(old.get(k), v) for k, v in new.items()}}
    return new


def _nested(config: Any) -> dict[str, Any]:
    """Field values, nested configs as dicts (tuples and dicts kept as they are)."""
    return {
        f.name: _nested(v) if dataclasses.is_dataclass(v := getattr(config, f.name)) else v
        for f in dataclasses.fields(config)
    }


# ------------------------------------------------------------- comma-separated options


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


def lambda_text(lam: float) -> str:
    """λ as lossbench writes it everywhere (tags, params, run and folder names, tables): 15
    significant digits, so distinct values stay distinct (0.5 -> "0.5", 5.0 -> "5", 1e-07)."""
    return f"{lam:.15g}"


def lambda_label(lam: float) -> str:
    """λ as a label in tables, plots, run names and sentences: "λ=0.5"."""
    return f"λ={lambda_text(lam)}"


@dataclass(frozen=True)
class AnalysisConfig:
    """Every default of the statistics (`analysis.analyze`, `lossbench stats` and `report`), in one
    place: the CLI's options, the functions' defaults and the texts that name a level read them."""

    alpha: float = 0.05  # significance level of every verdict
    correction: str = "holm"  # a key of CORRECTIONS
    bootstrap: bool = False  # BCa bootstrap CIs instead of t-based ones
    n_resamples: int = 9999  # bootstrap resamples
    seed: int = 0  # of the bootstrap
    confidence: float = 0.95  # of every CI
    power: float = 0.8  # at which detectable differences and needed seeds are reported


ANALYSIS = AnalysisConfig()
#: Multiple-testing corrections: statsmodels `multipletests` method -> name shown.
CORRECTIONS = {"holm": "Holm", "fdr_bh": "Benjamini-Hochberg"}
