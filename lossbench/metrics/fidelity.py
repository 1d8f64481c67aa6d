"""FID, KID and precision/recall through torch-fidelity, on features extracted (and cached) by lossbench.

Conventions are torch-fidelity's: extractors take uint8 N×3×H×W (grayscale is repeated to 3
channels here) and resize internally (Inception: bilinear, TF1-compatible, to 299×299); input 1 is
generated, input 2 is real. FID and KID share the extractor's default FID layer (2048 for Inception),
precision/recall uses its default PRC layer. The metric formulas are torch-fidelity's own functions.
Any name in torch-fidelity's extractor registry works, including ones a user registers at run time.
"""

from __future__ import annotations

import functools
import io
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric
from torch_fidelity.metric_prc import KEY_METRIC_PRECISION, KEY_METRIC_RECALL, prc_features_to_metric
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY
from torch_fidelity.utils import create_feature_extractor

from lossbench import weights
from lossbench.errors import ConfigError, WeightsDigestError, first_line
from lossbench.metrics.builtin import WEIGHT_KEYS
from lossbench.metrics.encoder import PREFIX as ENCODER_PREFIX
from lossbench.metrics.encoder import register_encoder
from lossbench.metrics.extractors import register_extractors

#: torch-fidelity's k of the k-NN manifold estimate in precision/recall.
PRC_NEIGHBORHOOD = 3


@dataclass(frozen=True)
class Extractor:
    """A feature extractor ready to run: registry name, layer used, module, weights file name or "none"."""

    name: str
    layer: str
    module: FeatureExtractorBase
    weights: str

    @property
    def identity(self) -> dict[str, str]:
        """What the features depend on, for cache keys."""
        cls = type(self.module)
        return {
            "extractor": self.name,
            "class": f"{cls.__module__}.{cls.__qualname__}",
            "layer": self.layer,
            "weights": self.weights,
        }


def _weights_path(name: str, weights_dir: str | os.PathLike | None) -> Path | None:
    """The pretrained file of extractor `name`, None for extractors lossbench does not manage."""
    if name not in WEIGHT_KEYS:
        return None
    return weights.find_weights(WEIGHT_KEYS[name], weights_dir)


@functools.lru_cache(maxsize=4)
def _build(name: str, layer: str, weights_path: str | None, device: str) -> FeatureExtractorBase:
    """torch-fidelity's extractor `name`; a managed file is unpickled by lossbench only (weights_only).

    torch-fidelity's Inception and VGG16 call `torch.load(path, weights_only=False)` on the path they
    get. They get instead an in-memory file that lossbench wrote, holding meta tensors of the verified
    state dict's shapes, and are built on the meta device; the real tensors are then assigned."""
    if weights_path is None:
        return create_feature_extractor(name, [layer], cuda=False, verbose=False).to(device)
    state = weights.load_state_dict(WEIGHT_KEYS[name], weights_path)
    shapes = io.BytesIO()
    torch.save({k: torch.empty_like(v, device="meta") for k, v in state.items()}, shapes)
    shapes.seek(0)
    try:
        with torch.device("meta"):
            module = create_feature_extractor(
                name, [layer], cuda=False, verbose=False, feature_extractor_weights_path=shapes
            )
        target = module.model if name == "vgg16" else module  # torch-fidelity's VGG16 wraps torchvision's
        kept = target.state_dict().keys()  # VGG16 drops the classifier's last layers after loading
        target.load_state_dict({k: v for k, v in state.items() if k in kept}, assign=True)
    except RuntimeError as e:
        raise WeightsDigestError(
            f"weight file {weights_path} does not fit torch-fidelity's {name} ({first_line(e)})"
        ) from None
    return module.requires_grad_(False).eval().to(device)


def load_extractor(
    name: str, metric: str = "fid", weights_dir: str | os.PathLike | None = None, device: str = "cpu"
) -> Extractor:
    """The registered extractor `name` with its default layer for `metric` ("fid" or "prc");
    `encoder:FILE` registers a domain encoder file first (`lossbench.metrics.encoder`)."""
    register_extractors()  # lossbench's own extractors are always available by name
    if name.startswith(ENCODER_PREFIX):
        name = register_encoder(name)
    if name not in FEATURE_EXTRACTORS_REGISTRY:
        raise ConfigError(
            f"unknown feature extractor {name!r} (registered in torch-fidelity: "
            f"{', '.join(sorted(FEATURE_EXTRACTORS_REGISTRY))})"
        )
    layer = FEATURE_EXTRACTORS_REGISTRY[name].get_default_feature_layer_for_metric(metric)
    path = _weights_path(name, weights_dir)
    module = _build(name, layer, str(path) if path else None, str(device))
    weights_id = getattr(FEATURE_EXTRACTORS_REGISTRY[name], "weights_id", "none")  # encoders: file@digest
    return Extractor(name, layer, module, path.name if path else weights_id)


@torch.no_grad()
def extract_features(
    extractor: Extractor, images: torch.Tensor, batch_size: int = 100, device: str = "cpu"
) -> torch.Tensor:
    """Features (float32 N×D, on CPU) of uint8 images N×C×H×W, C in {1, 3}, in batches on `device`."""
    out = []
    for batch in images.split(batch_size):
        batch = batch.to(device)
        if batch.shape[1] == 1:
            batch = batch.repeat(1, 3, 1, 1)
        out.append(extractor.module(batch)[0].float().cpu())
    return torch.cat(out)


def fid(fake: torch.Tensor, real: torch.Tensor) -> float:
    """Fréchet distance between the Gaussians fitted to two feature sets (torch-fidelity's code)."""
    stats = [fid_features_to_statistics(f) for f in (fake, real)]
    return fid_statistics_to_metric(*stats, verbose=False)[KEY_METRIC_FID]


def kid(
    fake: torch.Tensor, real: torch.Tensor, subset_size: int, subsets: int, seed: int
) -> tuple[float, float]:
    """KID mean and std over `subsets` random subsets (polynomial kernel, torch-fidelity's code)."""
    out = kid_features_to_metric(
        fake, real, kid_subset_size=subset_size, kid_subsets=subsets, rng_seed=seed, verbose=False
    )
    return out[KEY_METRIC_KID_MEAN], out[KEY_METRIC_KID_STD]


def precision_recall(fake: torch.Tensor, real: torch.Tensor) -> tuple[float, float]:
    """Improved precision and recall (k-NN manifolds, k = 3; torch-fidelity's code)."""
    out = prc_features_to_metric(
        fake, real, prc_neighborhood=PRC_NEIGHBORHOOD, save_cpu_ram=True, verbose=False
    )
    return out[KEY_METRIC_PRECISION], out[KEY_METRIC_RECALL]
