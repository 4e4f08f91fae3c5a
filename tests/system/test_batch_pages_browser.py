"""The batch pages in a real browser (Debian's chromium, headless, driven by Playwright) against real Airflow.

Scheduler, triggerer, dag-processor and API server run as processes; the emulator processes the batch slowly
(``rate``), so the task stays deferred while the test logs in (simple auth manager, generated password file),
watches the Batch tab's bar advance and the OpenAI Batches page list the run, then sees the final cost once the
task landed. Screenshots go to docs/ (the README shows them). ``make test-browser`` installs chromium if missing.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from tests.support.builders import write_requests
from tests.system.support import REPO, new_airflow, task_instance, wait_until, wait_until_parsed

pytestmark = pytest.mark.system

CHROMIUM = Path("/usr/bin/chromium")
DAG_ID = "openai_batch_pages_shown"
LOGICAL_DATE = "2026-11-02T00:00:00+00:00"
REQUESTS, RATE = 150, 2.0  # requests per second: about 75 s in progress
DOCS = REPO / "docs"


def test_batch_tab_and_page_show_a_deferred_batch_advancing_then_its_cost(tmp_path, openai_emulator):
    if not CHROMIUM.exists():
        pytest.fail(
            "Debian's chromium is missing: `make test-browser` installs it (apt-get install chromium)"
        )
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright (PyPI) is a test dependency")
    openai_emulator.configure(rate=RATE)
    write_requests(tmp_path / "in.jsonl", REQUESTS)
    kwargs = {
        "input_path": str(tmp_path / "in.jsonl"),
        "output_path": str(tmp_path / "out"),
        "metadata": {"owner": "<script>alert(1)</script>"},
    }
    af, port = new_airflow(
        tmp_path,
        openai_emulator.base_url,
        [REPO / "tests" / "dags" / "pages_dags.py"],
        extra_env={
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__OPENAI_BATCH__PAGE_REFRESH_SECONDS": "1",
            "OPENAI_BATCH_PAGES_KWARGS": json.dumps(kwargs),
        },
    )
    try:
        af.start_all(port)
        wait_until_parsed(af, DAG_ID)
        password = json.loads((af.home / "simple_auth_manager_passwords.json.generated").read_text())["admin"]
        token = httpx.post(
            f"{af.api_url}/auth/token", json={"username": "admin", "password": password}, timeout=60
        ).json()["access_token"]
        answer = httpx.post(
            f"{af.api_url}/api/v2/dags/{DAG_ID}/dagRuns",
            json={"logical_date": LOGICAL_DATE},
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
        )
        assert answer.status_code == 200, answer.text
        run_id = answer.json()["dag_run_id"]
        wait_until(
            af,
            "the task to defer",
            lambda: (task_instance(af, DAG_ID, run_id, "score") or ("",))[0] == "deferred",
            180,
        )
        # As the UI fills the tab's href: each value URL-encoded (a run id holds "+"), {MAP_INDEX} left as it is.
        tab_url = f"{af.api_url}/openai-batch/task?dag_id={DAG_ID}&run_id={quote(run_id, safe='')}&task_id=score&map_index={{MAP_INDEX}}"

        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
            page = browser.new_context(viewport={"width": 1400, "height": 800}).new_page()
            # Log in through Airflow's own login page (simple auth manager, the generated password).
            page.goto(f"{af.api_url}/auth/login")
            page.fill("input[name=username]", "admin")
            page.fill("input[name=password]", password)
            page.click("button[type=submit]")
            page.wait_for_url(lambda url: "/auth/login" not in url, timeout=60_000)

            # While deferred: the bar moves (each view reloads it; the listing is at most a second old).
            seen: list[int] = []
            deadline = time.monotonic() + 150
            while time.monotonic() < deadline:
                try:  # the page reloads itself every second (meta refresh): a read may race a reload
                    page.goto(tab_url)
                    bar = page.locator("#task-progress progress")
                    assert bar.count() == 1, f"no progress bar on the Batch tab:\n{page.content()[:3000]}"
                    value, total = int(bar.get_attribute("value") or 0), int(bar.get_attribute("max") or 0)
                except playwright.Error:
                    continue
                if 0 < value < total and value not in seen:
                    seen.append(value)
                    if len(seen) == 2:  # mid-way: the screenshot shows a deferred batch advancing
                        page.screenshot(path=str(DOCS / "batch-pages-tab.png"), full_page=True)
                if len(seen) >= 3 or value >= total > 0:
                    break
                time.sleep(1.0)
            assert len(seen) >= 2 and seen == sorted(seen), f"the bar did not advance while deferred: {seen}"
            assert "&lt;script&gt;" in page.content() and page.locator("script").count() == 0
            page.goto(f"{af.api_url}/openai-batch/")
            assert page.locator(f"section[data-dag-id='{DAG_ID}']").count() == 1
            page.screenshot(path=str(DOCS / "batch-pages-list.png"), full_page=True)

            wait_until(
                af,
                "the task to land",
                lambda: (task_instance(af, DAG_ID, run_id, "score") or ("",))[0] == "success",
                240,
            )
            final, value, content = "", None, ""
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and not final.startswith("$"):
                try:  # as above: a read may race the page's own reload
                    page.goto(tab_url)
                    content = page.content()
                    final = page.locator("#final-cost").inner_text(timeout=3000)
                    value = page.locator("#task-progress progress").get_attribute("value", timeout=3000)
                    if final.startswith("$"):
                        page.screenshot(path=str(DOCS / "batch-pages-tab-landed.png"), full_page=True)
                except playwright.Error:
                    time.sleep(0.5)
            assert final.startswith("$") and float(final[1:]) > 0, (
                f"no final cost: {final!r}\n{content[-3000:]}"
            )
            assert value == str(REQUESTS)
            browser.close()
    finally:
        af.stop()
