"""`evaluate`: score generated images against a real dataset with every requested metric.

Metrics come from the registry (`lossbench.metrics.registry`; `EvalConfig.metrics` holds names,
aliases or result keys). Fakes come from a generator (`lossbench.images.generate_images`: batches
under no_grad, eval mode, seeded with `EvalConfig.seed`; a class-conditional generator draws
classes in the real data's proportions, `fake_labels`) or are given as a uint8 tensor. A held-out
real part, when given, is there for the metrics that need one (copy detection, utility); what a
metric needs (`Metric.needs`) is checked before anything runs. Every metric's `prepare` (network
loading) runs before any fake is generated, so a missing weight file fails fast. Real-data
quantities (extractor features, real-real pair figures) are cached on disk (`lossbench.metrics.cache`).
The result separates `settings` (everything a number depends on) from `provenance` (how it was
obtained: cache hits) and `timings` (seconds per stage, exclusive).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from lossbench import precision
from lossbench.config import EvalConfig
from lossbench.errors import ConfigError
from lossbench.images import (
    class_labels,
    generate_images,
    is_conditional,
    proportional_counts,
    sample_classes,
)
from lossbench.metrics import cache, diversity, encoder, fidelity, noise
from lossbench.metrics.registry import check_needs, extractor_key, get_metric, resolve_metrics

if TYPE_CHECKING:
    from lossbench.data import ImageDataset

Settings = dict[str, str | int | float]
ClosestPairs = tuple[Tensor, Tensor, list[float]]  # fakes, their nearest training images (uint8), distances


@dataclass
class EvalResult:
    """Scores; the settings they depend on; how they were obtained (cache hits); FID-extractor
    features (fake, real) when FID or KID ran, with each row's class name (None for fakes of an
    unconditional generator); seconds spent per stage."""

    metrics: dict[str, float]
    settings: Settings
    provenance: dict[str, str] = field(default_factory=dict)
    fake_features: np.ndarray | None = None
    real_features: np.ndarray | None = None
    fake_classes: np.ndarray | None = None  # class name per fake (str array)
    real_classes: np.ndarray | None = None  # class name per real image (str array)
    timings: dict[str, float] = field(default_factory=dict)
    closest_pairs: ClosestPairs | None = None  # copy detection: nearest fakes and their training images


def _class_names(real: ImageDataset, labels: torch.Tensor | None) -> np.ndarray | None:
    """Class names for `labels` (indices into `real.class_names`) as a str array; None without labels."""
    if labels is None:
        return None
    return np.asarray(real.class_names, dtype=str)[labels.cpu().numpy()]


def _check_fakes(fakes: torch.Tensor, real: ImageDataset) -> torch.Tensor:
    if fakes.dtype != torch.uint8 or fakes.dim() != 4 or fakes.shape[1:] != real.images.shape[1:]:
        raise ConfigError(
            f"fake images must be a uint8 tensor N×{'×'.join(map(str, real.images.shape[1:]))} like the real "
            f"data, got {fakes.dtype} {tuple(fakes.shape)}"
        )
    if len(fakes) < 2:
        raise ConfigError(f"need at least 2 fake images, got {len(fakes)}")
    return fakes


class EvalState:
    """What the metrics of one evaluation share: inputs (`fakes`: uint8 N×C×R×R, `real`, `config`,
    `device`; `generator` and, when conditional, `fake_labels`; the `heldout` real part or None),
    loaded networks, the feature and real-data caches, and the outputs besides the scores
    (`settings`, `provenance`, `timings`)."""

    def __init__(
        self,
        real: ImageDataset,
        config: EvalConfig,
        device: str,
        heldout: ImageDataset | None = None,
        generator: nn.Module | None = None,
    ) -> None:
        self.real, self.config, self.device, self.heldout = real, config, device, heldout
        self.generator = generator
        self.fakes = torch.empty(0, dtype=torch.uint8)
        self.fake_labels: torch.Tensor | None = None
        self.folder = Path(config.cache_dir) if config.cache_dir else cache.DEFAULT_DIR
        self.data_key = {
            "dataset": real.fingerprint,
            "resolution": real.images.shape[-1],
            **precision.identity(device),  # CPU and GPU real features differ in rounding: never mixed
        }
        self.networks: dict[str, Any] = {}  # loaded by the metrics' `prepare`
        self.role_features: dict[str, tuple[Tensor, Tensor]] = {}  # role -> (fake, real) features
        self.settings: Settings = {}
        self.provenance: dict[str, str] = {}
        self.timings: dict[str, float] = {}
        self.closest_pairs: ClosestPairs | None = None
        self._features: dict[tuple[str, str], tuple[Tensor, Tensor, bool]] = {}  # by (extractor, layer)
        self._inner: list[float] = []  # seconds spent in nested stages, per open stage

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        """Add the seconds spent in the block, less those of stages nested in it, to `timings[stage]`."""
        start = time.perf_counter()
        self._inner.append(0.0)
        try:
            yield
        finally:
            spent = time.perf_counter() - start
            self.timings[stage] = self.timings.get(stage, 0.0) + spent - self._inner.pop()
            if self._inner:
                self._inner[-1] += spent

    def extractor(self, role: str, name: str) -> fidelity.Extractor:
        """Extractor `name` (torch-fidelity registry), default layer for `role` ("fid"/"prc"), loaded once."""
        key = f"extractor:{role}:{name}"
        if key not in self.networks:
            self.networks[key] = fidelity.load_extractor(name, role, self.config.weights_dir, self.device)
        return self.networks[key]

    def features(self, role: str, name: str) -> tuple[Tensor, Tensor]:
        """Fake and (cached) real features of extractor `name` for `role`, computed once per
        (extractor, layer); its settings are recorded as `{role}_extractor`, ... and the cache hit
        as provenance `{role}_cache`."""
        ext = self.extractor(role, name)
        if (ext.name, ext.layer) not in self._features:  # FID and PR on one extractor share features
            config = self.config
            with self.timed("real_features"):
                real_f, hit = cache.cached(
                    self.folder,
                    {"kind": "features", **self.data_key, **ext.identity},
                    lambda: fidelity.extract_features(ext, self.real.images, config.batch_size, self.device),
                )
            with self.timed("fake_features"):
                fake_f = fidelity.extract_features(ext, self.fakes, config.batch_size, self.device)
            self._features[ext.name, ext.layer] = fake_f, real_f, hit
        fake_f, real_f, hit = self._features[ext.name, ext.layer]
        self.provenance[f"{role}_cache"] = "hit" if hit else "miss"
        self.settings.update(
            {
                f"{role}_extractor": ext.name,
                f"{role}_layer": ext.layer,
                f"{role}_feature_dim": fake_f.shape[1],
                f"{role}_weights": ext.weights,
            }
        )
        self.role_features[role] = fake_f, real_f
        return fake_f, real_f

    def pairs(self, name: str, score: Callable[[Tensor, Tensor], Tensor], variant: str) -> dict[str, float]:
        """`{name}_ff` (+ std) over random disjoint fake pairs and the cached `{name}_rr` (+ std) over
        real pairs; `n_pairs` = min(config.n_pairs, n_fake // 2, n_real // 2), recorded."""
        config, device = self.config, self.device
        n_pairs = min(config.n_pairs, len(self.fakes) // 2, len(self.real.images) // 2)
        self.settings["n_pairs"] = n_pairs
        ff_values = diversity.pair_values(score, self.fakes, n_pairs, config.seed, config.batch_size, device)
        ff = diversity.mean_std(ff_values)
        rr, hit = cache.cached(
            self.folder,
            {"kind": name, **self.data_key, "variant": variant, "n_pairs": n_pairs, "seed": config.seed},
            lambda: torch.tensor(
                diversity.mean_std(
                    diversity.pair_values(
                        score, self.real.images, n_pairs, config.seed, config.batch_size, device
                    )
                )
            ),
        )
        self.provenance[f"{name}_rr_cache"] = "hit" if hit else "miss"
        out = {
            f"{name}_ff": ff[0],
            f"{name}_ff_std": ff[1],
            f"{name}_rr": rr[0].item(),
            f"{name}_rr_std": rr[1].item(),
        }
        if config.bootstrap:
            se = noise.bootstrap_se(
                lambda i: ff_values[i].mean().item(), n_pairs, config.bootstrap, config.seed
            )
            out[f"{name}_ff_se"] = se
        return out

    def heldout_features(self, role: str, name: str) -> Tensor:
        """Features of the held-out images for extractor `name` (cached like the real features)."""
        if self.heldout is None:  # `evaluate` checks the metrics' `needs` first
            raise ConfigError("no held-out part: a metric that reads one declares needs=('heldout',)")
        ext, heldout = self.extractor(role, name), self.heldout
        key = {"kind": "features", **self.data_key, "dataset": heldout.fingerprint}
        features, _ = cache.cached(
            self.folder,
            key | ext.identity,
            lambda: fidelity.extract_features(ext, heldout.images, self.config.batch_size, self.device),
        )
        return features


def _weights_kind(settings: Settings) -> str:
    """ "random" if any network ran with random weights, "pretrained" if one used a file, else "none"
    (from the `*_weights` settings: a file name, "none", or "random(...)")."""
    used = [str(v) for k, v in settings.items() if k.partition(".")[0].endswith("_weights")]
    if any(w.startswith("random") for w in used):
        return "random"
    return "pretrained" if any(w != "none" for w in used) else "none"


def _extra_states(metrics: list, state: EvalState) -> dict[str, EvalState]:
    """One state per `config.extra_extractors` entry (FID and PRC roles both on it), keyed by the
    extractor's registry name; the feature metrics' networks are loaded here, before any fake."""
    out: dict[str, EvalState] = {}
    for name in state.config.extra_extractors:
        config = replace(state.config, feature_extractor=name, prc_extractor=name, extra_extractors=())
        sub = EvalState(state.real, config, state.device, state.heldout)
        for metric in metrics:
            if metric.extractor_roles:
                metric.setup(sub)
        out[sub.extractor("fid", name).name] = sub
    return out


def _run_in_space(name: str, sub: EvalState, metrics: list, state: EvalState) -> dict[str, float]:
    """The feature metrics' scores in extractor `name`'s space, keys and settings suffixed `.name`."""
    sub.fakes = state.fakes
    scores: dict[str, float] = {}
    for metric in metrics:
        if metric.extractor_roles:
            with state.timed(extractor_key(metric.name, name)):
                scores.update({extractor_key(k, name): v for k, v in metric.run(sub).items()})
    own = {k: v for k, v in sub.settings.items() if state.settings.get(k) != v}
    state.settings.update({extractor_key(k, name): v for k, v in own.items()})
    return scores


@precision.fp32()
def evaluate(
    fake: nn.Module | torch.Tensor,
    real: ImageDataset,
    config: EvalConfig,
    device: str = "cpu",
    heldout: ImageDataset | None = None,
) -> EvalResult:
    """Score `fake` (a generator, or uint8 images N×C×R×R) against `real` (the training images) with
    `config.metrics`; `heldout`, real images the generator never saw, is the yardstick of the
    metrics that need one (copy detection, utility). In fp32 without TF32; the device type and
    precision are in the settings and the cache keys."""
    _check_encoders(config, real, heldout)
    return _evaluate(fake, real, config, device, heldout)


def _check_encoders(config: EvalConfig, real: ImageDataset, heldout: ImageDataset | None) -> None:
    """`encoder.check_split` of every domain encoder `config` names, on the whole train part."""
    for spec in {config.feature_extractor, config.prc_extractor, *config.extra_extractors}:
        if spec.startswith(encoder.PREFIX):
            encoder.check_split(spec, real, heldout)


def _evaluate(
    fake: nn.Module | torch.Tensor,
    real: ImageDataset,
    config: EvalConfig,
    device: str,
    heldout: ImageDataset | None,
) -> EvalResult:
    """`evaluate` once its encoders' splits were checked (on the whole train part: a class's part
    of it, `evaluate_per_class`, has another fingerprint)."""
    metrics = [get_metric(name) for name in resolve_metrics(config.metrics)]
    generator = fake if isinstance(fake, nn.Module) else None
    check_needs(
        config.metrics,
        heldout=heldout is not None,
        conditional=generator is not None and is_conditional(generator),
    )
    state = EvalState(real, config, device, heldout, generator)
    extra = _extra_states(metrics, state)
    for metric in metrics:
        metric.setup(state)
    if generator is not None:
        with state.timed("generate"):
            if is_conditional(generator):
                counts = proportional_counts(real.labels, generator.n_classes, config.n_fake)
                state.fake_labels = class_labels(counts)
            fake = generate_images(
                generator, config.n_fake, config.seed, config.batch_size, device, state.fake_labels
            )
    state.fakes = _check_fakes(fake, real)
    state.settings.update(
        resolution=real.images.shape[-1],
        seed=config.seed,
        n_fake=len(state.fakes),
        n_real=len(real.images),
        real_fingerprint=real.fingerprint[:16],
        **precision.identity(device),
    )
    if heldout is not None:
        state.settings.update(n_heldout=len(heldout), heldout_fingerprint=heldout.fingerprint[:16])
    scores: dict[str, float] = {}
    for metric in metrics:
        with state.timed(metric.name):
            scores.update(metric.run(state))
    for name, sub in extra.items():
        scores.update(_run_in_space(name, sub, metrics, state))
    state.settings["weights"] = _weights_kind(state.settings)
    fid_features = state.role_features.get("fid")
    return EvalResult(
        metrics=scores,
        settings=state.settings,
        provenance=state.provenance,
        fake_features=fid_features[0].numpy() if fid_features else None,
        real_features=fid_features[1].numpy() if fid_features else None,
        fake_classes=_class_names(real, state.fake_labels) if fid_features else None,
        real_classes=_class_names(real, real.labels) if fid_features else None,
        timings=state.timings,
        closest_pairs=state.closest_pairs,
    )


def evaluate_per_class(
    generator: nn.Module,
    real: ImageDataset,
    config: EvalConfig,
    device: str = "cpu",
    heldout: ImageDataset | None = None,
) -> dict[str, EvalResult]:
    """Class name -> `config.metrics` of a conditional generator's fakes of that class against the real
    images of that class. `n_fake` is split over the classes as the real labels are (at least 2 per
    class); metrics that need a held-out part or a generator (`Metric.needs`) are left out. With
    `heldout`, each class's held-out images are that class's held-out part (FID's yardstick,
    `fid_heldout`, per class)."""
    if not is_conditional(generator):
        raise ConfigError(
            "per-class evaluation needs a class-conditional generator (train.conditional = true)"
        )
    metrics = tuple(m for m in resolve_metrics(config.metrics) if not get_metric(m).needs)
    _check_encoders(config, real, heldout)
    counts = proportional_counts(real.labels, generator.n_classes, config.n_fake)
    out: dict[str, EvalResult] = {}
    for k, name in enumerate(real.class_names):
        n = max(2, counts[k])
        fakes, _ = sample_classes(generator, [n if j == k else 0 for j in range(generator.n_classes)],
                                  config.seed, config.batch_size, device)  # fmt: skip
        held = _class_part(heldout, k) if heldout is not None else None
        out[name] = _evaluate(
            fakes, _class_part(real, k), replace(config, metrics=metrics, n_fake=n), device, held
        )
    return out


def _class_part(data: ImageDataset, k: int) -> ImageDataset:
    """The images of class `k` of `data` as a one-class dataset, fingerprinted by its content."""
    from lossbench.data import fingerprint

    name = data.class_names[k]
    images = data.images[data.labels == k]
    labels = torch.zeros(len(images), dtype=torch.int64)
    return replace(
        data, images=images, labels=labels, class_names=(name,), skipped=[], sizes=None,
        fingerprint=fingerprint(images, labels, (name,)),
    )  # fmt: skip


def release_networks() -> None:
    """Drop the feature networks kept between evaluations (extractors, LPIPS) and, on CUDA, the
    memory they held: a study's parent calls it after its preflight, before its workers evaluate."""
    fidelity._build.cache_clear()
    diversity._lpips.cache_clear()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
