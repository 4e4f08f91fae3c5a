"""The downstream example DAG: scheduled on the daily results asset, it reads each event's results and counts them."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

from tests.unit.reader.builders import chat_body, expired_line, ok_line, write_jsonl

EXAMPLE = Path(__file__).resolve().parents[2] / "example_dags" / "openai_batch_downstream.py"


def load_example():
    spec = importlib.util.spec_from_file_location("openai_batch_downstream_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def landed(
    folder: Path, answers: int, expired: int, batch_id: str = "batch_1", relanded: bool = False
) -> dict:
    write_jsonl(folder / "output.jsonl", [ok_line(f"a{i}", chat_body(f"text {i}")) for i in range(answers)])
    write_jsonl(folder / "errors.jsonl", [expired_line(f"e{i}") for i in range(expired)])
    summary = {
        "batch_ids": [batch_id],
        "relanded": relanded,
        "status": "expired",
        "request_counts": {"total": answers + expired, "completed": answers, "failed": expired},
        "output_path": str(folder / "output.jsonl"),
        "error_path": str(folder / "errors.jsonl"),
        "output_paths": [str(folder / "output.jsonl")],
        "error_paths": [str(folder / "errors.jsonl")],
        "manifest_path": str(folder / "_manifest.json"),
        "cost": {"total_usd": 0.25, "estimate": True},
    }
    (folder / "_manifest.json").write_text(json.dumps(summary))
    return summary


def test_downstream_dag_is_scheduled_on_the_results_asset():
    module = load_example()
    dag = module.openai_batch_downstream()
    assert [asset.name for asset in dag.timetable.asset_condition.objects] == ["openai_batch_daily_results"]


def test_count_results_reads_every_event_from_its_extra(tmp_path):
    module = load_example()
    task = module.openai_batch_downstream().get_task("count_results")
    events = [
        SimpleNamespace(extra=landed(tmp_path / "d1", answers=3, expired=1, batch_id="batch_1")),
        SimpleNamespace(extra=landed(tmp_path / "d2", answers=2, expired=0, batch_id="batch_2")),
        # A clear of the first date's task landed batch_1 again: the same results, counted once.
        SimpleNamespace(
            extra=landed(tmp_path / "d1", answers=3, expired=1, batch_id="batch_1", relanded=True)
        ),
    ]
    # As Airflow's accessor, looked up by asset (an Asset is not hashable on Airflow 3.1, so no dict here).
    accessor = type(
        "Events", (), {"__getitem__": lambda self, asset: events if asset == module.RESULTS else []}
    )()
    counts = task.python_callable(triggering_asset_events=accessor)
    assert counts == {"events": 2, "repeats": 1, "answered": 5, "empty": 0, "failed": 1, "estimated_usd": 0.5}
