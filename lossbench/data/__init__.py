"""Datasets as in-memory uint8 tensors: `load_dataset(spec, resolution, classes)`.

A spec is `PREFIX` or `PREFIX:ARG` for a registered loader (`register_dataset`), or a path:
- `"phantom"`: the built-in procedural ultrasound phantom, 780 images (BUSI's 437/210/133 classes),
  seed 0; `"phantom:N"`: N images;
- `"busi"` (found as `busi.find_busi` says) or `"busi:DIR"`: BUSI in its original layout (masks
  excluded), see `busi.py`;
- `"folder:DIR"`: any folder of images (first-level subfolders are classes), see `folder.py`;
- a bare path: "busi" when the folder has BUSI's layout, "folder" otherwise.

Images are grayscale, uint8, N×1×R×R, resized on the shorter side to R and centre-cropped (see
`images.py`). A file that cannot be decoded (truncated, corrupt) is skipped with a warning naming
it, and listed in `ImageDataset.skipped`; the fingerprint covers exactly the images kept.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from lossbench.config import check_resolution
from lossbench.data.busi import busi_root, find_busi, scan_busi
from lossbench.data.folder import FileList, scan_folder
from lossbench.data.images import decode_all
from lossbench.data.phantom import PHANTOM_CLASSES, PHANTOM_SIZE, phantom
from lossbench.errors import DataError

__all__ = ["ImageDataset", "available_datasets", "fingerprint", "load_dataset", "register_dataset"]

log = logging.getLogger(__name__)


@dataclass
class ImageDataset:
    """Images (uint8 N×1×R×R), labels (int64 N, indices into `class_names`) and their provenance.

    `sizes` holds each image's original (width, height) before resizing (N×2 int64), when known;
    `names` each image's file path relative to the dataset's root (e.g. "benign/benign (406).png"),
    when it came from files; `skipped` lists (path, reason) for every file under the source that is
    not an image in the set.
    """

    images: torch.Tensor
    labels: torch.Tensor
    class_names: tuple[str, ...]
    fingerprint: str
    source: str
    skipped: list[tuple[str, str]] = field(default_factory=list)
    sizes: torch.Tensor | None = None
    names: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return len(self.images)

    @property
    def resolution(self) -> int:
        return self.images.shape[-1]


def fingerprint(images: torch.Tensor, labels: torch.Tensor, class_names: Sequence[str]) -> str:
    """sha256 hex of the content: resolution, class names, labels and image bytes."""
    h = hashlib.sha256(b"lossbench-images-v1")
    h.update(json.dumps({"resolution": images.shape[-1], "classes": list(class_names)}).encode())
    h.update(labels.to(torch.int64).numpy().astype("<i8").tobytes())
    h.update(images.contiguous().numpy().tobytes())
    return h.hexdigest()


def _select(names: Sequence[str], classes: Sequence[str] | None, source: str) -> list[str]:
    """The names of `names` that `classes` asks for (all when None), in dataset order."""
    if classes is None:
        return list(names)
    if not classes:
        raise DataError(f"no class selected for {source}; known classes: {', '.join(names)}")
    unknown = [c for c in classes if c not in names]
    if unknown:
        raise DataError(f"unknown class {unknown[0]!r} in {source}; known classes: {', '.join(names)}")
    return [n for n in names if n in classes]


DatasetLoader = Callable[[str, int, Sequence[str] | None], "ImageDataset"]
_LOADERS: dict[str, DatasetLoader] = {}


def register_dataset(prefix: str, loader: DatasetLoader) -> None:
    """Register `loader(spec, resolution, classes) -> ImageDataset` for specs `prefix` and `prefix:ARG`
    (replaces)."""
    _LOADERS[prefix] = loader


def available_datasets() -> list[str]:
    return sorted(_LOADERS)


def _load_phantom(spec: str, resolution: int, classes: Sequence[str] | None) -> ImageDataset:
    count = spec.partition(":")[2] or str(PHANTOM_SIZE)
    if not count.isdigit() or int(count) < 1:
        raise DataError(f"malformed phantom spec {spec!r}: use 'phantom' or 'phantom:N' with N >= 1")
    names = _select(PHANTOM_CLASSES, classes, spec)
    images, labels = phantom(int(count), resolution)
    keep = torch.isin(labels, torch.tensor([PHANTOM_CLASSES.index(n) for n in names]))
    images = images[keep]
    labels = torch.tensor([names.index(PHANTOM_CLASSES[i]) for i in labels[keep].tolist()], dtype=torch.int64)
    sizes = torch.full((len(images), 2), resolution, dtype=torch.int64)
    source = f"phantom:{count}"
    return ImageDataset(images, labels, tuple(names), fingerprint(images, labels, names), source, [], sizes)


def _load_files(found: FileList, source: str, resolution: int, classes: Sequence[str] | None) -> ImageDataset:
    names = _select(list(found.files), classes, source)
    paths = [p for n in names for p in found.files[n]]
    labels = [i for i, n in enumerate(names) for _ in found.files[n]]
    skipped = list(found.skipped)
    arrays, sizes, kept, kept_names = [], [], [], []
    for path, label, result in zip(paths, labels, decode_all(paths, resolution), strict=True):
        if isinstance(result, str):
            log.warning("skipped %s: %s", path, result)
            skipped.append((str(path), result))
        else:
            arrays.append(result[0])
            sizes.append(result[1])
            kept.append(label)
            kept_names.append(path.relative_to(found.root).as_posix())
    if not arrays:
        last, reason = skipped[-1]
        raise DataError(f"none of the {len(paths)} images in {source} could be decoded ({last}: {reason})")
    images = torch.from_numpy(np.stack(arrays))[:, None]
    labels_t = torch.tensor(kept, dtype=torch.int64)
    digest = fingerprint(images, labels_t, names)
    return ImageDataset(
        images, labels_t, tuple(names), digest, source, skipped, torch.tensor(sizes), tuple(kept_names)
    )


def _folder_path(spec: str) -> Path:
    """The existing folder that a spec's path names; DataError otherwise."""
    if not spec:
        raise DataError("a dataset spec names no folder: use busi:DIR or folder:DIR")
    path = Path(spec).expanduser()
    if not path.exists():
        raise DataError(
            f"dataset path {spec} does not exist; give a BUSI folder, an image folder or 'phantom'"
        )
    if not path.is_dir():
        raise DataError(f"dataset path {spec} is a file; give the folder that holds the images")
    return path.resolve()


def _load_busi(spec: str, resolution: int, classes: Sequence[str] | None) -> ImageDataset:
    path = _folder_path(spec.partition(":")[2]) if ":" in spec else find_busi().resolve()
    root = busi_root(path)
    if root is None:
        raise DataError(f"{path} is not a BUSI folder (no benign/malignant/normal class folders)")
    return _load_files(scan_busi(root), f"busi:{root}", resolution, classes)


def _load_folder(spec: str, resolution: int, classes: Sequence[str] | None) -> ImageDataset:
    path = _folder_path(spec.partition(":")[2])
    return _load_files(scan_folder(path), f"folder:{path}", resolution, classes)


register_dataset("phantom", _load_phantom)
register_dataset("busi", _load_busi)
register_dataset("folder", _load_folder)


def load_dataset(spec: str, resolution: int, classes: Sequence[str] | None = None) -> ImageDataset:
    """Load `spec` (see the module docstring) at `resolution`.

    `classes` keeps only those classes (labels then index the kept ones, in dataset order).
    Raises ConfigError for a bad resolution, DataError for a spec that cannot be loaded.
    """
    resolution = check_resolution(resolution)
    prefix = spec.partition(":")[0]
    if prefix in _LOADERS:
        return _LOADERS[prefix](spec, resolution, classes)
    path = _folder_path(spec)
    kind = "busi" if busi_root(path) is not None else "folder"
    return _LOADERS[kind](f"{kind}:{path}", resolution, classes)
