"""The domain encoder: a feature network trained on the train part of a dataset, usable wherever an
extractor name is accepted as `encoder:FILE` (registered in torch-fidelity at run time).

- Architecture: torchvision's ResNet-18 (`resnet18(weights=None, num_classes=K)`); input uint8
  grayscale repeated to 3 channels, scaled to [-1, 1], at the resolution it was trained at (other
  sizes are resized bilinearly); features: the 512 globally average-pooled activations (layer "512").
- Objective: class-weighted cross-entropy over the dataset's classes, with augmentation (random
  resized crop, scale 0.6-1; horizontal flip; rotation up to 10°; brightness/contrast 0.3); AdamW,
  its learning rate decayed to 0 along a cosine (`LR_SCHEDULE`).
  The reasons are in docs/metrics.md.
- File: the state dict (`torch.save`, loaded with `weights_only=True`, so loading runs no code) and
  the JSON sidecar FILE.json: the file's sha256 (checked on every load), data fingerprint and
  split, resolution, objective, epochs, and its quality on the held-out part against the same
  network at its random initial weights (balanced accuracy of the head; of a linear probe).
"""

from __future__ import annotations

import copy
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor
from torchvision.transforms import v2

from lossbench.errors import ConfigError, WeightsDigestError
from lossbench.files import atomic_write, load_tensors
from lossbench.weights import file_sha256

if TYPE_CHECKING:
    from lossbench.data import ImageDataset
    from lossbench.data.split import Split

PREFIX = "encoder:"
FORMAT = "lossbench-encoder-v1"
ARCH = "resnet18"
LAYER = "512"
OBJECTIVE = "supervised cross-entropy over the classes (class-weighted), with augmentation"
#: Why the decay: with a constant rate the last epoch's weights are a draw from a noisy trajectory. On
#: BUSI at 64 px (same seed) the held-out head balanced accuracy was 0.528 with one torch thread and
#: 0.704 with two; with the decay 0.723 and 0.779 (docs/metrics.md).
LR_SCHEDULE = "cosine decay to 0 over every optimiser step"
AUGMENTATION = "RandomResizedCrop(scale 0.6-1), HorizontalFlip, Rotation(10 deg), brightness/contrast 0.3"


def build(n_classes: int) -> nn.Module:
    """The encoder's architecture at random weights."""
    return torchvision.models.resnet18(weights=None, num_classes=n_classes)


def _to_input(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """uint8 N×C×H×W (C 1 or 3) -> float N×3×R×R in [-1, 1]."""
    x = images.float() / 127.5 - 1.0
    x = x.repeat(1, 3, 1, 1) if x.shape[1] == 1 else x
    if x.shape[-1] != resolution or x.shape[-2] != resolution:
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)
    return x


def embed(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The 512 pooled features of a ResNet-18 for float inputs N×3×R×R."""
    trunk = nn.Sequential(*list(model.children())[:-1])
    return trunk(x).flatten(1)


@torch.no_grad()
def _outputs(model: nn.Module, images: torch.Tensor, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """(features N×512, predicted class N) in eval mode, in batches of 128."""
    model.eval()
    feats, preds = [], []
    for batch in images.split(128):
        f = embed(model, _to_input(batch, resolution))
        feats.append(f.numpy())
        preds.append(model.fc(f).argmax(1).numpy())
    return np.concatenate(feats), np.concatenate(preds)


def _quality(model: nn.Module, split: Split, resolution: int) -> dict[str, float]:
    """Held-out balanced accuracy of the head, and of a logistic-regression probe fitted on the
    train part's (standardised) features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    assert split.heldout is not None
    train_f, _ = _outputs(model, split.train.images, resolution)
    held_f, held_pred = _outputs(model, split.heldout.images, resolution)
    y_train, y_held = split.train.labels.numpy(), split.heldout.labels.numpy()
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, class_weight="balanced"))
    probe.fit(train_f, y_train)
    return {
        "head_balanced_accuracy": float(balanced_accuracy_score(y_held, held_pred)),
        "probe_balanced_accuracy": float(balanced_accuracy_score(y_held, probe.predict(held_f))),
    }


def _augment(resolution: int) -> v2.Transform:
    return v2.Compose(
        [
            v2.RandomResizedCrop(resolution, scale=(0.6, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.RandomRotation(10),
            v2.ColorJitter(brightness=0.3, contrast=0.3),
        ]
    )


def _fit(model: nn.Module, split: Split, epochs: int, batch_size: int, lr: float, seed: int) -> None:
    """Train `model` in place on the train part (class-weighted cross-entropy, AdamW)."""
    data, resolution = split.train, split.train.resolution
    gen = torch.Generator().manual_seed(seed)
    counts = torch.bincount(data.labels, minlength=len(data.class_names)).clamp(min=1).float()
    loss_fn = nn.CrossEntropyLoss(weight=counts.sum() / (len(counts) * counts))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    batches = len(data) // batch_size + (len(data) % batch_size >= 2)  # a last batch of 1 is skipped
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * batches)
    augment = _augment(resolution)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(data), generator=gen).split(batch_size):
            if len(idx) < 2:  # BatchNorm needs two samples
                continue
            images = torch.stack([augment(img) for img in data.images[idx]])
            loss = loss_fn(model(_to_input(images, resolution)), data.labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            schedule.step()


def train_encoder(
    split: Split,
    out: str | os.PathLike,
    epochs: int = 30,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
) -> dict[str, Any]:
    """Train the encoder on `split.train`, judge it on `split.heldout`, write OUT and OUT.json.

    Returns the sidecar. Random state: torch's global RNG (augmentation) and the weights are seeded
    with `seed`; the run is deterministic on CPU."""
    if split.heldout is None:
        raise ConfigError("the encoder is judged on a held-out part: give a held-out fraction (--holdout)")
    if epochs < 1:
        raise ConfigError(f"epochs must be >= 1, got {epochs}")
    torch.manual_seed(seed)
    resolution = split.train.resolution
    model = build(len(split.train.class_names))
    random_model = copy.deepcopy(model)
    start = time.perf_counter()
    _fit(model, split, epochs, batch_size, lr, seed)
    seconds = time.perf_counter() - start
    out = Path(out)
    with atomic_write(out) as f:
        torch.save(model.state_dict(), f)
    sidecar = {
        "format": FORMAT,
        "arch": ARCH,
        "layer": LAYER,
        "sha256": file_sha256(out),
        "classes": list(split.train.class_names),
        "resolution": resolution,
        "data": {"source": split.data.source, "fingerprint": split.data.fingerprint},
        "split": split.record(),
        "objective": OBJECTIVE,
        "augmentation": AUGMENTATION,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "lr_schedule": LR_SCHEDULE,
        "seed": seed,
        "train_seconds": round(seconds, 1),
        "heldout_quality": {
            "trained": _quality(model, split, resolution),
            "random_init": _quality(random_model, split, resolution),
        },
    }
    with atomic_write(sidecar_path(out)) as f:
        f.write(json.dumps(sidecar, indent=2).encode())
    return sidecar


def sidecar_path(path: str | os.PathLike) -> Path:
    return Path(f"{path}.json")


def read_sidecar(path: str | os.PathLike) -> dict[str, Any]:
    """The sidecar of the encoder at `path`; one-line errors for a missing file or a foreign sidecar."""
    path = Path(path)
    meta = sidecar_path(path)
    if not path.is_file() or not meta.is_file():
        raise ConfigError(
            f"encoder file {path} or its sidecar {meta.name} not found (`lossbench encoder train` makes both)"
        )
    try:
        sidecar = json.loads(meta.read_text())
        for key in ("sha256", "classes"):
            sidecar[key]  # noqa: B018 - a KeyError names what a foreign file lacks
        if sidecar.get("format") != FORMAT:
            raise KeyError("format")
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"{meta} is not a lossbench encoder sidecar ({type(e).__name__}: {e})") from None
    return sidecar


def load_encoder(path: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """The encoder at `path` (eval mode) and its sidecar; one-line errors for a missing, altered or
    foreign file."""
    path = Path(path)
    sidecar = read_sidecar(path)
    expected, classes = sidecar["sha256"], sidecar["classes"]
    found = file_sha256(path)
    if found != expected:
        raise WeightsDigestError(f"encoder file {path} has sha256 {found}, its sidecar says {expected}")
    model = build(len(classes))
    try:
        model.load_state_dict(load_tensors(path))
    except Exception as e:  # unpickling refused, or another architecture
        raise WeightsDigestError(f"{path} does not hold a {ARCH} encoder ({type(e).__name__})") from None
    return model.requires_grad_(False).eval(), sidecar


def check_split(spec: str, train: ImageDataset, heldout: ImageDataset | None) -> None:
    """ConfigError unless the encoder `encoder:FILE` was trained on exactly `train`, when an evaluation
    holds `heldout` out: an encoder trained on another split (or on everything) may have learnt the
    held-out images, the yardstick of copy detection and utility. Compared by content fingerprints,
    so the data, resolution, held-out share and split seed must all be the same."""
    if heldout is None:
        return
    path = Path(spec[len(PREFIX) :]).expanduser()
    split = read_sidecar(path).get("split")
    if not isinstance(split, dict):
        return  # no split recorded: nothing to compare
    if (
        split.get("train_fingerprint") != train.fingerprint
        or split.get("heldout_fingerprint") != heldout.fingerprint
    ):
        raise ConfigError(
            f"encoder {path} was trained on another train part (holdout {split.get('holdout')}, split seed "
            f"{split.get('split_seed')}, train fingerprint {str(split.get('train_fingerprint'))[:12]}) than "
            f"this one (fingerprint {train.fingerprint[:12]}): its training images may include held-out "
            "ones; train one on this split with `lossbench encoder train` (same data, resolution, "
            "--holdout, --split-seed)"
        )


class EncoderExtractor(FeatureExtractorBase):
    """torch-fidelity extractor around an encoder file; one subclass per file (`register_encoder`)."""

    file: str = ""
    weights_id: str = ""

    def __init__(self, name: str, features_list: list[str], **kwargs: Any) -> None:
        super().__init__(name, features_list)
        self.model, sidecar = load_encoder(self.file)
        self.resolution = int(sidecar["resolution"])

    @staticmethod
    def get_provided_features_list() -> tuple[str, ...]:
        return (LAYER,)

    @staticmethod
    def get_default_feature_layer_for_metric(metric: str) -> str:
        return LAYER

    @staticmethod
    def can_be_compiled() -> bool:
        return False

    @staticmethod
    def get_dummy_input_for_compile() -> torch.Tensor:
        return torch.zeros(1, 3, 32, 32, dtype=torch.uint8)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        return (embed(self.model, _to_input(x, self.resolution)),)


def register_encoder(spec: str) -> str:
    """Register the encoder named by `encoder:FILE` in torch-fidelity; returns its registry name
    `encoder-<first 12 hex of its sha256>` (registered once per file content)."""
    path = Path(spec[len(PREFIX) :]).expanduser().resolve()
    _, sidecar = load_encoder(path)
    name = f"encoder-{sidecar['sha256'][:12]}"
    if name not in FEATURE_EXTRACTORS_REGISTRY:
        weights_id = f"{path.name}@sha256:{sidecar['sha256'][:16]}"
        cls = type(name, (EncoderExtractor,), {"file": str(path), "weights_id": weights_id})
        register_feature_extractor(name, cls)
    return name
