"""BUSI (Breast Ultrasound Images, Al-Dhabyani et al. 2020) in its original layout.

    Dataset_BUSI_with_GT/{benign,malignant,normal}/<class> (<n>).png      the images
    Dataset_BUSI_with_GT/{benign,malignant,normal}/<class> (<n>)_mask.png, _mask_1.png, ...  masks

The spec may name `Dataset_BUSI_with_GT`, its parent, or one of its class folders; a folder whose
subfolders are all BUSI class names is read the same way (a renamed copy). Every segmentation mask
is excluded.

Data spec "busi" means: the BUSI dataset, looked for in `$LOSSBENCH_BUSI`, `./data/busi`,
`../shared/data/busi`, `~/data/busi`, in that order (`find_busi`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from lossbench.data.folder import FileList, scan_folder
from lossbench.errors import DataError

BUSI_DIR = "Dataset_BUSI_with_GT"
BUSI_CLASSES = ("benign", "malignant", "normal")
MASK = re.compile(r"_mask(_\d+)?$")
BUSI_ENV = "LOSSBENCH_BUSI"
BUSI_URL = "https://scholar.cu.edu.eg/?q=afahmy/pages/dataset"


def busi_candidates() -> list[Path]:
    """The folders searched for BUSI, in order."""
    places = [Path(os.environ[BUSI_ENV])] if os.environ.get(BUSI_ENV) else []
    places += [Path("data/busi"), Path("../shared/data/busi"), Path("~/data/busi")]
    return [p.expanduser() for p in places]


def find_busi() -> Path:
    """The first BUSI folder found; DataError (one line: where looked, how to get it) otherwise."""
    for place in busi_candidates():
        if place.is_dir():
            return place
    raise DataError(
        f"BUSI not found in {', '.join(str(p) for p in busi_candidates())}; download it from {BUSI_URL} "
        f"(Al-Dhabyani et al. 2020), unpack it to ./data/busi or set {BUSI_ENV}=DIR, "
        "or pass --data phantom to run offline on the built-in phantom"
    )


def resolve_data_spec(spec: str) -> str:
    """`spec` with "busi" replaced by the folder where BUSI was found."""
    return str(find_busi()) if spec == "busi" else spec


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
