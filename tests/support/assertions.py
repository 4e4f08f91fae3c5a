"""JSONL readers and the two promises every fault test checks: paid once, each custom_id landed once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from airflow_provider_openai_batch import storage


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def ids_in(path: Path) -> list[str]:
    return [line["custom_id"] for line in read_jsonl(path)]


def assert_each_custom_id_once(folder: Path, ids: list[str], *, failed: set[str] | None = None) -> None:
    """Every id in output ∪ errors exactly once, a manifest, and no temporary file left behind."""
    output, errors = ids_in(folder / "output.jsonl"), ids_in(folder / "errors.jsonl")
    assert sorted(output + errors) == sorted(ids), (output, errors)
    if failed is not None:
        assert set(errors) == set(failed)
    assert (folder / storage.MANIFEST).exists()
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")], "temporary files left behind"


def assert_paid(emulator: Any, count: int) -> list[str]:
    """Exactly ``count`` batches were created (``POST /v1/batches`` answered 200), whatever the client heard."""
    paid = emulator.paid_creates()
    assert len(paid) == count, (paid, emulator.calls("POST", "/v1/batches"))
    return paid
