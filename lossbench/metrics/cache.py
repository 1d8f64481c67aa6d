"""On-disk cache of tensors computed from real data: extractor features and real-real reference values.

An entry is keyed by a dict: the dataset fingerprint (a hash of its content, so a changed dataset
never hits a stale entry), resolution, extractor, layer, weights file, and whatever else the value
depends on. The file name is a hash of the key and the file stores the key itself, checked on
load; a file that fails to load or holds another key is recomputed and overwritten, never trusted.
Writes are atomic (a temporary file in the same folder, then `os.replace`), so concurrent workers
see either no entry or a complete one; a missing entry is computed under a file lock beside it
(`<entry>.lock`), so workers that miss it at once compute it once: the others wait, then read it
(the utility judge's real arm costs about 15 min on one thread; two workers used to both train it).
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from filelock import FileLock

from lossbench.files import atomic_write, load_tensors

DEFAULT_DIR = Path("mlruns") / "feature-cache"


def entry_path(folder: str | os.PathLike, key: dict[str, str | int]) -> Path:
    """Where the entry for `key` lives in `folder`."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    return Path(folder) / f"{digest[:32]}.pt"


def _load(path: Path, key_text: str) -> torch.Tensor | None:
    if not path.is_file():
        return None
    try:
        entry = load_tensors(path)
        if entry["key"] == key_text and isinstance(entry["value"], torch.Tensor):
            return entry["value"]
        warnings.warn(f"feature cache file {path} holds another entry; recomputing", stacklevel=3)
    except Exception as e:  # truncated, corrupt or foreign file: recompute, never trust it
        warnings.warn(
            f"feature cache file {path} is unreadable ({type(e).__name__}); recomputing", stacklevel=3
        )
    return None


def cached(
    folder: str | os.PathLike, key: dict[str, str | int], compute: Callable[[], torch.Tensor]
) -> tuple[torch.Tensor, bool]:
    """The tensor stored under `key` in `folder`, or `compute()` stored there; and whether it was a hit."""
    key_text = json.dumps(key, sort_keys=True)
    path = entry_path(folder, key)
    value = _load(path, key_text)
    if value is not None:
        return value, True
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{path}.lock"):
        value = _load(path, key_text)  # computed by another worker while this one waited
        if value is not None:
            return value, True
        value = compute().detach().cpu()
        with atomic_write(path) as f:
            torch.save({"key": key_text, "value": value}, f)
    return value, False
