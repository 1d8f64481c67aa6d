"""The held-out split: `holdout_split(data, fraction, seed) -> Split` and `load_split(DataConfig)`.

Near-duplicates are grouped first so that a group never straddles the split (BUSI files some
frames of one lesion several times, a few under two classes). Two images are near-duplicates when
their thumbnails (average-pooled to `THUMB`×`THUMB`, each standardised to mean 0 and standard
deviation 1) differ by an RMS distance below `DUPLICATE_RMS`; groups are the connected components
of that relation. On BUSI at 64 px the nearest-neighbour RMS distances are bimodal (a cluster of
near-duplicates below 0.15, everything else mostly 0.3-1.0), hence the threshold.

Stratification: each group counts for the class of its first image; per class, groups are shuffled
with a generator seeded by the split seed and the dataset's content fingerprint, and whole groups
go to the held-out part until it holds round(fraction × class size) images. Same data + fraction +
seed -> the same split on every machine.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from lossbench.errors import ConfigError

if TYPE_CHECKING:
    from lossbench.config import DataConfig
    from lossbench.data import ImageDataset

THUMB = 16  # thumbnail side for near-duplicate detection, px
DUPLICATE_RMS = 0.15  # RMS distance of standardised thumbnails below which two images are near-duplicates


def near_duplicate_groups(images: torch.Tensor) -> np.ndarray:
    """Group id (int N, 0..G-1, numbered by first appearance) of each uint8 N×1×R×R image."""
    x = F.adaptive_avg_pool2d(images.float(), THUMB).flatten(1)
    x = (x - x.mean(1, keepdim=True)) / (x.std(1, keepdim=True) + 1e-6)
    close = (torch.cdist(x, x) / THUMB < DUPLICATE_RMS).numpy()
    i, j = np.nonzero(close)
    n = len(images)
    _, ids = connected_components(coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n)), directed=False)
    _, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first))  # renumber components by their first image
    return order[inverse]


@dataclass
class Split:
    """A dataset (`data`), its train and held-out parts, the near-duplicate groups and the settings."""

    data: ImageDataset
    train: ImageDataset
    heldout: ImageDataset | None
    fraction: float
    seed: int
    groups: np.ndarray  # group id per image of the full dataset

    def duplicate_groups(self) -> list[list[int]]:
        """The groups of more than one image, as indices into the full dataset."""
        members = [np.flatnonzero(self.groups == g).tolist() for g in np.unique(self.groups)]
        return [m for m in members if len(m) > 1]

    def record(self) -> dict[str, Any]:
        """The split's settings, logged beside every number computed on it."""
        out: dict[str, Any] = {
            "holdout": self.fraction,
            "split_seed": self.seed,
            "train_fingerprint": self.train.fingerprint,
            "train_counts": _counts(self.train),
            "duplicate_groups": len(self.duplicate_groups()),
        }
        if self.heldout is not None:
            out |= {"heldout_fingerprint": self.heldout.fingerprint, "heldout_counts": _counts(self.heldout)}
        return out


def _counts(data: ImageDataset) -> dict[str, int]:
    return {name: int((data.labels == i).sum()) for i, name in enumerate(data.class_names)}


def _subset(data: ImageDataset, index: np.ndarray, part: str) -> ImageDataset:
    from lossbench.data import ImageDataset, fingerprint

    idx = torch.from_numpy(np.sort(index))
    images, labels = data.images[idx], data.labels[idx]
    sizes = data.sizes[idx] if data.sizes is not None else None
    return ImageDataset(
        images, labels, data.class_names, fingerprint(images, labels, data.class_names),
        f"{data.source}#{part}", list(data.skipped), sizes,
    )  # fmt: skip


def _rng(data: ImageDataset, seed: int) -> np.random.Generator:
    digest = hashlib.sha256(f"lossbench-split-v1:{data.fingerprint}:{seed}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def holdout_split(data: ImageDataset, fraction: float, seed: int = 0) -> Split:
    """Split `data` into (train, held-out) parts, stratified by class, near-duplicates kept together.

    `fraction` in [0, 1): share of each class held out (0: no held-out part, `heldout` is None)."""
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(f"held-out fraction must be in [0, 1), got {fraction}")
    groups = near_duplicate_groups(data.images)
    if fraction == 0.0:
        return Split(data, data, None, fraction, seed, groups)
    rng = _rng(data, seed)
    labels = data.labels.numpy()
    first = {g: int(np.flatnonzero(groups == g)[0]) for g in np.unique(groups)}
    held: list[int] = []
    for c in range(len(data.class_names)):
        class_groups = [g for g, i in first.items() if labels[i] == c]
        target = round(fraction * int((labels == c).sum()))
        taken = 0
        for g in rng.permutation(class_groups):
            if taken >= target:
                break
            members = np.flatnonzero(groups == g)
            held += members.tolist()
            taken += len(members)
    held_idx = np.array(sorted(held), dtype=np.int64)
    train_idx = np.setdiff1d(np.arange(len(data)), held_idx)
    if len(held_idx) == 0 or len(train_idx) == 0:
        raise ConfigError(f"held-out fraction {fraction} of {len(data)} images leaves an empty part")
    train, heldout = _subset(data, train_idx, "train"), _subset(data, held_idx, "heldout")
    return Split(data, train, heldout, fraction, seed, groups)


def load_split(config: DataConfig) -> Split:
    """Load `config.spec` at `config.resolution` and split it as `config.holdout`/`split_seed` say."""
    from lossbench.data import load_dataset

    data = load_dataset(config.spec, config.resolution, config.classes)
    return holdout_split(data, config.holdout, config.split_seed)
