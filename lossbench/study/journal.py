"""Where a study's trials are stored by default, and a quick look for a study name there that needs
no optuna (the command line answers an unknown name at once)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from lossbench.errors import ConfigError

JOURNAL = "optuna-journal.log"


def journal_path(storage: str | None, root: str | os.PathLike) -> Path | None:
    """The journal file of `storage` (default `<root>/optuna-journal.log`); None for an RDB URL."""
    if storage and "://" in storage:
        return None
    return Path(storage) if storage else Path(root) / JOURNAL


def check_study_named(name: str, storage: str | None, root: str | os.PathLike) -> None:
    """ConfigError (one line) when the storage certainly holds no study `name`: its journal file is
    absent, or never mentions the name (Optuna writes each study's name once, JSON-encoded, when it
    creates it). Whatever it lets through is checked by Optuna; RDB storages are left to Optuna."""
    path = journal_path(storage, root)
    if path is None:
        return
    if not path.is_file():
        raise ConfigError(
            f"no study storage at {path}; run 'lossbench study' first, or pass --root or --storage"
        )
    if json.dumps(name) not in path.read_text(encoding="utf-8", errors="replace"):
        raise ConfigError(f"no study named {name!r} in {path}; 'lossbench study --name {name}' creates it")
