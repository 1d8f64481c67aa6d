"""A throwaway PostgreSQL cluster and an MLflow tracking server on 127.0.0.1, for tests (marker `servers`).

`postgres_cluster()` runs `initdb` in a fresh folder (as the `postgres` user when running as root),
starts it with `pg_ctl` on a free port with its Unix socket in that folder, and always stops it and
deletes the folder, also on failure. `mlflow_server()` runs `mlflow server` against a backend URL
(artifacts served through the server, `--serve-artifacts`), waits for `GET /health` and kills its
process group at the end. Where PostgreSQL is absent or cannot start, the fixtures skip with the reason.
"""

from __future__ import annotations

import glob
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

SUPERUSER = "lossbench"  # the cluster's superuser; trust authentication, local connections only
HEALTH_TIMEOUT_S = 180.0  # seen: over 60 s at load average 19 on two cores


class ServerUnavailable(RuntimeError):
    """PostgreSQL or MLflow could not be found or started (the fixtures turn this into a skip)."""


def postgres_bin_dir() -> Path | None:
    """The folder holding initdb and pg_ctl: PATH first, then Debian's /usr/lib/postgresql/*/bin."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(versions[-1]).parent if versions else None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_cluster_owner(argv: list[str]) -> list[str]:
    """`argv` run as `postgres` when we are root (PostgreSQL refuses to run as root)."""
    return ["su", "postgres", "-c", shlex.join(argv)] if os.geteuid() == 0 else argv


@dataclass(frozen=True)
class Postgres:
    """A running cluster: its binaries, data folder (also the socket folder) and port."""

    bin_dir: Path
    data_dir: Path
    port: int

    def url(self, database: str = "postgres") -> str:
        """SQLAlchemy URL (psycopg 3) of `database` on this cluster."""
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def pg_ctl(self, *args: str) -> None:
        """Run `pg_ctl ARGS` on this cluster (options: port, socket folder, loopback only, no fsync)."""
        options = f"-p {self.port} -k {self.data_dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        argv = [str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-o", options]
        argv += ["-l", str(self.data_dir / "server.log"), "-w", *args]
        run = subprocess.run(_as_cluster_owner(argv), capture_output=True, text=True, timeout=120)
        if run.returncode != 0:
            raise ServerUnavailable(f"pg_ctl {' '.join(args)} failed: {(run.stderr or run.stdout).strip()}")

    def restart(self) -> None:
        """Restart the server (`pg_ctl restart`, fast shutdown): open connections are dropped."""
        self.pg_ctl("-m", "fast", "restart")

    def create_database(self, name: str) -> str:
        """Create the database `name`; its URL."""
        import psycopg

        conninfo = f"host=127.0.0.1 port={self.port} user={SUPERUSER} dbname=postgres"
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@contextmanager
def postgres_cluster() -> Iterator[Postgres]:
    """A fresh cluster, stopped and deleted on exit; ServerUnavailable when it cannot start."""
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        raise ServerUnavailable(
            "PostgreSQL not installed (no initdb on PATH or in /usr/lib/postgresql/*/bin)"
        )
    root = Path(tempfile.mkdtemp(prefix="lossbench-pg-"))  # short: the socket path is limited to 107 bytes
    data_dir = root / "data"
    data_dir.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(data_dir, "postgres")
    cluster = Postgres(bin_dir, data_dir, free_port())
    try:
        argv = [str(bin_dir / "initdb"), "-D", str(data_dir), "-U", SUPERUSER, "-A", "trust", "--no-sync"]
        run = subprocess.run(_as_cluster_owner(argv), capture_output=True, text=True, timeout=120)
        if run.returncode != 0:
            raise ServerUnavailable(f"initdb failed: {(run.stderr or run.stdout).strip()}")
        cluster.pg_ctl("start")
        yield cluster
    finally:
        if (data_dir / "postmaster.pid").exists():
            subprocess.run(
                _as_cluster_owner(
                    [str(bin_dir / "pg_ctl"), "-D", str(data_dir), "-m", "immediate", "-w", "stop"]
                ),
                capture_output=True,
                timeout=60,
            )
        shutil.rmtree(root, ignore_errors=True)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


class MlflowServer:
    """`mlflow server` on a free 127.0.0.1 port (kept across restarts) with proxied artifacts in
    `artifacts_dir`, against `backend_uri`: `start` runs it and returns its URL once `/health`
    answers (waiting up to HEALTH_TIMEOUT_S), `signal` signals its process group, `stop` kills it."""

    def __init__(self, backend_uri: str, artifacts_dir: Path) -> None:
        self.backend_uri, self.artifacts_dir, self.port = backend_uri, artifacts_dir, free_port()
        self.process: subprocess.Popen | None = None

    def start(self) -> str:
        """Run the server; its URL once it answers."""
        url = f"http://127.0.0.1:{self.port}"
        self.artifacts_dir.mkdir(parents=True, exist_ok=True)
        log = self.artifacts_dir.parent / f"mlflow-server-{self.port}.log"
        argv = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port)]
        argv += ["--backend-store-uri", self.backend_uri, "--serve-artifacts", "--workers", "1"]
        argv += ["--artifacts-destination", str(self.artifacts_dir)]
        with log.open("a") as out:
            self.process = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + HEALTH_TIMEOUT_S
        while not _healthy(url):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = log.read_text().strip().splitlines()[-5:]
                raise ServerUnavailable(f"mlflow server did not become healthy: {' | '.join(tail)}")
            time.sleep(0.5)
        return url

    def signal(self, number: int) -> None:
        """Send `number` to the server's process group (SIGSTOP: it hangs; SIGCONT: it goes on)."""
        os.killpg(self.process.pid, number)

    def stop(self) -> None:
        """Kill the server (SIGKILL: as a crash would, and without its seconds of graceful shutdown)."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@contextmanager
def mlflow_server(backend_uri: str, artifacts_dir: Path) -> Iterator[str]:
    """A started MlflowServer's URL; the server is stopped on exit."""
    server = MlflowServer(backend_uri, artifacts_dir)
    try:
        yield server.start()
    finally:
        server.stop()
