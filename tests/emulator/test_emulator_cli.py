"""The command line and the pytest fixtures, as a user runs them."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

import httpx
import pytest
from conftest import request_line, upload, wait_terminal

from airflow_provider_openai_batch.emulator.testing import EmulatorClient, start_emulator, stop_emulator


def test_cli_prints_base_url_and_arms_flag_faults(tmp_path):
    emulator = start_emulator(
        tmp_path, "--fault", "POST:/v1/batches:503:times=2", "--embedding-dim", "4", settings={"rate": 1000}
    )
    try:
        assert emulator.base_url.startswith("http://127.0.0.1:") and emulator.base_url.endswith("/v1")
        assert int(emulator.base_url.rsplit(":", 1)[1].removesuffix("/v1")) > 0
        assert [(f["status"], f["times"]) for f in emulator.faults()] == [(503, 2)]
        config = emulator.config()
        assert (config["embedding_dim"], config["rate"]) == (4, 1000.0)
        assert httpx.get(emulator.base_url + "/batches").status_code == 200
    finally:
        stop_emulator(emulator.process)
    assert emulator.process.returncode is not None


@pytest.mark.parametrize("args", [["--fault", "GET:/x"], ["--rate", "-3"], ["--fail-custom-id-regex", "("]])
def test_cli_rejects_bad_flags(args):
    result = subprocess.run(
        [sys.executable, "-m", "airflow_provider_openai_batch.emulator", "--port", "0", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and result.stdout == ""
    assert "openai-batch-emulator:" in result.stderr


def test_console_script_is_installed():
    script = os.path.join(os.path.dirname(sys.executable), "openai-batch-emulator")
    if not os.path.exists(script):
        pytest.skip("console script not installed in this environment")
    result = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "--fault" in result.stdout


def test_fixture_object(openai_emulator, openai_emulator_server, client):
    assert openai_emulator is openai_emulator_server
    assert isinstance(openai_emulator, EmulatorClient)
    assert openai_emulator.root_url + "/v1" == openai_emulator.base_url
    assert openai_emulator.pid == openai_emulator.process.pid and openai_emulator.process.poll() is None
    assert openai_emulator.journal() == []  # reset before each test
    file_id = upload(client, [request_line("a"), request_line("b")])
    batch = client.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    wait_terminal(client, batch.id)
    assert len(openai_emulator.calls("POST", "/v1/batches")) == 1
    assert len(openai_emulator.calls("POST", "/v1/files")) == 1
    assert openai_emulator.calls("GET", "/v1/batches/") and not openai_emulator.calls("DELETE")


def test_kept_alive_requests_do_not_wait_for_delayed_acks(openai_emulator):
    # Without TCP_NODELAY each request on a kept-alive connection took ~45 ms (Linux delays an ACK >= 40 ms).
    timings = []
    with httpx.Client(base_url=openai_emulator.root_url) as http:
        for _ in range(21):
            started = time.perf_counter()
            http.get("/_emulator/health").raise_for_status()
            timings.append(time.perf_counter() - started)
    assert statistics.median(timings) < 0.02, timings
