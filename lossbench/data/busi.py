"""BUSI (Breast Ultrasound Images, Al-Dhabyani et al. 2020) in its original layout.

    Dataset_BUSI_with_GT/{benign,malignant,normal}/<class> (<n>).png      the images
    Dataset_BUSI_with_GT/{benign,malignant,normal}/<class> (<n>)_mask.png, _mask_1.png, ...  masks

The spec may name `Dataset_BUSI_with_GT`, its parent, or one of its class folders; a folder whose
subfolders are all BUSI class names is read the same way (a renamed copy). Every segmentation mask
is excluded.
"""

from __future__ import annotations

import re
from pathlib import Path

from lossbench.data.folder import FileList, scan_folder

BUSI_DIR = "Dataset_BUSI_with_GT"
BUSI_CLASSES = ("benign", "malignant", "normal")
MASK = re.compile(r"_mask(_\d+)?$")


def busi_root(path: Path) -> Path | None:
    """The BUSI image folder that `path` names (itself or its `Dataset_BUSI_with_GT`), or None."""
    if (path / BUSI_DIR).is_dir():
        return path / BUSI_DIR
    subfolders = {p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")}
    if BUSI_DIR in (path.name, path.parent.name) or (subfolders and subfolders <= set(BUSI_CLASSES)):
        return path
    return None


def mask_reason(path: Path) -> str | None:
    """Why `path` is left out (it is a segmentation mask), or None for an image."""
    return "BUSI segmentation mask" if MASK.search(path.stem) else None


def scan_busi(root: Path) -> FileList:
    """BUSI's images by class, masks excluded (listed in `skipped`)."""
    return scan_folder(root, exclude=mask_reason)
