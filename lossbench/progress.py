"""What long work is doing, told from its first second: one line per stage on stderr.

Shown only when stderr is a terminal (as the progress bars), so that a failing command run by a
script still prints exactly one line."""

from __future__ import annotations

import sys
import time

_START = time.monotonic()


def stage(message: str, enabled: bool = True) -> None:
    """Print `[  12.3 s] message` on stderr (seconds since lossbench was imported) when `enabled` and
    stderr is a terminal."""
    if enabled and sys.stderr.isatty():
        print(f"[{time.monotonic() - _START:7.1f} s] {message}", file=sys.stderr, flush=True)
