"""The batch pages over HTTP, served by a real Airflow API server with the plugin, on real DAG runs' records.

DAG runs go through Airflow (dag.test) against the emulator; the API server reads the same metadata DB and
asks the emulator (one listing per connection per refresh, counted in its journal). Logins are Airflow's
simple auth manager with per-DAG access narrowed through the auth manager interface (tests/support/dag_access.py).
"""

from __future__ import annotations

import html
import json
import math
import re
import time

import pytest

from airflow_provider_openai_batch.plugin.app import create_app
from tests.conftest import free_port
from tests.integration.conftest import TEST_API_KEY
from tests.support.batch_pages import RESTRICTED_USER, push_batch_task, start_api_server
from tests.support.builders import write_requests

pytestmark = pytest.mark.integration

SHOWN, HIDDEN = "openai_batch_pages_shown", "openai_batch_pages_hidden"
SCRIPT = "<script>alert('owned')</script>"
TAG = "<img src=x onerror=alert(1)>"  # a folder name can hold it, a slash it cannot
PREFIX = "/openai-batch"
REFRESH = 8.0  # [openai_batch] page_refresh_seconds of the API server: views inside it share a listing


@pytest.fixture(scope="module")
def api(airflow_db, openai_emulator_server, tmp_path_factory):
    server = start_api_server(
        tmp_path_factory.mktemp("api-server"),
        free_port(),
        openai_emulator_server.base_url,
        TEST_API_KEY,
        hidden_dags=HIDDEN,
        refresh_seconds=REFRESH,
    )
    yield server
    server.stop()


def _run(run_dag, monkeypatch, tmp_path, dag_id, n=6, **kwargs):
    write_requests(tmp_path / dag_id / "in.jsonl", n)
    out = str(tmp_path / dag_id / TAG / "out")
    spec = {"input_path": str(tmp_path / dag_id / "in.jsonl"), "output_path": out, **kwargs}
    monkeypatch.setenv("OPENAI_BATCH_PAGES_KWARGS", json.dumps(spec))
    return run_dag(dag_id)


def test_every_route_refuses_a_request_without_a_login(api):
    routes = [r.path for r in create_app().routes]
    assert sorted(routes) == ["/", "/task"]
    for path in routes:
        url = f"{PREFIX}{path}?dag_id={SHOWN}&run_id=r&task_id=score"
        with api.client(None) as anonymous:
            assert anonymous.get(url).status_code == 401, path
            assert anonymous.get(url, headers={"Authorization": "Bearer not-a-token"}).status_code in (
                401,
                403,
            )
            assert anonymous.get(url, cookies={"_token": "forged"}).status_code in (401, 403)


def test_finished_batches_with_cost_escaped_metadata_and_per_dag_access(
    api, run_dag, openai_conn, tmp_path, monkeypatch
):
    shown = _run(run_dag, monkeypatch, tmp_path, SHOWN, metadata={"note": SCRIPT})
    hidden = _run(run_dag, monkeypatch, tmp_path, HIDDEN)
    assert shown.state == hidden.state == "success"
    result = shown.xcoms[("score", "return_value")]
    hidden_id = hidden.xcoms[("score", "return_value")]["batch_id"]

    with api.client("admin") as admin:
        page = admin.get(f"{PREFIX}/", params={"days": 30})
        tab = admin.get(
            f"{PREFIX}/task",
            params={
                "dag_id": SHOWN,
                "run_id": shown.run.run_id,
                "task_id": "score",
                "map_index": "{MAP_INDEX}",
            },
        )
    assert page.status_code == tab.status_code == 200
    for answer in (page, tab):
        csp = answer.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src" not in csp and "unsafe-inline" not in csp
        assert result["batch_id"] in answer.text
        assert TAG not in answer.text and "<img" not in answer.text
    assert "&lt;img src=x onerror=alert(1)&gt;" in tab.text  # the landed files' folder, escaped
    assert hidden_id in page.text  # admin reads both DAGs
    # The final cost the task's BatchResult estimated, on the tab and in the run's totals.
    final = f"${result['cost']['total_usd']:.4f}"
    assert re.search(rf'id="final-cost">{re.escape(final)}<', tab.text), tab.text
    assert f"Estimated cost: {final}" in page.text
    assert "6/6 requests" in tab.text and 'value="6"' in tab.text
    for kind in ("output_path", "manifest_path"):
        assert html.escape(result[kind]) in tab.text

    with api.client(RESTRICTED_USER) as restricted:
        own = restricted.get(f"{PREFIX}/", params={"days": 30})
        assert own.status_code == 200
        assert result["batch_id"] in own.text and hidden_id not in own.text and HIDDEN not in own.text
        assert restricted.get(f"{PREFIX}/", params={"dag_id": HIDDEN}).text.count(hidden_id) == 0
        forbidden = restricted.get(
            f"{PREFIX}/task", params={"dag_id": HIDDEN, "run_id": hidden.run.run_id, "task_id": "score"}
        )
        assert forbidden.status_code == 403 and hidden_id not in forbidden.text


def test_500_live_batches_cost_one_listing_per_connection_per_refresh(
    api, run_dag, openai_conn, tmp_path, monkeypatch
):
    """50 deferred tasks x 10 batches in flight: views share one listing per refresh, never a call per batch."""
    run = _run(run_dag, monkeypatch, tmp_path, SHOWN, n=2)
    live = openai_conn.seed_batches(500, status="in_progress", metadata={"note": SCRIPT})
    for task in range(50):
        push_batch_task(SHOWN, run.run.run_id, "score", task, live[task * 10 : task * 10 + 10])

    def listings():
        return len([c for c in openai_conn.calls("GET", "/v1/batches") if c["path"] == "/v1/batches"])

    before, seen = listings(), len(openai_conn.journal())
    time.sleep(REFRESH + 0.1)  # the previous test's snapshot is older than page_refresh_seconds now
    with api.client("admin") as admin:
        started = time.perf_counter()
        first = admin.get(f"{PREFIX}/", params={"dag_id": SHOWN})
        print(
            f"first view of 500 live batches: {time.perf_counter() - started:.2f} s",
            first.headers["server-timing"],
        )
        after_first, listed = listings(), time.monotonic()
        for _ in range(3):
            assert (
                admin.get(f"{PREFIX}/", params={"dag_id": SHOWN, "state": "in_progress"}).status_code == 200
            )
        after_views = listings()
        assert time.monotonic() - listed < REFRESH, (
            "the views took longer than a refresh: the machine is too slow"
        )
        time.sleep(REFRESH + 0.1)
        admin.get(f"{PREFIX}/", params={"dag_id": SHOWN})
        after_refresh = listings()
    assert first.status_code == 200
    assert first.text.count('class="batch"') >= 500 and first.text.count("status-in_progress") >= 500
    pages_per_listing = math.ceil(502 / 100)  # the emulator holds 500 live batches and the finished run's
    assert 1 <= after_first - before <= pages_per_listing
    assert after_views == after_first  # within the refresh: no call at all
    assert 1 <= after_refresh - after_views <= pages_per_listing
    assert not [c for c in openai_conn.journal()[seen:] if re.fullmatch(r"/v1/batches/[^/]+", c["path"])]
    assert "As of " in first.text
    # The live batches' metadata, from the API's answers, escaped.
    assert SCRIPT not in first.text and "<script" not in first.text.lower()
    assert first.text.count("note=&lt;script&gt;alert(&#39;owned&#39;)&lt;/script&gt;") >= 500
