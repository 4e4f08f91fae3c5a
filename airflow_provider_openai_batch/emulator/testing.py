"""Start the emulator as a subprocess and drive its admin API; what the pytest fixtures hand out."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from .settings import settings_as_flags

# Setting names are the fields of ``settings.Settings``. Fast enough that a test sees every state within a
# second or so, slow enough that a poller sees them at all.
TEST_SETTINGS: dict[str, Any] = {
    "time_scale": 1.0,
    "rate": 500.0,
    "validating_seconds": 0.3,
    "finalizing_seconds": 0.3,
    "cancelling_seconds": 0.3,
}


class EmulatorClient:
    """A running emulator: its URLs, process id and admin calls.

    :param base_url: the ``.../v1`` URL to give the ``openai`` client (``OPENAI_BASE_URL``).
    :param process: the emulator subprocess, when this object started it.
    """

    def __init__(self, base_url: str, process: subprocess.Popen[str] | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.root_url = self.base_url.removesuffix("/v1")
        self.process = process
        self._http = httpx.Client(base_url=self.root_url + "/_emulator", timeout=30)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def _call(self, method: str, path: str, json: Any = None) -> Any:
        response = self._http.request(method, path, json=json)
        if response.is_error:  # say why: the admin API names the field and the value it rejected
            raise httpx.HTTPStatusError(
                f"Expected success from {method} {response.url} "
                f"but received {response.status_code}: {response.text}",
                request=response.request,
                response=response,
            )
        return response.json()

    def reset(self) -> None:
        """Forget all files, batches, journal entries and faults; settings go back to their start values."""
        self._call("POST", "/reset")

    def journal(self) -> list[dict[str, Any]]:
        """Every API call received since the last reset: ``{"method", "path", "status", "query", "time"}``."""
        entries: list[dict[str, Any]] = self._call("GET", "/journal")
        return entries

    def calls(
        self, method: str | None = None, path_prefix: str = "", *, status: int | None = None
    ) -> list[dict[str, Any]]:
        """The journal entries matching every filter given.

        :param method: the HTTP method; any when None.
        :param path_prefix: what the path starts with (``"/v1/batches"`` also matches ``/v1/batches/x``).
        :param status: the HTTP status answered; any when None (a dropped call's entry has status None).
        """
        return [
            entry
            for entry in self.journal()
            if (method is None or entry["method"] == method.upper())
            and entry["path"].startswith(path_prefix)
            and (status is None or entry["status"] == status)
        ]

    def paid_creates(self) -> list[str]:
        """Ids of the batches created and billed: ``POST /v1/batches`` answered 200, even if the answer was then
        lost, except batches a full queue refused (``billed: false`` in the journal; see :meth:`free_creates`)."""
        return [entry["id"] for entry in self._creates() if entry.get("billed", True)]

    def free_creates(self) -> list[str]:
        """Ids of the batches created and then refused, unbilled, by a full queue (``token_limit_exceeded``)."""
        return [entry["id"] for entry in self._creates() if not entry.get("billed", True)]

    def _creates(self) -> list[dict[str, Any]]:
        return [
            entry
            for entry in self.journal()
            if entry["method"] == "POST" and entry["path"] == "/v1/batches" and entry["status"] == 200
        ]

    def deleted_files(self) -> list[str]:
        """Ids of the files deleted (``DELETE /v1/files/{id}`` answered 200), in order."""
        return [
            entry["path"].removeprefix("/v1/files/")
            for entry in self.journal()
            if entry["method"] == "DELETE"
            and entry["path"].startswith("/v1/files/")
            and entry["status"] == 200
        ]

    def add_fault(self, **spec: Any) -> dict[str, Any]:
        """Arm a fault, e.g. ``add_fault(method="POST", path="/v1/batches", status=429, retry_after=1)``."""
        fault: dict[str, Any] = self._call("POST", "/faults", spec)
        return fault

    def clear_faults(self) -> None:
        self._call("DELETE", "/faults")

    def faults(self) -> list[dict[str, Any]]:
        armed: list[dict[str, Any]] = self._call("GET", "/faults")
        return armed

    def configure(self, **settings: Any) -> dict[str, Any]:
        """Change settings by name (the fields of ``settings.Settings``); returns them all.

        :raises httpx.HTTPStatusError: on an unknown name or a bad value (then nothing changed).
        """
        changed: dict[str, Any] = self._call("POST", "/config", settings)
        return changed

    def config(self) -> dict[str, Any]:
        current: dict[str, Any] = self._call("GET", "/config")
        return current

    def expire(self, batch_id: str) -> dict[str, Any]:
        """Make the batch expire now, as if its completion window had passed."""
        batch: dict[str, Any] = self._call("POST", f"/batches/{batch_id}/expire")
        return batch

    def seed_batches(
        self, count: int, status: str = "completed", metadata: dict[str, str] | None = None, **fields: Any
    ) -> list[str]:
        """Insert ``count`` batches directly (no input file, no processing; they never change status).

        :param count: how many, 1..10000.
        :param status: the status they all have.
        :param metadata: the metadata they all carry.
        :param fields: ``endpoint`` or ``created_at`` (Unix seconds; default now).
        :return: their ids, oldest first.
        """
        ids: list[str] = self._call(
            "POST", "/batches/seed", {"count": count, "status": status, "metadata": metadata, **fields}
        )["ids"]
        return ids

    def close(self) -> None:
        self._http.close()


def start_emulator(
    data_dir: Path, *extra_args: str, settings: dict[str, Any] | None = None, timeout: float = 30
) -> EmulatorClient:
    """Start ``python -m airflow_provider_openai_batch.emulator`` on a free port and wait for its URL line.

    :param data_dir: where the emulator keeps file bytes.
    :param extra_args: more command-line flags, e.g. ``"--fault", "POST:/v1/batches:429"``.
    :param settings: settings by name (the fields of ``Settings``) over :data:`TEST_SETTINGS`; checked here,
        so an unknown name or bad value raises ``SettingsError`` before any process starts.
    :param timeout: seconds to wait for the URL line.
    """
    flags = settings_as_flags({**TEST_SETTINGS, **(settings or {})})
    args = [
        sys.executable,
        "-m",
        "airflow_provider_openai_batch.emulator",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
    ]
    args += ["--data-dir", str(data_dir), *flags]
    process = subprocess.Popen(
        [*args, *extra_args],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    found: list[str] = []
    reader = threading.Thread(target=lambda: found.append(process.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(timeout)
    line = found[0].strip() if found else ""
    if not line.startswith("OPENAI_BASE_URL="):
        stop_emulator(process)
        raise RuntimeError(f"The emulator did not print OPENAI_BASE_URL= within {timeout}s (got {line!r})")
    return EmulatorClient(line.partition("=")[2], process)


def stop_emulator(process: subprocess.Popen[str], timeout: float = 10) -> None:
    """Terminate the emulator and wait for it; kill it if it does not stop in ``timeout`` seconds."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)
    if process.stdout is not None:
        process.stdout.close()


def wait_for(predicate: Any, timeout: float = 30, interval: float = 0.05) -> Any:
    """Call ``predicate`` until it returns something truthy; that value, or TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout}s")
        time.sleep(interval)
