"""The provider's metrics reach a StatsD listener (a UDP socket here) with the names and tags docs/observability.md lists.

A DAG runs through Airflow (dag.test) against the emulator, with Airflow's Stats set up the way the task runner
sets it up from ``[metrics]`` on each minor: StatsD on, tags in the InfluxDB line style.
"""

from __future__ import annotations

import inspect
import json
import re
import socket
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest

from tests.support.builders import write_requests

pytestmark = pytest.mark.integration

DOCS = Path(__file__).resolve().parents[2] / "docs" / "observability.md"


def _start_stats():
    """Set Airflow's Stats up from ``[metrics]`` as the running minor's task runner does; return how to undo it."""
    try:
        from airflow.sdk.observability.metrics import stats_utils
        from airflow.sdk.observability.stats import Stats
    except ImportError:  # Airflow 3.1: a metaclass picks the logger from [metrics] on first use
        from airflow.metrics.statsd_logger import get_statsd_logger
        from airflow.stats import Stats

        meta = type(Stats)
        previous = meta.factory
        meta.factory, Stats.instance = (
            get_statsd_logger,
            None,
        )  # the instance lives on Stats, the factory on its type

        def stop() -> None:
            meta.factory, Stats.instance = previous, None

        return stop
    from airflow.sdk._shared.observability.metrics.base_stats_logger import NoStatsLogger

    if "stats_cls" in inspect.signature(stats_utils.get_stats_factory).parameters:  # Airflow 3.2
        Stats.initialize(factory=stats_utils.get_stats_factory(Stats))
        return lambda: Stats.initialize(factory=NoStatsLogger)
    Stats.initialize(factory=stats_utils.get_stats_factory(), export_legacy_names=False)
    return lambda: Stats.initialize(factory=NoStatsLogger, export_legacy_names=False)


@pytest.fixture
def statsd(monkeypatch):
    """A UDP socket Airflow's StatsD client sends to; yields a function returning the lines received so far."""
    import statsd  # noqa: F401  (the test extra: Airflow's StatsD backend needs it)

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    for key, value in {
        "STATSD_ON": "True",
        "STATSD_HOST": "127.0.0.1",
        "STATSD_PORT": str(sock.getsockname()[1]),
        "STATSD_PREFIX": "airflow",
        "STATSD_INFLUXDB_ENABLED": "True",
    }.items():
        monkeypatch.setenv(f"AIRFLOW__METRICS__{key}", value)
    stop_stats = _start_stats()
    lines: list[str] = []

    def received() -> list[str]:
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            try:
                data = sock.recv(65536)
            except TimeoutError:
                continue
            lines.extend(data.decode().splitlines())
        return lines

    yield received
    stop_stats()
    sock.close()


def _ours(lines: list[str]) -> dict[str, list[tuple[dict[str, str], str, str]]]:
    """``airflow.openai_batch.<name>,tag=v,...:value|type`` lines by name: (tags, value, type)."""
    found: dict[str, list[tuple[dict[str, str], str, str]]] = {}
    for line in lines:
        m = re.fullmatch(r"airflow\.openai_batch\.([a-z_]+)((?:,[^,:]+=[^,:]*)*):([-\d.e+]+)\|(c|g|ms)", line)
        if m:
            tags = dict(t.split("=", 1) for t in m.group(2).split(",")[1:])
            found.setdefault(m.group(1), []).append((tags, m.group(3), m.group(4)))
    return found


def test_a_landed_run_sends_the_documented_metrics_with_dag_and_task_tags(
    statsd, run_dag, openai_conn, tmp_path, monkeypatch
):
    write_requests(tmp_path / "in.jsonl", 5, fail={1: 400})
    spec = {
        "input_path": str(tmp_path / "in.jsonl"),
        "output_path": str(tmp_path / "out"),
        "max_failed_ratio": 0.5,
    }
    monkeypatch.setenv("OPENAI_BATCH_PAGES_KWARGS", json.dumps(spec))
    result = run_dag("openai_batch_pages_shown")
    assert result.state == "success"
    got = _ours(statsd())
    tags = {"dag_id": "openai_batch_pages_shown", "task_id": "score"}
    expected = {
        "batches_created": ("1", "c"),
        "batches_completed": ("1", "c"),
        "requests_completed": ("4", "c"),
        "requests_failed": ("1", "c"),
        "batches_in_flight": None,  # 1 while deferred, 0 once landed
        "estimated_cost_usd": None,
        "landing_bytes": None,
        "landing_duration": None,
    }
    assert set(expected) <= set(got), got
    for name, want in expected.items():
        assert all(t == tags for t, _, _ in got[name]), (name, got[name])
        if want is not None:
            assert [(v, k) for _, v, k in got[name]] == [want], (name, got[name])
    assert [v for _, v, _ in got["batches_in_flight"]] == ["1", "0"]
    cost = result.xcoms[("score", "return_value")]["cost"]["total_usd"]
    assert float(got["estimated_cost_usd"][0][1]) == pytest.approx(cost)
    out, errors = (
        Path(urlparse(result.xcoms[("score", "return_value")][k]).path) for k in ("output_path", "error_path")
    )
    assert int(got["landing_bytes"][0][1]) == out.stat().st_size + errors.stat().st_size
    # Every name sent is in the docs' table, and the table names only what is sent somewhere.
    documented = set(re.findall(r"^\| `openai_batch\.([a-z_]+)`", DOCS.read_text(), flags=re.M))
    assert set(got) <= documented
