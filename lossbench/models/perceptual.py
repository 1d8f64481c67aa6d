"""The perceptual loss of DGAN-WP-TL ("TL": transfer learning from a frozen ImageNet network).

L_perc(fake, real) = Σ_layers mean d(φ_l(fake), φ_l(real))  (Johnson et al. 2016: a sum over layers
of per-layer means), where
- φ is a frozen feature network, VGG16 by default, VGG19 with `network="vgg19"`;
- inputs in [-1, 1] are mapped to [0, 1], grayscale is repeated to 3 channels and normalised with
  the ImageNet mean and std, the statistics the network was trained with;
- layers are named VGG-style, counted from 1 in each block between poolings: `conv{b}_{i}`,
  `relu{b}_{i}`, `pool{b}` (default relu1_2, relu2_2, relu3_3, relu4_3);
- d is "l1" (mean absolute difference, default) or "mse";
- pairing "mean" (default) compares the batch-mean features (feature matching); "paired" compares
  fake i with real i of the batch (equal batch sizes), a regression to the mean image when G's
  input is noise (docs/training.md).

The trainer calls `prepare` once: the frozen network in bf16 when autocast is on (autocast caches
its casts only for weights that require grad, so it would re-cast these frozen ones on every pass;
the bf16 values are the same) and, on CUDA, in channels_last memory format. It then calls
`cache_reals` with the training images: the real side of the loss is the frozen network's output on
an image that never changes, so it is computed once per image and gathered per batch (its features
take N × Σ_layers C·H·W values in the network's dtype, e.g. 786 kB per image at 64 px for relu1_2 +
relu2_2 in bf16; no cache above the byte budget given).

Feature networks come from a registry (`register_feature_network`); a builder gets
`random_weights` and `weights_dir` and returns a VGG-style `nn.Sequential`. Pretrained weights are
found through `lossbench.weights.find_weights`; random weights only when asked for explicitly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from lossbench.config import TrainConfig
from lossbench.errors import ConfigError
from lossbench.images import to_float
from lossbench.weights import find_weights, load_state_dict

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

RANDOM_WEIGHTS_SEED = 0  # the random (explicitly requested) perceptual network is the same in every run

FeatureBuilder = Callable[[bool, str | None], nn.Sequential]
_FEATURE_NETWORKS: dict[str, FeatureBuilder] = {}


def register_feature_network(name: str, builder: FeatureBuilder) -> None:
    """Register `builder(random_weights, weights_dir) -> nn.Sequential` under `name` (replaces)."""
    _FEATURE_NETWORKS[name] = builder


def available_feature_networks() -> list[str]:
    return sorted(_FEATURE_NETWORKS)


def _torchvision_vgg(arch: str) -> FeatureBuilder:
    def build(random_weights: bool, weights_dir: str | None) -> nn.Sequential:
        with torch.device("meta"):  # no time spent on initialising the 100M-parameter classifier
            model = getattr(torchvision.models, arch)(weights=None)
        if random_weights:
            return _random_features(model.features)
        path = find_weights(arch, weights_dir)
        model.load_state_dict(load_state_dict(arch, path), assign=True)
        return model.features

    return build


def _random_features(features: nn.Sequential) -> nn.Sequential:
    """`features` materialised with torchvision's VGG initialisation under a fixed seed (0), so every
    run asking for random weights gets the same network, whatever the global RNG state."""
    features = features.to_empty(device="cpu")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_WEIGHTS_SEED)
        for m in features.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
    return features


register_feature_network("vgg16", _torchvision_vgg("vgg16"))
register_feature_network("vgg19", _torchvision_vgg("vgg19"))


def layer_names(features: nn.Sequential) -> list[str]:
    """VGG-style names of the modules of `features`, in order (conv1_1, relu1_1, ..., pool1, ...)."""
    names, block, i = [], 1, 0
    for m in features:
        if isinstance(m, nn.Conv2d):
            i += 1
            names.append(f"conv{block}_{i}")
        elif isinstance(m, nn.ReLU):
            names.append(f"relu{block}_{i}")
        elif isinstance(m, nn.MaxPool2d | nn.AvgPool2d):
            names.append(f"pool{block}")
            block, i = block + 1, 0
        else:
            names.append(f"{type(m).__name__.lower()}{block}_{i}")
    return names


class PerceptualLoss(nn.Module):
    """A frozen feature network and the distance between fake and real features (see module doc)."""

    def __init__(
        self,
        network: str = TrainConfig.perceptual,
        layers: Sequence[str] = TrainConfig.perceptual_layers,
        distance: str = TrainConfig.perceptual_distance,
        pairing: str = TrainConfig.perceptual_pairing,
        random_weights: bool = False,
        weights_dir: str | None = None,
    ) -> None:
        super().__init__()
        if network not in _FEATURE_NETWORKS:
            raise ConfigError(
                f"unknown perceptual network {network!r} (known: {', '.join(available_feature_networks())}, "
                "or 'none')"
            )
        features = _FEATURE_NETWORKS[network](random_weights, weights_dir)
        names = layer_names(features)
        unknown = [layer for layer in layers if layer not in names]
        if not layers or unknown:
            raise ConfigError(
                f"perceptual layers {list(layers)} not all in {network} (its layers: {', '.join(names)})"
            )
        self.taps = sorted(names.index(layer) for layer in layers)
        for m in features:  # torchvision's VGG uses ReLU(inplace=True), which would overwrite a tapped conv
            if isinstance(m, nn.ReLU):
                m.inplace = False
        self.features = features[: self.taps[-1] + 1].eval().requires_grad_(False)
        self.network, self.layers, self.distance, self.pairing = network, tuple(layers), distance, pairing
        self.weights = "random" if random_weights else "pretrained"
        self.dtype = torch.float32  # of the feature network (see `prepare`)
        self.cache: list[torch.Tensor] | None = None  # per-layer features of the training images
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def train(self, mode: bool = True) -> PerceptualLoss:
        return super().train(False)  # frozen: always in eval mode

    def prepare(self, dtype: torch.dtype | None = None, channels_last: bool = False) -> PerceptualLoss:
        """Convert the frozen network once: to `dtype` (None: keep fp32) and to channels_last."""
        if dtype is not None:
            self.features.to(dtype)
            self.dtype = dtype
        if channels_last:
            self.features.to(memory_format=torch.channels_last)
        return self

    def extract(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Features at the chosen layers for images N×C×H×W in [-1, 1] (C = 1 or 3); normalised in
        fp32, then in the network's dtype."""
        x = ((x + 1) / 2).expand(-1, 3, -1, -1)
        x = ((x - self.mean) / self.std).to(self.dtype)
        out = []
        for i, m in enumerate(self.features):
            x = m(x)
            if i in self.taps:
                out.append(x)
        return out

    @torch.no_grad()
    def cache_reals(self, images: torch.Tensor, batch_size: int, budget: int) -> bool:
        """Compute the features of every training image (uint8 N×1×R×R) once, in batches of
        `batch_size` (the training batch), for `real_features`; skipped when they would take more than
        `budget` bytes. Returns whether they are cached."""
        probe = self.extract(to_float(images[:1]))
        if len(images) * sum(f.numel() * f.element_size() for f in probe) > budget:
            return False
        parts = [
            self.extract(to_float(images[i : i + batch_size])) for i in range(0, len(images), batch_size)
        ]
        self.cache = [torch.cat(layer) for layer in zip(*parts, strict=True)]
        return True

    def real_features(self, real: torch.Tensor, index: torch.Tensor | None = None) -> list[torch.Tensor]:
        """The features of a real batch: gathered from the cache when `index` (the batch's positions
        in the cached images) is given and a cache exists, else computed."""
        if self.cache is not None and index is not None:
            return [layer[index] for layer in self.cache]
        with torch.no_grad():
            return self.extract(real)

    def forward(
        self, fake: torch.Tensor, real: torch.Tensor, index: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The scalar perceptual loss; gradients flow to `fake` only. `index`: see `real_features`."""
        return self.compare(self.extract(fake), self.real_features(real, index))

    def compare(self, fake_features: list[torch.Tensor], real_features: list[torch.Tensor]) -> torch.Tensor:
        """Σ_layers mean d(φ_l(fake), φ_l(real)) of `extract`'s features (each layer's d in fp32)."""
        dist = F.l1_loss if self.distance == "l1" else F.mse_loss
        total = fake_features[0].new_zeros(())
        for f, r in zip(fake_features, real_features, strict=True):
            if self.pairing == "mean":
                f, r = f.mean(0), r.mean(0)
            total = total + dist(f.float(), r.float())
        return total
