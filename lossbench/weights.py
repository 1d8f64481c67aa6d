"""Where lossbench finds pretrained weight files, and clear errors when they are absent.

Every pretrained file lossbench can use is listed in `WEIGHTS`. A file is looked for, in order:

1. the folder given by option (`--weights-dir`, `weights_dir=`),
2. the folder in the environment variable `LOSSBENCH_WEIGHTS`,
3. the torch hub cache, `$TORCH_HOME/hub/checkpoints` (default `~/.cache/torch/hub/checkpoints`),
   where torchvision, lpips and torch-fidelity put what they download.

lossbench never falls back to random weights on its own: `find_weights` raises
`MissingWeightsError` naming the file and how to provide it. Random weights are used only when a
caller asks for them explicitly (`random_weights=True`), and such runs are tagged.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch.hub

from lossbench.errors import MissingWeightsError

ENV_VAR = "LOSSBENCH_WEIGHTS"


@dataclass(frozen=True)
class WeightFile:
    """One pretrained file: its registry key, file name, what uses it and where it comes from."""

    key: str
    filename: str
    used_for: str
    source: str
    alternative: str  # what a user without the file can do instead


WEIGHTS: dict[str, WeightFile] = {
    w.key: w
    for w in (
        WeightFile(
            "inception-v3-compat",
            "weights-inception-2015-12-05-6726825d.pth",
            "FID and KID (torch-fidelity's inception-v3-compat extractor)",
            "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
            "weights-inception-2015-12-05-6726825d.pth",
            "feature extractors never use random weights; --extractor lossbench-tiny is weight-free, "
            "for tests and demos, and not comparable with published scores",
        ),
        WeightFile(
            "vgg16",
            "vgg16-397923af.pth",
            "perceptual loss (default) and precision/recall",
            "https://download.pytorch.org/models/vgg16-397923af.pth",
            "or pass --random-weights for an explicitly random (tagged) perceptual network",
        ),
        WeightFile(
            "vgg19",
            "vgg19-dcbb9e9d.pth",
            "perceptual loss (--perceptual vgg19)",
            "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
            "or pass --random-weights for an explicitly random (tagged) perceptual network",
        ),
        WeightFile(
            "alexnet",
            "alexnet-owt-7be5be79.pth",
            "LPIPS (lpips v0.1, AlexNet backbone)",
            "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
            "or pass --random-weights for an explicitly random (tagged) LPIPS backbone",
        ),
    )
}


def hub_checkpoints_dir() -> Path:
    """The torch hub cache folder for weight files ($TORCH_HOME/hub/checkpoints)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def search_dirs(weights_dir: str | os.PathLike | None = None) -> list[Path]:
    """The folders searched for weight files, in order."""
    dirs = []
    if weights_dir:
        dirs.append(Path(weights_dir).expanduser())
    if os.environ.get(ENV_VAR):
        dirs.append(Path(os.environ[ENV_VAR]).expanduser())
    dirs.append(hub_checkpoints_dir())
    return dirs


def _entry(key: str) -> WeightFile:
    try:
        return WEIGHTS[key]
    except KeyError:
        raise MissingWeightsError(
            f"no pretrained weights are registered under {key!r} (known: {', '.join(WEIGHTS)})"
        ) from None


def locate(key: str, weights_dir: str | os.PathLike | None = None) -> Path | None:
    """The path of the weight file `key`, or None when it is in no searched folder."""
    entry = _entry(key)
    for folder in search_dirs(weights_dir):
        path = folder / entry.filename
        if path.is_file():
            return path
    return None


def find_weights(key: str, weights_dir: str | os.PathLike | None = None) -> Path:
    """The path of the weight file `key`; raise MissingWeightsError (one line) when absent."""
    path = locate(key, weights_dir)
    if path is None:
        entry = _entry(key)
        raise MissingWeightsError(
            f"pretrained weights {entry.filename} ({entry.used_for}) not found in "
            f"{', '.join(str(d) for d in search_dirs(weights_dir))}; download {entry.source} and run "
            f"'lossbench weights import DIR' ({entry.alternative})"
        )
    return path


def status(weights_dir: str | os.PathLike | None = None) -> list[tuple[WeightFile, Path | None]]:
    """Every registered weight file with its location, or None when missing."""
    return [(entry, locate(key, weights_dir)) for key, entry in WEIGHTS.items()]


def import_weights(src: str | os.PathLike, dest: str | os.PathLike | None = None) -> list[Path]:
    """Copy every registered weight file found in `src` into `dest` (default: the hub cache)."""
    src_dir = Path(src).expanduser()
    if not src_dir.is_dir():
        raise MissingWeightsError(f"weights folder {src_dir} does not exist")
    dest_dir = Path(dest).expanduser() if dest else hub_checkpoints_dir()
    dest_dir.mkdir(parents=True, exist_ok=True)
    copied = []
    for entry in WEIGHTS.values():
        found = next(iter(sorted(src_dir.rglob(entry.filename))), None)
        if found is not None:
            target = dest_dir / entry.filename
            if found.resolve() != target.resolve():
                shutil.copy2(found, target)
            copied.append(target)
    if not copied:
        names = ", ".join(e.filename for e in WEIGHTS.values())
        raise MissingWeightsError(f"no known weight file in {src_dir} (looked for {names})")
    return copied
