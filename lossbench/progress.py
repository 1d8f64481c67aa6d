"""What long work is doing, told from its first second: one line per stage on stderr.

Stages are shown only when stderr is a terminal (as the progress bars), so that a failing command
run by a script still prints exactly one line. Where stderr is a file or a pipe (a batch job, nohup),
progress bars stay silent until the end, so long work logs `milestone` lines instead (a study: one
per finished cell)."""

from __future__ import annotations

import sys
import time

_START = time.monotonic()


def _say(message: str) -> None:
    """Print `[  12.3 s] message` on stderr: seconds since lossbench was imported."""
    print(f"[{time.monotonic() - _START:7.1f} s] {message}", file=sys.stderr, flush=True)


def stage(message: str, enabled: bool = True) -> None:
    """Say `message` when `enabled` and stderr is a terminal."""
    if enabled and sys.stderr.isatty():
        _say(message)


def milestone(message: str) -> None:
    """Say `message` when stderr is NOT a terminal (there a progress bar shows it)."""
    if not sys.stderr.isatty():
        _say(message)


def duration(seconds: float) -> str:
    """`seconds` as "45 s", "3 min 12 s" or "2 h 05 min"."""
    s = round(seconds)
    if s < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"
