"""The Optuna journal file of a study: where it is, a quick look for a study name in it, and its
integrity (a torn tail repaired, a garbled line reported) before Optuna reads it.

This module stays light (no optuna at import): the command line answers an unknown study name with
`check_study_named` before the heavy imports. The jobs, one function each:

- `journal_path`: where a study's trials are stored by default (`<root>/optuna-journal.log`).
- `check_study_named`: a quick look for a study name, without optuna.
- `check_journal`: Optuna's `JournalFileBackend` appends one JSON object per line. A process killed
  during a write (or a full disk) leaves a last line without its newline: Optuna then appends after
  it and later reads fail. `check_journal` removes such a torn tail, keeping the removed bytes in
  `<journal>.torn-<UTC time>-<pid>`, and reports any line that is not JSON as one line naming the
  file and the line number (1-based). It holds Optuna's own lock on the file while it reads and
  repairs, so it never cuts a write in progress.
"""

from __future__ import annotations

import difflib
import json
import os
import time
import warnings
from pathlib import Path

from lossbench.errors import ConfigError, StorageError

JOURNAL = "optuna-journal.log"
TORN_SUFFIX = ".torn-"


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
    names = study_names(path)
    if name not in names:
        close = difflib.get_close_matches(name, names, n=1)
        held = f"it holds {', '.join(names)}" if names else "it holds no study"
        hint = f"did you mean {close[0]!r}?" if close else f"'lossbench study --name {name}' creates it"
        raise ConfigError(f"no study named {name!r} in {path} ({held}); {hint}")


def study_names(path: Path) -> list[str]:
    """The names of the studies the journal at `path` created (Optuna writes a study's name, JSON, in
    the record that creates it), in order; unreadable lines are skipped."""
    names: list[str] = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if '"study_name"' not in line:
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        name = record.get("study_name") if isinstance(record, dict) else None
        if isinstance(name, str) and name not in names:
            names.append(name)
    return names


def check_journal(path: str | os.PathLike) -> Path | None:
    """Repair a torn last line of the journal at `path` (absent: nothing to do); return the backup
    of the removed bytes, or None when nothing was removed. StorageError for a line that is not JSON."""
    from optuna.storages.journal import JournalFileSymlinkLock  # here: this module stays light

    path = Path(path)
    if not path.is_file():
        return None
    lock = JournalFileSymlinkLock(str(path))
    lock.acquire()
    try:
        data = path.read_bytes()
        cut = data.rfind(b"\n") + 1
        backup = _remove_tail(path, data, cut) if cut < len(data) else None
    finally:
        lock.release()
    for number, line in enumerate(data[:cut].splitlines(), start=1):
        try:
            json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise StorageError(
                f"Optuna journal {path}, line {number}, is corrupt ({e}); restore the file from a "
                "backup, or remove that line if you know what it held"
            ) from None
    return backup


def _remove_tail(path: Path, data: bytes, cut: int) -> Path:
    """Move the bytes of `path` (read as `data`) from offset `cut` on into a backup file."""
    tail = data[cut:]
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    backup = path.with_name(f"{path.name}{TORN_SUFFIX}{stamp}-{os.getpid()}")
    backup.write_bytes(tail)
    with open(path, "r+b") as f:
        f.truncate(cut)
        f.flush()
        os.fsync(f.fileno())
    warnings.warn(
        f"Optuna journal {path} ended in a torn line ({len(tail)} bytes, a write cut short); "
        f"removed it, kept in {backup}",
        stacklevel=3,
    )
    return backup
