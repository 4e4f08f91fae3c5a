"""JSONL readers and the two promises every end-to-end test checks: paid once, each custom_id landed once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from airflow_provider_openai_batch import files


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of ``path`` (blank lines skipped); ``[]`` when the file does not exist."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_s3_jsonl(client: Any, bucket: str, key: str) -> list[dict[str, Any]]:
    """The JSON lines of an S3 object (blank lines skipped).

    :param client: a boto3 S3 client.
    """
    body = client.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
    return [json.loads(line) for line in body.splitlines() if line.strip()]


def ids_in(path: Path) -> list[str]:
    """The ``custom_id`` of every line of ``path``, in order (``[]`` when it does not exist)."""
    return [line["custom_id"] for line in read_jsonl(path)]


def assert_each_custom_id_once(
    folder: Path, ids: list[str], *, failed: set[str] | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every id exactly once in the output and error files the manifest lists, which are every such file the
    folder holds; and no temporary file left behind.

    :param folder: the landed results folder (local, or a local copy of one on object storage).
    :param ids: every custom_id of the input.
    :param failed: when given, exactly these ids are in the error files (``set()``: none failed).
    :return: the landed ``(output lines, error lines)``.
    """
    assert (folder / files.MANIFEST).exists()
    manifest = json.loads((folder / files.MANIFEST).read_text())
    outputs = [path.rpartition("/")[2] for path in manifest["output_paths"]]
    error_files = [path.rpartition("/")[2] for path in manifest["error_paths"]]
    landed = sorted(p.name for p in folder.iterdir() if files.LANDED_NAME.fullmatch(p.name))
    assert landed == sorted(outputs + error_files), (
        landed,
        manifest["output_paths"],
        manifest["error_paths"],
    )
    output = [line for name in outputs for line in read_jsonl(folder / name)]
    errors = [line for name in error_files for line in read_jsonl(folder / name)]
    output_ids, error_ids = [x["custom_id"] for x in output], [x["custom_id"] for x in errors]
    assert sorted(output_ids + error_ids) == sorted(ids), (output_ids, error_ids)
    if failed is not None:
        assert set(error_ids) == set(failed), error_ids
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")], "temporary files left behind"
    return output, errors


def assert_paid(emulator: Any, count: int) -> list[str]:
    """Exactly ``count`` batches were created (``POST /v1/batches`` answered 200), whatever the client heard.

    :return: the created batch ids, oldest first.
    """
    paid = emulator.paid_creates()
    assert len(paid) == count, (paid, emulator.calls("POST", "/v1/batches"))
    return paid
