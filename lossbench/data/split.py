"""The held-out split: `holdout_split(data, fraction, seed) -> Split` and `load_split(DataConfig)`.

Images of one lesion are grouped first so that a group never straddles the split: BUSI holds
consecutive frames of one lesion (calipers moved, probe shifted), some of them filed under two
classes. Two images are linked when either correlation says they show the same scene:
- layout: the Pearson correlation of their 32×32 thumbnails, each less the dataset's mean thumbnail
  (the shared frame and depth shading of every scan), is at least `LAYOUT_CORR`;
- texture: the correlation of their high-passed thumbnails (thumbnail less its 3×3 box blur; speckle,
  edges and text), best over shifts of up to `TEXTURE_SHIFT` px, is at least `TEXTURE_CORR`, and
  the layout correlation at least `TEXTURE_MIN_LAYOUT` (alone, the texture correlation links a few
  speckle-rich scans to many unrelated ones).
Groups are the connected components of the links. The thresholds were set on BUSI by looking at the
pairs on both sides of them (docs/data.md, "Held-out split"). `load_split` looks for them at
`GROUP_RESOLUTION` on the whole dataset, whatever the run's resolution and classes, so a dataset has
one split at 32, 64 or 256 px.

A group whose images carry more than one class (one frame filed under two classes, or two lesions
too alike to tell apart here) is never held out: its labels cannot score a classifier. It stays in
the train part with the labels the dataset gives, and `Split.record()` names it.

Stratification: each other group counts for the class of its first image; per class, groups are
shuffled with a generator seeded by the split seed and the dataset's content fingerprint, and whole
groups go to the held-out part until it holds round(fraction × class size) images. Same data +
fraction + seed -> the same split on every machine.
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

VERSION = "v2"  # of the grouping and shuffling: v1 (before 2026-12-05) grouped by 16 px RMS distance
GROUP_RESOLUTION = 64  # px; load_split looks for same-lesion groups at this resolution
THUMB = 32  # thumbnail side, px
LAYOUT_CORR = 0.78  # layout correlation at or above which two images are linked
TEXTURE_CORR = 0.40  # texture correlation at or above which two images are linked ...
TEXTURE_MIN_LAYOUT = 0.50  # ... when their layout correlation is at least this
TEXTURE_SHIFT = 2  # largest shift, px of the thumbnail, over which the texture correlation is taken
RULE = (
    f"layout corr >= {LAYOUT_CORR} or (texture corr >= {TEXTURE_CORR} and layout corr >= "
    f"{TEXTURE_MIN_LAYOUT}); {THUMB} px thumbnails, shifts <= {TEXTURE_SHIFT} px"
)


def _unit_rows(x: torch.Tensor) -> torch.Tensor:
    """Each image flattened, centred and scaled to norm 1 (N×D), so that dot products are correlations."""
    x = x.flatten(1)
    x = x - x.mean(1, keepdim=True)
    return x / (x.norm(dim=1, keepdim=True) + 1e-9)


def similarity(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(layout, texture) correlations (N×N float, symmetric) of uint8 N×1×R×R images, as the module
    docstring defines them. Cost O(N² · THUMB²): about a second for BUSI's 780 images on 2 cores."""
    x = F.adaptive_avg_pool2d(images.float(), THUMB)
    layout = _unit_rows(x - x.mean(0, keepdim=True))
    layout = layout @ layout.T
    high = x - F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, 1)
    flat = _unit_rows(high)
    padded = F.pad(flat.view_as(x), (TEXTURE_SHIFT,) * 4)
    texture = torch.full_like(layout, -1.0)
    span = 2 * TEXTURE_SHIFT + 1
    for dy in range(span):
        for dx in range(span):
            shifted = padded[..., dy : dy + THUMB, dx : dx + THUMB].flatten(1)
            texture = torch.maximum(texture, shifted @ flat.T)
    return layout, torch.maximum(texture, texture.T)


def describe(fraction: float, seed: int) -> str:
    """A split's settings in one short line, for tables that compare numbers across cells."""
    return f"holdout {fraction:g}, split seed {seed}, lossbench split {VERSION}" if fraction else "none"


def near_duplicate_groups(images: torch.Tensor) -> np.ndarray:
    """Group id (int N, 0..G-1, numbered by first appearance) of each uint8 N×1×R×R image."""
    layout, texture = similarity(images)
    linked = (layout >= LAYOUT_CORR) | ((texture >= TEXTURE_CORR) & (layout >= TEXTURE_MIN_LAYOUT))
    i, j = np.nonzero(linked.numpy())
    n = len(images)
    _, ids = connected_components(coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n)), directed=False)
    return _renumber(ids)


def _renumber(ids: np.ndarray) -> np.ndarray:
    """Group ids renumbered 0..G-1 in the order of each group's first image."""
    _, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
    return np.argsort(np.argsort(first))[inverse]


@dataclass
class Split:
    """A dataset (`data`), its train and held-out parts, the same-lesion groups and the settings."""

    data: ImageDataset
    train: ImageDataset
    heldout: ImageDataset | None
    fraction: float
    seed: int
    groups: np.ndarray  # group id per image of the full dataset
    reference: ImageDataset  # the images (of `data`, in order) on which the groups were found
    heldout_index: np.ndarray  # indices into `data` of the held-out images (sorted; empty without)

    def duplicate_groups(self) -> list[list[int]]:
        """The groups of more than one image, as indices into the full dataset."""
        members = [np.flatnonzero(self.groups == g).tolist() for g in np.unique(self.groups)]
        return [m for m in members if len(m) > 1]

    def mixed_class_groups(self) -> list[list[int]]:
        """The groups whose images carry more than one class (never held out)."""
        labels = self.data.labels
        return [g for g in self.duplicate_groups() if len(set(labels[g].tolist())) > 1]

    def record(self) -> dict[str, Any]:
        """The split's settings, logged beside every number computed on it (MLflow params: short values)."""
        groups = self.duplicate_groups()
        out: dict[str, Any] = {
            "holdout": self.fraction,
            "split_seed": self.seed,
            "train_fingerprint": self.train.fingerprint,
            "train_counts": _counts(self.train),
            "duplicate_groups": len(groups),
            "grouped_images": sum(map(len, groups)),
            "largest_group": max(map(len, groups), default=1),
            "group_rule": f"{RULE}; at {self.reference.resolution} px",
            "mixed_class_groups": len(self.mixed_class_groups()),  # never held out; names: data inspect
        }
        if self.heldout is not None:
            out |= {"heldout_fingerprint": self.heldout.fingerprint, "heldout_counts": _counts(self.heldout)}
        return out

    def name(self, index: int) -> str:
        """Image `index` of the full dataset by its file name, or as "#index" where it has none."""
        return self.data.names[index] if self.data.names is not None else f"#{index}"


def _counts(data: ImageDataset) -> dict[str, int]:
    return {name: int((data.labels == i).sum()) for i, name in enumerate(data.class_names)}


def subset(data: ImageDataset, index: np.ndarray, part: str) -> ImageDataset:
    """The images of `data` at `index` (in dataset order) as a dataset of their own, with its own
    fingerprint and source `<source>#<part>`."""
    from lossbench.data import ImageDataset, fingerprint

    idx = torch.from_numpy(np.sort(index))
    images, labels = data.images[idx], data.labels[idx]
    sizes = data.sizes[idx] if data.sizes is not None else None
    names = tuple(data.names[i] for i in idx.tolist()) if data.names is not None else None
    return ImageDataset(
        images, labels, data.class_names, fingerprint(images, labels, data.class_names),
        f"{data.source}#{part}", list(data.skipped), sizes, names,
    )  # fmt: skip


def _rng(key: str, seed: int) -> np.random.Generator:
    digest = hashlib.sha256(f"lossbench-split-{VERSION}:{key}:{seed}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def holdout_split(
    data: ImageDataset, fraction: float, seed: int = 0, reference: ImageDataset | None = None
) -> Split:
    """Split `data` into (train, held-out) parts, stratified by class, same-lesion groups kept together.

    `fraction` in [0, 1): share of each class held out (0: no held-out part, `heldout` is None).
    `reference`: the same images in the same order at another resolution (`load_split` passes them at
    GROUP_RESOLUTION); the groups and the shuffling key come from it, so that `data` at any
    resolution splits alike. Default: `data` itself."""
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(f"held-out fraction must be in [0, 1), got {fraction}")
    reference = data if reference is None else reference
    if reference.names != data.names or not torch.equal(reference.labels, data.labels):
        raise ValueError("the reference images of a split are not the split's images")
    groups = near_duplicate_groups(reference.images)
    if fraction == 0.0:
        return Split(data, data, None, fraction, seed, groups, reference, np.zeros(0, dtype=np.int64))
    rng = _rng(reference.fingerprint, seed)
    labels = data.labels.numpy()
    members = {g: np.flatnonzero(groups == g) for g in np.unique(groups)}
    held: list[int] = []
    for c in range(len(data.class_names)):
        class_groups = [
            g for g, m in members.items() if labels[m[0]] == c and len(set(labels[m].tolist())) == 1
        ]
        target = round(fraction * int((labels == c).sum()))
        taken = 0
        for g in rng.permutation(class_groups):
            if taken >= target:
                break
            held += members[g].tolist()
            taken += len(members[g])
    held_idx = np.array(sorted(held), dtype=np.int64)
    train_idx = np.setdiff1d(np.arange(len(data)), held_idx)
    if len(held_idx) == 0 or len(train_idx) == 0:
        raise ConfigError(f"held-out fraction {fraction} of {len(data)} images leaves an empty part")
    train, heldout = subset(data, train_idx, "train"), subset(data, held_idx, "heldout")
    return Split(data, train, heldout, fraction, seed, groups, reference, held_idx)


def nearest_pairs_apart(split: Split, n: int) -> list[tuple[int, int, float, float]]:
    """The `n` (train image, held-out image) pairs closest to being linked, closest first, as
    (index into `split.data`, index into `split.data`, layout corr, texture corr). Closeness is the
    larger of layout / LAYOUT_CORR and min(texture / TEXTURE_CORR, layout / TEXTURE_MIN_LAYOUT):
    1 or more would have linked the pair."""
    layout, texture = similarity(split.reference.images)
    closeness = torch.maximum(
        layout / LAYOUT_CORR, torch.minimum(texture / TEXTURE_CORR, layout / TEXTURE_MIN_LAYOUT)
    )
    held = torch.from_numpy(split.heldout_index)
    train = torch.from_numpy(np.setdiff1d(np.arange(len(split.data)), split.heldout_index))
    across = closeness[train][:, held]
    order = torch.argsort(across.flatten(), descending=True)[:n].tolist()
    pairs = [(int(train[k // len(held)]), int(held[k % len(held)])) for k in order]
    return [(i, j, float(layout[i, j]), float(texture[i, j])) for i, j in pairs]


def load_split(config: DataConfig) -> Split:
    """Load `config.spec` at `config.resolution` and split it as `config.holdout`/`split_seed` say,
    with the groups found at GROUP_RESOLUTION."""
    from lossbench.data import load_dataset

    data = load_dataset(config.spec, config.resolution, config.classes)
    reference = data
    if config.holdout > 0 and data.resolution != GROUP_RESOLUTION:
        reference = load_dataset(config.spec, GROUP_RESOLUTION, config.classes)
    return holdout_split(data, config.holdout, config.split_seed, reference)
