"""`lossbench-tiny`: a deterministic, weight-free feature extractor in torch-fidelity's registry.

It exists so that FID/KID/precision-recall run end to end with no pretrained file (tests, the
offline demo). Its numbers are NOT comparable with Inception FIDs from the literature; every
result computed with it carries `extractor=lossbench-tiny` in its settings.

Features (layer "128"), from uint8 N×3×H×W images (H, W >= 9), luminance = channel mean / 255:
- 64 values: the luminance average-pooled to an 8×8 grid;
- 64 values: the absolute finite-difference gradient |∂x| + |∂y| of the luminance, pooled to 8×8.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.helpers import vassert
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

TINY = "lossbench-tiny"


class TinyExtractor(FeatureExtractorBase):
    """Pooled luminance and gradient magnitude on an 8×8 grid: 128 features per image, no weights."""

    GRID = 8

    def __init__(self, name: str, features_list: list[str], **kwargs) -> None:
        super().__init__(name, features_list)

    @staticmethod
    def get_provided_features_list() -> tuple[str, ...]:
        return ("128",)

    @staticmethod
    def get_default_feature_layer_for_metric(metric: str) -> str:
        return "128"

    @staticmethod
    def can_be_compiled() -> bool:
        return False

    @staticmethod
    def get_dummy_input_for_compile() -> torch.Tensor:
        return torch.zeros(1, 3, 16, 16, dtype=torch.uint8)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        vassert(
            torch.is_tensor(x) and x.dtype == torch.uint8,
            "Expecting image as torch.Tensor with dtype=torch.uint8",
        )
        vassert(x.dim() == 4 and x.shape[1] == 3, f"Input is not Bx3xHxW: {x.shape}")
        lum = x.float().mean(1, keepdim=True) / 255
        dx = (lum[..., :, 1:] - lum[..., :, :-1]).abs()[..., :-1, :]
        dy = (lum[..., 1:, :] - lum[..., :-1, :]).abs()[..., :, :-1]
        pooled = [F.adaptive_avg_pool2d(t, self.GRID).flatten(1) for t in (lum, dx + dy)]
        return (torch.cat(pooled, dim=1),)


def register_extractors() -> None:
    """Register `lossbench-tiny` in torch-fidelity's registry; safe to call any number of times."""
    if TINY not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor(TINY, TinyExtractor)


register_extractors()
