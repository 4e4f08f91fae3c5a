"""The deployment's backing services, as production has them: a PostgreSQL 15 server for the metadata DB and a
Redis server as the Celery broker, each a real server on a free loopback port, started and stopped here.

PostgreSQL refuses to run as root, so under root (CI) its data folder belongs to the ``postgres`` user and every
``initdb``/``pg_ctl`` runs through ``runuser``; the folder is a fresh ``mkdtemp`` outside pytest's root-only
temporary tree, which that user could not enter. Redis keeps nothing on disk (``--save ''``, no AOF).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.system.support import free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def _port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


class Postgres:
    """A PostgreSQL 15 cluster in a fresh folder, reachable as ``airflow@127.0.0.1:port/postgres`` (trust)."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="openai-batch-pg-"))
        self.port = free_port()
        self.as_root = os.geteuid() == 0
        if self.as_root:
            shutil.chown(self.dir, "postgres")
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://airflow@127.0.0.1:{self.port}/postgres"

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user=airflow dbname=postgres"

    def _run(self, *argv: str, timeout: float = 120) -> None:
        command = ["runuser", "-u", "postgres", "--", *argv] if self.as_root else list(argv)
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=self.dir)
        assert result.returncode == 0, f"{' '.join(argv)} failed:\n{result.stdout}\n{result.stderr}"

    def init(self) -> None:
        self._run(str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "airflow", "--no-sync")

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=300"
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.log), "-w", "start"
        )

    def stop(self) -> None:
        """A fast shutdown: open sessions are disconnected, as in a database fail-over or a restart."""
        if (self.data / "postmaster.pid").exists():
            self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class Redis:
    """A ``redis-server`` on a free port that writes nothing to disk; the Celery broker."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.folder = folder
        self.log = folder / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 60) -> None:
        server = shutil.which("redis-server")
        assert server, (
            "redis-server is not installed: `make test-deploy` installs it (apt-get install redis-server)"
        )
        self.folder.mkdir(parents=True, exist_ok=True)
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [server, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                cwd=self.folder,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        while not _port_open(self.port):
            assert self.proc.poll() is None, f"redis-server exited: {self.log.read_text(errors='replace')}"
            assert time.monotonic() < deadline, "redis-server did not open its port"
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
