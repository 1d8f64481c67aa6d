"""Who runs a trial, and whether that worker is still alive.

A worker's identity is recorded on every trial (user attributes `host`, `pid`, `worker_token`,
`worker_started`) and on its MLflow run (tag `lossbench.worker`): the host name (`socket.gethostname()`,
or `$LOSSBENCH_HOST` where several machines share one name, e.g. containers), a random token per
process, the pid and the process's start time (seconds since the epoch, psutil, 10 ms ticks).

A trial of this host is alive while a process with its pid exists AND started at the recorded time: a
pid reused by another process is dead. Trials of other hosts cannot be judged here; RDB storages judge
them by heartbeat (`lossbench.study.queue`).
"""

from __future__ import annotations

import functools
import os
import secrets
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psutil

HOST_ENV = "LOSSBENCH_HOST"


def host_name() -> str:
    """This machine's name as recorded on trials: `$LOSSBENCH_HOST`, else the system host name."""
    return os.environ.get(HOST_ENV) or socket.gethostname()


def start_time(pid: int) -> float | None:
    """When process `pid` started (seconds since the epoch, rounded to 10 ms); None when it does not
    exist; psutil.AccessDenied where the system hides it."""
    try:
        return round(psutil.Process(pid).create_time(), 2)
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None


@dataclass(frozen=True)
class Worker:
    """A worker process's identity: host, pid, per-process random token, process start time."""

    host: str
    pid: int
    token: str
    started: float | None  # None on trials recorded before start times were (then the pid alone counts)

    def attrs(self) -> dict[str, Any]:
        """As trial user attributes."""
        return {
            "host": self.host,
            "pid": self.pid,
            "worker_token": self.token,
            "worker_started": self.started,
        }

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> Worker | None:
        """The identity recorded on a trial; None when the trial has none (not started by a worker)."""
        if "host" not in attrs or "pid" not in attrs:
            return None
        started = attrs.get("worker_started")
        return cls(
            str(attrs["host"]),
            int(attrs["pid"]),
            str(attrs.get("worker_token", "")),
            None if started is None else float(started),
        )

    def __str__(self) -> str:
        return f"{self.host} pid {self.pid} token {self.token} started {self.started}"

    def alive_here(self) -> bool | None:
        """Whether this worker still runs: None for another host's worker (use the heartbeat)."""
        if self.host != host_name():
            return None
        try:
            now = start_time(self.pid)
        except psutil.AccessDenied:  # another user's process (some systems): it exists, start unknown
            return True
        return now is not None and (self.started is None or now == self.started)


@functools.cache
def _current(pid: int) -> Worker:
    started = start_time(pid)
    assert started is not None  # this very process
    return Worker(host_name(), pid, secrets.token_hex(4), started)


def current_worker() -> Worker:
    """This process's identity (one token per process)."""
    return _current(os.getpid())
