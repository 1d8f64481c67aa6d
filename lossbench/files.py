"""Writing files so that nobody ever reads a partial one; reading tensor files so that none runs code."""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from lossbench.errors import ConfigError


def load_tensors(path: str | os.PathLike) -> Any:
    """The content of a torch file, unpickled tensors and plain containers only
    (`torch.load(weights_only=True)`, onto the CPU): every file lossbench reads with torch goes
    through here, so none can run code. Torch's warnings about a file's pickle protocol are not
    shown (a file it refuses raises, and callers say so in one line)."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.load(path, map_location="cpu", weights_only=True)


def check_folder(path: str | os.PathLike, what: str) -> Path:
    """`path` as a Path when it is a folder or does not exist yet; ConfigError when it is a file."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{what} {path} is a file, not a folder; give a folder path")
    return path


def check_file(path: str | os.PathLike, what: str) -> Path:
    """`path` as a Path when a file can be written there (its nearest existing ancestor is a folder and
    it is not a folder itself); ConfigError, in one line, otherwise."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{what} {path} is a folder; give a file path")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"{what} {path} cannot be written: {parent} is a file, not a folder")
    return path


@contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Yield a binary file beside `path` that replaces `path` in one step (`os.replace`) once the
    block succeeds; on error it is removed and `path` is untouched. The temporary name holds the
    process id, so concurrent workers writing the same path never share a temporary file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def set_aside(path: Path) -> Path:
    """Rename a damaged file to `<name>.bad-<UTC time>` beside it; return the new path."""
    aside = path.with_name(f"{path.name}.bad-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
    return path.rename(aside)
