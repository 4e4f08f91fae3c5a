"""A landed results folder and its input, for the reader's tests."""

from __future__ import annotations

import json
import random

import pytest

from tests.unit.reader.builders import chat_body, expired_line, ok_line, refused_line, request, write_jsonl


@pytest.fixture
def landed(tmp_path):
    """A results folder for 20 requests (answers in shuffled order; r3 expired, r7 refused) and its input."""
    ids = [f"r{i}" for i in range(20)]
    requests_path = write_jsonl(tmp_path / "requests.jsonl", [request(cid, f"question {cid}") for cid in ids])
    answered = [cid for cid in ids if cid not in ("r3", "r7")]
    random.Random(4).shuffle(answered)
    folder = tmp_path / "results"
    write_jsonl(folder / "output.jsonl", [ok_line(cid, chat_body(f"answer {cid}")) for cid in answered])
    write_jsonl(folder / "errors.jsonl", [expired_line("r3"), refused_line("r7")])
    # As landing writes it (the manifest is the BatchResult): the lists name the files, the single paths too.
    manifest = {
        "output_path": str(folder / "output.jsonl"),
        "error_path": str(folder / "errors.jsonl"),
        "output_paths": [str(folder / "output.jsonl")],
        "error_paths": [str(folder / "errors.jsonl")],
        "custom_id_prefix": "dag.task.2026-11-01",
    }
    (folder / "_manifest.json").write_text(json.dumps(manifest))
    return {
        "folder": folder,
        "requests": requests_path,
        "ids": ids,
        "answered": answered,
        "manifest": manifest,
    }
