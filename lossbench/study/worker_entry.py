"""The entry point of a spawned worker process, kept light on purpose.

A spawned process unpickles its target, importing the target's module, before it runs anything:
were the target in `workers` (torch, optuna, mlflow), a parent killed during those seconds of
imports would leave a worker that notices nothing until they end, then trains unsupervised. This
module imports only the standard library, so `main` starts watching the parent (its pid, taken at
spawn) within a fraction of a second of the process's start, and only then imports the worker.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
import time
from typing import Any

PR_SET_PDEATHSIG = 1  # linux/prctl.h
POLL_S = 0.25


def exit_with_parent(parent: int, poll_seconds: float = POLL_S) -> None:
    """Exit this process as soon as its parent (pid `parent`) is gone, also when it died while this
    one was starting: an orphan would go on training unseen (its RUNNING trial is recovered by the
    next run). On Linux the kernel kills it with its parent (`PR_SET_PDEATHSIG`, also during a long
    import that holds the GIL); everywhere a thread polls the parent's pid."""
    if sys.platform.startswith("linux"):
        # The parent's creating thread is the one that waits for the workers: safe here.
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # died before the watch began
        os._exit(3)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_seconds)
        os._exit(3)

    threading.Thread(target=watch, name="lossbench-parent-watch", daemon=True).start()


def main(inbox: Any, parent_pid: int) -> None:
    """Watch the parent, then import the worker (torch, optuna, mlflow) and run it."""
    exit_with_parent(parent_pid)
    from lossbench.study.workers import worker_main

    worker_main(inbox)
