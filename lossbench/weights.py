"""Where lossbench finds pretrained weight files, and clear errors when they are absent.

Every pretrained file lossbench can use is listed in `WEIGHTS`. A file is looked for, in order:

1. the folder given by option (`--weights-dir`, `weights_dir=`),
2. the folder in the environment variable `LOSSBENCH_WEIGHTS`,
3. the torch hub cache, `$TORCH_HOME/hub/checkpoints` (default `~/.cache/torch/hub/checkpoints`),
   where torchvision, lpips and torch-fidelity put what they download.

lossbench never falls back to random weights on its own: `find_weights` raises
`MissingWeightsError` naming the file and how to provide it. Random weights are used only when a
caller asks for them explicitly (`random_weights=True`), and such runs are tagged.

No weight file can run code. Every file's full sha256 is listed here and checked at
`import_weights` and by `find_weights` before every load (`WeightsDigestError` otherwise; the digest
is remembered per (path, size, mtime) within a process), and files are unpickled only by
`load_state_dict`, with `torch.load(..., weights_only=True)`: a file that is not a plain state dict
is refused even when its digest matches.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.hub

from lossbench.errors import MissingWeightsError, WeightsDigestError, first_line
from lossbench.files import load_tensors

ENV_VAR = "LOSSBENCH_WEIGHTS"


@dataclass(frozen=True)
class WeightFile:
    """One pretrained file: its registry key, file name, what uses it, where it comes from, its sha256."""

    key: str
    filename: str
    used_for: str
    source: str
    alternative: str  # what a user without the file can do instead
    sha256: str  # full hex digest of the published file; the name holds its first 8 hex digits


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
            # 95,628,359 bytes; the digest as several independent public checksum manifests list it
            # (pytorch-fid's pt_inception-2015-12-05-6726825d.pth is the same file).
            "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2",
        ),
        WeightFile(
            "vgg16",
            "vgg16-397923af.pth",
            "perceptual loss (default) and precision/recall",
            "https://download.pytorch.org/models/vgg16-397923af.pth",
            "or pass --random-weights for an explicitly random (tagged) perceptual network",
            # 553,433,881 bytes; torchvision's VGG16_Weights.IMAGENET1K_V1, also torch-fidelity's
            # VGG16 for precision/recall. Digest from several independent public checksum manifests.
            "397923af8e79cdbb6a7127f12361acd7a2f83e06b05044ddf496e83de57a5bf0",
        ),
        WeightFile(
            "vgg19",
            "vgg19-dcbb9e9d.pth",
            "perceptual loss (--perceptual vgg19)",
            "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
            "or pass --random-weights for an explicitly random (tagged) perceptual network",
            # 574,673,361 bytes; torchvision's VGG19_Weights.IMAGENET1K_V1. Digest from several
            # independent public checksum manifests.
            "dcbb9e9dad569fff7a846263a77324fc34978fea2bfb039c012d710e1776ae44",
        ),
        WeightFile(
            "alexnet",
            "alexnet-owt-7be5be79.pth",
            "LPIPS (lpips v0.1, AlexNet backbone)",
            "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
            "or pass --random-weights for an explicitly random (tagged) LPIPS backbone",
            # 244,408,911 bytes; torchvision's AlexNet_Weights.IMAGENET1K_V1. Digest from several
            # independent public checksum manifests.
            "7be5be791159472b1fbf3c69796f7cb30dca7ad8466c2df70058c37116cdee02",
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


_DIGESTS: dict[tuple[str, int, int], str] = {}  # (resolved path, size, mtime_ns) -> sha256 found


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 hex digest of a file, remembered per (path, size, mtime) for this process."""
    path = Path(path).resolve()
    stat = path.stat()
    cache_key = (str(path), stat.st_size, stat.st_mtime_ns)
    if cache_key not in _DIGESTS:
        digest = hashlib.sha256()
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        _DIGESTS[cache_key] = digest.hexdigest()
    return _DIGESTS[cache_key]


def verify(key: str, path: str | os.PathLike) -> None:
    """Raise WeightsDigestError (one line) unless the file at `path` is the published file `key`."""
    expected, found = _entry(key).sha256, file_sha256(path)
    if found != expected:
        raise WeightsDigestError(
            f"weight file {path} is not the published {_entry(key).filename}: sha256 {found}, "
            f"expected {expected}; delete it and download {_entry(key).source} again"
        )


def load_state_dict(key: str, path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state dict in the weight file `key` at `path`: digest verified, unpickled tensors only."""
    verify(key, path)
    try:
        return load_tensors(path)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as e:
        reason = first_line(e)
        raise WeightsDigestError(f"weight file {path} is not a plain state dict ({reason})") from None


def find_weights(key: str, weights_dir: str | os.PathLike | None = None) -> Path:
    """The path of the verified weight file `key`; one-line MissingWeightsError when absent,
    WeightsDigestError when its sha256 is not the published one."""
    path = locate(key, weights_dir)
    if path is None:
        entry = _entry(key)
        raise MissingWeightsError(
            f"pretrained weights {entry.filename} ({entry.used_for}) not found in "
            f"{', '.join(str(d) for d in search_dirs(weights_dir))}; download {entry.source} and run "
            f"'lossbench weights import DIR' ({entry.alternative})"
        )
    verify(key, path)
    return path


def status(weights_dir: str | os.PathLike | None = None) -> list[tuple[WeightFile, Path | None]]:
    """Every registered weight file with its location, or None when missing."""
    return [(entry, locate(key, weights_dir)) for key, entry in WEIGHTS.items()]


def missing_message(keys: list[str], weights_dir: str | os.PathLike | None = None) -> str | None:
    """One line naming every file of `keys` that is absent, with its URL, how to fetch them, and
    the offline demo; None when all are present."""
    absent = [_entry(k) for k in dict.fromkeys(keys) if locate(k, weights_dir) is None]
    if not absent:
        return None
    files = "; ".join(f"{e.filename} ({e.used_for}) from {e.source}" for e in absent)
    return (
        f"{len(absent)} pretrained weight file(s) missing: {files}. Run 'lossbench weights fetch' "
        "(internet), or download them elsewhere and run 'lossbench weights import DIR'; offline, "
        "'lossbench study --preset tiny' runs a demo with explicitly random weights"
    )


def fetch_weights(
    keys: list[str], dest: str | os.PathLike | None = None, weights_dir: str | os.PathLike | None = None
) -> list[tuple[WeightFile, Path, bool]]:
    """Download each file of `keys` not found yet into `dest` (default: the hub cache) with torch.hub's
    downloader, its full sha256 checked; returns (entry, path, downloaded). An unreachable URL is a
    MissingWeightsError naming every file still missing and its URL."""
    dest_dir = Path(dest).expanduser() if dest else hub_checkpoints_dir()
    out = []
    for key in dict.fromkeys(keys):
        entry = _entry(key)
        found = locate(key, dest_dir) or locate(key, weights_dir)
        if found is not None:
            verify(key, found)
            out.append((entry, found, False))
            continue
        dest_dir.mkdir(parents=True, exist_ok=True)
        target = dest_dir / entry.filename
        try:
            torch.hub.download_url_to_file(
                entry.source, str(target), hash_prefix=entry.sha256, progress=False
            )
        except (OSError, RuntimeError) as e:  # URLError is an OSError; a digest mismatch a RuntimeError
            reason = first_line(e)
            message = missing_message(list(keys), weights_dir) or ""
            raise MissingWeightsError(f"cannot download {entry.source} ({reason}); {message}") from None
        out.append((entry, target, True))
    return out


def import_weights(src: str | os.PathLike, dest: str | os.PathLike | None = None) -> list[Path]:
    """Copy every registered weight file found in `src` into `dest` (default: the hub cache).

    Every file is checked before anything is copied: its sha256 and that it holds tensors only
    (WeightsDigestError otherwise)."""
    src_dir = Path(src).expanduser()
    if not src_dir.is_dir():
        raise MissingWeightsError(f"weights folder {src_dir} does not exist")
    dest_dir = Path(dest).expanduser() if dest else hub_checkpoints_dir()
    dest_dir.mkdir(parents=True, exist_ok=True)
    found = {}
    for entry in WEIGHTS.values():
        path = next(iter(sorted(src_dir.rglob(entry.filename))), None)
        if path is not None:
            load_state_dict(entry.key, path)  # the published digest, and tensors only
            found[entry.key] = path
    if not found:
        names = ", ".join(e.filename for e in WEIGHTS.values())
        raise MissingWeightsError(f"no known weight file in {src_dir} (looked for {names})")
    copied = []
    for key, path in found.items():
        target = dest_dir / WEIGHTS[key].filename
        if path.resolve() != target.resolve():
            shutil.copy2(path, target)
        copied.append(target)
    return copied
