"""Issue 12's money behaviours, run through Airflow (``dag.test()`` with real deferral) against the emulator over
HTTP (moto_server for S3): the budget refuses before uploading, the cost lands with the results, ``delete_files``
leaves nothing on OpenAI, asset events carry the result summary, and a person's cancel keeps the paid part. Every
test counts the paid creates in the emulator's journal and checks that every custom_id lands exactly once.
"""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
from openai import OpenAI

from airflow_provider_openai_batch import cost, read_results
from airflow_provider_openai_batch.emulator.testing import wait_for
from airflow_provider_openai_batch.statuses import is_stopped_line
from tests.integration.conftest import TEST_API_KEY
from tests.support.airflow_records import asset_events, task_tries
from tests.support.assertions import assert_each_custom_id_once, assert_paid, ids_in, read_jsonl
from tests.support.builders import ENDPOINT, request, write_input
from tests.support.environment import connected_emulator, dag_env
from tests.support.s3_copy import download_prefix

pytestmark = pytest.mark.integration

DAG_ID, TASK_ID, DATE = "money_batch", "run_batch", "2026-11-01"
PRICED_MODEL = "gpt-4o-mini"


@pytest.fixture
def emulator(openai_emulator, monkeypatch):
    yield from connected_emulator(openai_emulator, monkeypatch, timeout=10)


@pytest.fixture
def api(emulator):
    """The OpenAI client a person would use beside the DAG (the dashboard's calls, over the same API)."""
    client = OpenAI(base_url=emulator.base_url, api_key=TEST_API_KEY, max_retries=0)
    yield client
    client.close()


@pytest.fixture
def job(tmp_path, monkeypatch):
    """Six priced requests in a local file, landing in tmp/out/DATE; returns (ids, input path, results folder)."""
    ids = [f"req-{i}" for i in range(6)]
    source = write_input(tmp_path / "input.jsonl", ids)
    use_dag(monkeypatch, source, tmp_path / "out")
    return ids, source, tmp_path / "out" / DATE


def use_dag(monkeypatch, source: Any, output: Any, **env: Any) -> None:
    dag_env(monkeypatch, "MONEY", input=source, output=output, **env)


def upper_bound(source: Path) -> float:
    """What the operator's budget check will compare against, computed the same documented way."""
    estimate = cost.estimate_upper_bound([source], endpoint=ENDPOINT, model=PRICED_MODEL)
    assert estimate["total_usd"], estimate
    return estimate["total_usd"]


def task_log(capfd: Any, caplog: Any) -> str:
    """What the run logged: the task's own logger prints (structlog), module loggers reach ``caplog``."""
    out, err = capfd.readouterr()
    return "\n".join([out, err, caplog.text])


def result_of(outcome: Any) -> dict[str, Any]:
    return outcome.xcoms[(TASK_ID, "return_value")]


# ---------------------------------------------------------------------------------------------- budget
def test_a_budget_below_the_estimate_fails_at_once_before_uploading(
    run_dag, emulator, job, monkeypatch, capfd, caplog
):
    ids, source, folder = job
    estimate = upper_bound(source)
    monkeypatch.setenv("MONEY_MAX_COST_USD", str(estimate / 2))

    outcome = run_dag(DAG_ID, DATE, retries=2)

    assert outcome.state == "failed"
    assert task_tries(DAG_ID, outcome.run.run_id, TASK_ID) == ("failed", 1)  # no retry spent on it
    logged = task_log(capfd, caplog)
    assert "OpenAIBatchCostExceeded" in logged
    assert estimate < 1 and f"is ${estimate:.6f} for {len(ids)} request(s)" in logged
    assert emulator.calls("POST", "/v1/files") == []
    assert_paid(emulator, 0)
    assert not folder.exists() or not any(folder.iterdir())


def test_a_budget_above_the_estimate_submits(run_dag, emulator, job, monkeypatch, capfd, caplog):
    ids, source, folder = job
    monkeypatch.setenv("MONEY_MAX_COST_USD", str(upper_bound(source) * 2))

    outcome = run_dag(DAG_ID, DATE)

    assert outcome.state == "success", outcome.ti_states()
    assert_paid(emulator, 1)
    assert_each_custom_id_once(folder, ids)
    assert "Cost of the 1 batch(es) to create: $" in task_log(capfd, caplog)


# ------------------------------------------------------------------------------------------------ cost
def test_the_cost_lands_in_the_result_the_manifest_and_the_log(run_dag, emulator, job, capfd, caplog):
    ids, _, folder = job

    outcome = run_dag(DAG_ID, DATE)

    assert outcome.state == "success", outcome.ti_states()
    assert_paid(emulator, 1)
    assert_each_custom_id_once(folder, ids)
    result = result_of(outcome)
    spent = result["cost"]
    assert spent["estimate"] is True and spent["as_of"] and spent["total_usd"] > 0
    # The figure follows from the landed usage and the shipped price table, not from anything the test chose.
    usage, table = result["usage"], cost.load_prices()
    entry, factor = cost.lookup(PRICED_MODEL, table)[1], (1 - table["batch_discount"]) / 1e6
    assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0 and usage["cached_tokens"] == 0
    expected = (usage["input_tokens"] * entry["input"] + usage["output_tokens"] * entry["output"]) * factor
    assert spent["total_usd"] == pytest.approx(expected, abs=1e-6)
    manifest = json.loads((folder / "_manifest.json").read_text())
    assert manifest["cost"] == spent
    printed, captured = "".join(capfd.readouterr()), caplog.text  # a module logger reaches one or both
    logged = printed + captured
    assert f"Cost: ${spent['total_usd']:.6f} (estimate, {PRICED_MODEL}" in logged
    if cost.price_age(spent):  # the shipped table is old: said once in the task's log, not on each cost line
        assert max(printed.count("days old"), captured.count("days old")) == 1, logged


def test_a_model_without_a_price_gives_no_figure_and_still_succeeds(run_dag, emulator, tmp_path, monkeypatch):
    model = "ft:gpt-4o-mini:acme:unpriced:emulated"
    ids = [f"ft-{i}" for i in range(4)]
    source = tmp_path / "input.jsonl"
    source.write_text("".join(json.dumps(request(cid, model=model)) + "\n" for cid in ids))
    use_dag(monkeypatch, source, tmp_path / "out")

    outcome = run_dag(DAG_ID, DATE)

    assert outcome.state == "success", outcome.ti_states()
    assert_paid(emulator, 1)
    assert_each_custom_id_once(tmp_path / "out" / DATE, ids)
    spent = result_of(outcome)["cost"]
    assert spent["total_usd"] is None and model in spent["reason"]
    assert spent["estimate"] is True


# --------------------------------------------------------------------------------------------- cleanup
def _files_of(api: OpenAI, batch_ids: list[str]) -> set[str]:
    files = set()
    for batch_id in batch_ids:
        batch = api.batches.retrieve(batch_id)
        files |= {batch.input_file_id, batch.output_file_id, batch.error_file_id}
    return files - {None}


def test_delete_files_leaves_nothing_on_openai_and_a_later_run_pays_nothing(
    run_dag, emulator, api, tmp_path, monkeypatch
):
    ids = [f"del-{i}" for i in range(8)]
    source = write_input(tmp_path / "input.jsonl", ids, failing={"del-2": 500, "del-5": 400})
    folder = tmp_path / "out" / DATE
    use_dag(monkeypatch, source, tmp_path / "out", delete_files=1, max_failed_ratio=0.5)

    first = run_dag(DAG_ID, DATE)

    assert first.state == "success", first.ti_states()
    paid = assert_paid(emulator, 1)
    batch_files = _files_of(api, paid)
    assert len(batch_files) == 3  # input, output and error file
    assert batch_files <= set(emulator.deleted_files())
    assert [f.id for f in api.files.list()] == []  # no upload of any try left behind either
    assert_each_custom_id_once(folder, ids, failed={"del-2", "del-5"})
    landed = {
        name: (folder / name).read_bytes() for name in ("output.jsonl", "errors.jsonl", "_manifest.json")
    }
    calls_before = len(emulator.journal())

    second = run_dag(DAG_ID, DATE, run_after="2026-11-05T10:00:00+00:00")  # another DAG run, same date

    assert second.state == "success", second.ti_states()
    assert second.run.run_id != first.run.run_id
    assert_paid(emulator, 1)
    later = emulator.journal()[calls_before:]
    assert [c for c in later if c["method"] == "POST" and c["path"] == "/v1/files"] == []
    assert [c for c in later if c["path"].endswith("/content")] == []  # nothing downloaded again
    assert {name: (folder / name).read_bytes() for name in landed} == landed
    assert result_of(second)["batch_ids"] == paid


def test_delete_files_then_a_run_landing_elsewhere_fails_at_once_naming_the_way_out(
    run_dag, emulator, tmp_path, monkeypatch, capfd, caplog
):
    ids = [f"gone-{i}" for i in range(4)]
    source = write_input(tmp_path / "input.jsonl", ids)
    out = tmp_path / "out"
    use_dag(monkeypatch, source, out, delete_files=1, output_by_run=1)  # each run lands in its own folder
    first = run_dag(DAG_ID, DATE)
    assert first.state == "success", first.ti_states()
    (paid,) = assert_paid(emulator, 1)

    second = run_dag(DAG_ID, DATE, retries=2, run_after="2026-11-05T10:00:00+00:00")

    assert second.state == "failed"
    assert task_tries(DAG_ID, second.run.run_id, TASK_ID) == ("failed", 1)  # no retry spent on it
    logged = task_log(capfd, caplog)
    assert "OpenAIBatchFilesDeleted" in logged and f"Batch {paid} finished" in logged
    assert "delete_files=True" in logged and repr(first.run.run_id) in logged and "fresh_run=True" in logged
    assert_paid(emulator, 1)
    assert not (out / second.run.run_id / "_manifest.json").exists()

    monkeypatch.setenv("MONEY_FRESH_RUN", "1")  # the way out the message names
    third = run_dag(DAG_ID, DATE, run_after="2026-11-06T10:00:00+00:00")
    assert third.state == "success", third.ti_states()
    assert_paid(emulator, 2)
    assert_each_custom_id_once(out / third.run.run_id, ids)


def test_without_delete_files_every_file_stays(run_dag, emulator, api, tmp_path, monkeypatch):
    ids = [f"keep-{i}" for i in range(4)]
    source = write_input(tmp_path / "input.jsonl", ids, failing={"keep-1": 500})
    use_dag(monkeypatch, source, tmp_path / "out", max_failed_ratio=0.5)

    outcome = run_dag(DAG_ID, DATE)

    assert outcome.state == "success", outcome.ti_states()
    paid = assert_paid(emulator, 1)
    assert emulator.deleted_files() == []
    assert _files_of(api, paid) <= {f.id for f in api.files.list()}
    assert_each_custom_id_once(tmp_path / "out" / DATE, ids, failed={"keep-1"})


# ---------------------------------------------------------------------------------------------- assets
ASSET = "money_results"  # money_batch's outlet (tests/dags/money_dags.py)


def test_a_successful_task_emits_an_asset_event_with_the_result_summary(run_dag, emulator, job, monkeypatch):
    ids, _, folder = job
    before = len(asset_events(ASSET))  # every money_batch run that succeeds emits one

    outcome = run_dag(DAG_ID, DATE)

    assert outcome.state == "success", outcome.ti_states()
    assert_paid(emulator, 1)
    assert_each_custom_id_once(folder, ids)
    (event,) = asset_events(ASSET)[before:]
    assert (event["source_dag_id"], event["source_task_id"]) == (DAG_ID, TASK_ID)
    assert event["source_run_id"] == outcome.run.run_id
    result, extra = result_of(outcome), event["extra"]
    assert extra["batch_ids"] == result["batch_ids"] == emulator.paid_creates()
    assert extra["status"] == "completed"
    assert extra["request_counts"] == {"total": len(ids), "completed": len(ids), "failed": 0}
    assert extra["usage"] == result["usage"] and extra["usage"]["total_tokens"] > 0
    assert extra["output_path"] == result["output_path"]
    # As docs/results.md and the example downstream DAG read it.
    assert extra.get("cost", {}).get("total_usd") == result["cost"]["total_usd"] > 0, extra
    assert sorted(r["custom_id"] for r in read_results(extra)) == sorted(ids)


def test_a_failed_task_emits_no_asset_event(run_dag, emulator, job, monkeypatch):
    _, source, _ = job
    before = len(asset_events(ASSET))
    monkeypatch.setenv("MONEY_MAX_COST_USD", str(upper_bound(source) / 2))

    outcome = run_dag(DAG_ID, DATE)

    assert outcome.state == "failed"
    assert_paid(emulator, 0)
    assert len(asset_events(ASSET)) == before


# ------------------------------------------------------------------------------------- person's cancel
class _PersonCancels(threading.Thread):
    """Beside the running DAG, a person watches the batch and cancels it once ``finished`` requests are done."""

    def __init__(self, api: OpenAI, emulator: Any, finished: int, timeout: float = 20) -> None:
        super().__init__(name="person-cancels", daemon=True)
        self.api, self.emulator, self.finished, self.timeout = api, emulator, finished, timeout
        self.batch_id: str | None = None
        self.error: BaseException | None = None

    def _completed(self) -> bool:
        counts = self.api.batches.retrieve(self.batch_id).request_counts
        return counts is not None and counts.completed >= self.finished

    def run(self) -> None:
        try:
            self.batch_id = wait_for(lambda: (self.emulator.paid_creates() or [None])[0], self.timeout)
            wait_for(self._completed, self.timeout)
            self.api.batches.cancel(self.batch_id)
        except BaseException as err:  # re-raised in the test's thread by done()
            self.error = err

    def done(self) -> str:
        self.join(self.timeout)
        assert not self.is_alive(), "the person never got to cancel"
        if self.error is not None:
            raise self.error
        assert self.batch_id is not None
        return self.batch_id


def _cancel_part_way(
    run_dag, emulator, api, ids: list[str], folder_now: Any, logs: Any
) -> tuple[str, list[str]]:
    """A person cancels the running batch part-way: the task fails at once, landing what finished.

    :param folder_now: returns the landed results folder as a local path, read after each run.
    :param logs: returns what the run logged so far.
    :return: the cancelled batch and the custom_ids it finished.
    """
    emulator.configure(rate=4)  # 12 requests take 3 s: room to cancel part-way
    person = _PersonCancels(api, emulator, finished=3)
    person.start()

    cancelled = run_dag(DAG_ID, DATE, retries=2)

    batch_id = person.done()
    assert cancelled.state == "failed"
    assert task_tries(DAG_ID, cancelled.run.run_id, TASK_ID) == ("failed", 1)  # no automatic retry
    assert "OpenAIBatchCancelled" in logs()
    assert [c["path"] for c in emulator.calls("POST", "/v1/batches/")] == [f"/v1/batches/{batch_id}/cancel"]
    assert_paid(emulator, 1)
    folder = folder_now()
    finished, stopped = ids_in(folder / "output.jsonl"), read_jsonl(folder / "errors.jsonl")
    assert 3 <= len(finished) < len(ids)
    assert stopped and all(is_stopped_line(line) for line in stopped)
    assert_each_custom_id_once(folder, ids)
    emulator.configure(rate=500)
    return batch_id, finished


def _sent_again(api: OpenAI, batch_id: str) -> list[str]:
    """The custom_ids in a batch's input file, as OpenAI holds it."""
    text = api.files.content(api.batches.retrieve(batch_id).input_file_id).text
    return sorted(json.loads(line)["custom_id"] for line in text.splitlines() if line.strip())


def _clear_pays_only_for_the_rest(run_dag, emulator, api, ids, folder_now, cancelled: tuple[str, list[str]]):
    first, finished = cancelled

    cleared = run_dag(DAG_ID, DATE, retries=2, clear=True)

    assert cleared.state == "success", cleared.ti_states()
    paid = assert_paid(emulator, 2)
    assert paid[0] == first
    assert _sent_again(api, paid[1]) == sorted(set(ids) - set(finished))
    assert_each_custom_id_once(folder_now(), ids, failed=set())
    result = result_of(cleared)
    assert result["request_counts"] == {"total": len(ids), "completed": len(ids), "failed": 0}
    assert result["rounds"] == [[paid[0]], [paid[1]]]


def test_a_person_cancel_fails_without_retry_and_a_clear_pays_only_for_the_rest(
    run_dag, emulator, api, tmp_path, monkeypatch, capfd, caplog
):
    ids = [f"cx-{i:02d}" for i in range(12)]
    use_dag(monkeypatch, write_input(tmp_path / "input.jsonl", ids), tmp_path / "out")
    folder = tmp_path / "out" / DATE

    cancelled = _cancel_part_way(run_dag, emulator, api, ids, lambda: folder, lambda: task_log(capfd, caplog))

    _clear_pays_only_for_the_rest(run_dag, emulator, api, ids, lambda: folder, cancelled)


def test_after_a_person_cancel_fresh_run_starts_over(
    run_dag, emulator, api, tmp_path, monkeypatch, capfd, caplog
):
    ids = [f"fr-{i:02d}" for i in range(12)]
    use_dag(monkeypatch, write_input(tmp_path / "input.jsonl", ids), tmp_path / "out")
    folder = tmp_path / "out" / DATE
    first, _ = _cancel_part_way(run_dag, emulator, api, ids, lambda: folder, lambda: task_log(capfd, caplog))
    monkeypatch.setenv("MONEY_FRESH_RUN", "1")

    cleared = run_dag(DAG_ID, DATE, clear=True)

    assert cleared.state == "success", cleared.ti_states()
    paid = assert_paid(emulator, 2)
    assert _sent_again(api, paid[1]) == sorted(ids)
    assert result_of(cleared)["batch_ids"] == [paid[1]]
    assert_each_custom_id_once(folder, ids, failed=set())


def test_a_person_cancel_then_a_clear_on_s3(
    run_dag, emulator, api, tmp_path, monkeypatch, moto_s3, capfd, caplog
):
    s3, bucket, conn = moto_s3["client"], moto_s3["bucket"], moto_s3["conn_id"]
    ids = [f"s3x-{i:02d}" for i in range(12)]
    prefix = f"money-{uuid.uuid4().hex[:8]}"
    body = write_input(tmp_path / "input.jsonl", ids).read_bytes()
    s3.put_object(Bucket=bucket, Key=f"{prefix}/in.jsonl", Body=body)
    use_dag(monkeypatch, f"s3://{conn}@{bucket}/{prefix}/in.jsonl", f"s3://{conn}@{bucket}/{prefix}/out")
    copies = iter(range(100))

    def folder_now() -> Path:  # a fresh local copy of what is on S3 now
        return download_prefix(s3, bucket, f"{prefix}/out/{DATE}", tmp_path / f"copy-{next(copies)}")

    cancelled = _cancel_part_way(run_dag, emulator, api, ids, folder_now, lambda: task_log(capfd, caplog))

    _clear_pays_only_for_the_rest(run_dag, emulator, api, ids, folder_now, cancelled)
