"""landing.py as tables: which lines land for which rounds, when a folder counts as landed, and what is refused.

Local storage and in-memory OpenAI files (tests/support/fakes.py); the landing over real HTTP and S3 is in
tests/integration (test_outcomes.py, test_results_and_money.py, test_faults.py).
"""

from __future__ import annotations

import json
import logging

import pytest

from airflow_provider_openai_batch import storage
from airflow_provider_openai_batch.exceptions import OpenAIBatchError
from airflow_provider_openai_batch.files import ERRORS, MANIFEST, OUTPUT
from airflow_provider_openai_batch.lifecycle import landing
from tests.support.builders import batch, batch_error_line, http_error_line, jsonl
from tests.support.fakes import FakeBatchHook


def ok(cid: str) -> dict:
    return {"id": f"r_{cid}", "custom_id": cid, "response": {"status_code": 200, "body": {}}, "error": None}


def http(status: int, cid: str) -> dict:
    return http_error_line(status, cid)


def stopped(code: str, cid: str) -> dict:
    return batch_error_line(code, cid)


def ids(path) -> list[str]:
    return [json.loads(x)["custom_id"] for x in path.read_text().splitlines()] if path.exists() else []


def rounds_of(hook: FakeBatchHook, spec: list[list[tuple[str, list[dict], list[dict]]]]) -> list[list[dict]]:
    """Batches per round from ``(batch id, output lines, error lines)``, their files put in ``hook``."""
    rounds = []
    for rnd in spec:
        batches = []
        for batch_id, output, errors in rnd:
            b = batch(batch_id, counts=(len(output) + len(errors), len(output), len(errors)))
            if output:
                hook.files[b["output_file_id"]] = jsonl(*output)
            if errors:
                hook.files[b["error_file_id"]] = jsonl(*errors)
            batches.append(b)
        rounds.append(batches)
    return rounds


CASES = [
    # (name, rounds, resubmitted_cancelled, landed output ids, landed error ids, failed_lines)
    ("one batch, all fine", [[("b0", [ok("a"), ok("b")], [])]], [], ["a", "b"], [], 0),
    (
        "shards land in order, errors beside",
        [[("b0", [ok("a")], [http(400, "b")]), ("b1", [ok("c")], [http(500, "d")])]],
        [],
        ["a", "c"],
        ["b", "d"],
        0,  # one round: the counts are OpenAI's, failed_lines is only taken with follow-up rounds
    ),
    (
        "a follow-up round supersedes the retryable error lines it sent again",
        [
            [("b0", [ok("a")], [http(500, "b"), http(400, "c"), stopped("batch_expired", "d")])],
            [("f1", [ok("b"), ok("d")], [])],
        ],
        [False],
        ["a", "b", "d"],
        ["c"],
        1,
    ),
    (
        "a cancelled request stays an error unless the next round sent it again",
        [
            [("b0", [ok("a")], [stopped("batch_cancelled", "b"), http(429, "c")])],
            [("f1", [], [http(429, "c")])],
        ],
        [False],
        ["a"],
        ["b", "c"],
        1,  # c ran and failed in the last round; b never ran
    ),
    (
        "after a cancel the next round also resent the cancelled requests",
        [[("b0", [ok("a")], [stopped("batch_cancelled", "b")])], [("f1", [ok("b")], [])]],
        [True],
        ["a", "b"],
        [],
        0,
    ),
    (
        "the last round's error lines all land",
        [[("b0", [], [http(500, "a")])], [("f1", [], [http(500, "a"), stopped("batch_expired", "b")])]],
        [False],
        [],
        ["a", "b"],
        1,
    ),
]


@pytest.mark.parametrize(
    ("spec", "cancelled", "out_ids", "err_ids", "failed"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_land(tmp_path, spec, cancelled, out_ids, err_ids, failed):
    hook = FakeBatchHook()
    rounds = rounds_of(hook, spec)
    work = tmp_path / "work"
    work.mkdir()
    landed = landing.land(hook, str(tmp_path / "out"), rounds, cancelled, str(work))
    out = tmp_path / "out"
    assert ids(out / OUTPUT) == out_ids and ids(out / ERRORS) == err_ids
    assert (landed.output_lines, landed.error_lines, landed.failed_lines) == (
        len(out_ids),
        len(err_ids),
        failed,
    )
    assert bool(landed.error_paths) == bool(err_ids)
    assert not (out / MANIFEST).exists()  # the caller writes it, last


def test_a_rewrite_removes_the_old_manifest_and_error_file_first(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / MANIFEST).write_text("{}")
    (out / ERRORS).write_text('{"custom_id": "old"}\n')
    hook = FakeBatchHook()
    landing.land(hook, str(out), rounds_of(hook, [[("b0", [ok("a")], [])]]), [], str(tmp_path))
    assert sorted(p.name for p in out.iterdir()) == [OUTPUT]


def test_a_part_without_its_last_newline_is_not_glued_to_the_next(tmp_path):
    hook = FakeBatchHook()
    rounds = rounds_of(hook, [[("b0", [ok("a")], []), ("b1", [ok("b")], [])]])
    hook.files["file-out-b0"] = hook.files["file-out-b0"].rstrip(b"\n")
    landing.land(hook, str(tmp_path / "out"), rounds, [], str(tmp_path))
    assert ids(tmp_path / "out" / OUTPUT) == ["a", "b"]


@pytest.mark.parametrize(
    ("status", "completed", "refused"),
    [("completed", 3, True), ("completed", 2, False), ("expired", 3, False)],
    ids=["completed-short", "completed-whole", "expired-counts-are-not-checked"],
)
def test_a_short_download_of_a_completed_batch_is_refused(tmp_path, status, completed, refused):
    hook = FakeBatchHook(files={"file-out-b0": jsonl(ok("a"), ok("b"))})
    rounds = [[batch("b0", status, counts=(3, completed, 0))]]
    if refused:
        with pytest.raises(OpenAIBatchError, match="downloaded 2 output line"):
            landing.land(hook, str(tmp_path / "out"), rounds, [], str(tmp_path))
        assert not (tmp_path / "out" / OUTPUT).exists()
    else:
        landing.land(hook, str(tmp_path / "out"), rounds, [], str(tmp_path))
        assert ids(tmp_path / "out" / OUTPUT) == ["a", "b"]


def test_land_result_writes_the_manifest_last_with_the_cost(tmp_path):
    hook = FakeBatchHook()
    rounds = rounds_of(hook, [[("b0", [ok("a")], [http(400, "b")])]])
    result = landing.land_result(
        hook, str(tmp_path / "out"), rounds, [], fingerprint="fp", model="gpt-4o-mini", custom_id_prefix="p"
    )
    manifest = json.loads((tmp_path / "out" / MANIFEST).read_text())
    assert manifest == json.loads(json.dumps(result))
    assert (result["input_fingerprint"], result["custom_id_prefix"]) == ("fp", "p")
    assert (result["output_lines"], result["error_lines"]) == (1, 1)
    assert result["cost"] is not None and result["cost"]["estimate"] is True


ALREADY = [
    # (name, manifest written, batch ids asked, fingerprint asked, found)
    ("same batches and input", {"batch_ids": ["b0"], "input_fingerprint": "fp"}, ["b0"], "fp", True),
    ("other batches", {"batch_ids": ["b0"], "input_fingerprint": "fp"}, ["b0", "b1"], "fp", False),
    ("other input", {"batch_ids": ["b0"], "input_fingerprint": "fp"}, ["b0"], "other", False),
    ("no manifest", None, ["b0"], "fp", False),
    ("a manifest that is not JSON", "{not json", ["b0"], "fp", False),
    ("a manifest that is not an object", ["b0"], ["b0"], "fp", False),
]


@pytest.mark.parametrize(
    ("manifest", "batch_ids", "fp", "found"), [a[1:] for a in ALREADY], ids=[a[0] for a in ALREADY]
)
def test_already_landed(tmp_path, manifest, batch_ids, fp, found):
    if manifest is not None:
        (tmp_path / MANIFEST).write_text(manifest if isinstance(manifest, str) else json.dumps(manifest))
    result = landing.already_landed(str(tmp_path), batch_ids, fp)
    assert (result == manifest) if found else result is None


def test_delete_openai_files_deletes_each_once_and_logs_what_it_could_not(caplog):
    deleted: list[str] = []

    class Hook:
        def delete_file(self, file_id: str) -> None:
            if file_id == "file-out-b1":
                raise RuntimeError("gone")
            deleted.append(file_id)

    rounds = [[batch("b0"), batch("b1")], [batch("f1", counts=(1, 0, 1), input_file_id="file-in-b0")]]
    caplog.set_level(logging.INFO, logger=landing.__name__)
    done = landing.delete_openai_files(Hook(), rounds, ["file-unused", "file-in-b0"])
    assert deleted == done == ["file-in-b0", "file-out-b0", "file-in-b1", "file-err-f1", "file-unused"]
    assert "Could not delete OpenAI file file-out-b1: RuntimeError" in caplog.text
    assert "Deleted 5 OpenAI file(s)" in caplog.text


def answer(cid: str, content: str | None, finish: str = "stop") -> dict:
    """An output line whose chat answer is ``content`` (a structured answer, or a broken one)."""
    line = ok(cid)
    message = {"role": "assistant", "content": content}
    line["response"]["body"] = {
        "object": "chat.completion",
        "choices": [{"message": message, "finish_reason": finish}],
    }
    return line


VALID = json.dumps({"label": "spam", "score": 1.0, "owner": {"name": "Ann", "age": None}})


@pytest.mark.parametrize("resent", [False, True], ids=["counted", "resent once"])
def test_land_counts_invalid_answers_and_keeps_each_ids_last_answer(tmp_path, resent):
    from tests.unit.structured.models import Ticket

    hook = FakeBatchHook()
    spec = [[("b0", [answer("a", VALID), answer("b", '{"label":'), answer("c", '{"la', "length")], [])]]
    if resent:  # round 1 resent b and c: b is valid now, c is cut again
        spec.append([("f1", [answer("b", VALID), answer("c", '{"la', "length")], [])])
    rounds = rounds_of(hook, spec)
    if resent:
        hook.files[rounds[1][0]["input_file_id"]] = jsonl({"custom_id": "b"}, {"custom_id": "c"})
    work = tmp_path / "work"
    work.mkdir()
    landed = landing.land(
        hook,
        str(tmp_path / "out"),
        rounds,
        [False] * (len(rounds) - 1),
        str(work),
        output_schema=Ticket,
        invalid_round=1 if resent else None,
    )
    assert sorted(ids(tmp_path / "out" / OUTPUT)) == ["a", "b", "c"]
    assert landed.output_lines == 3
    expected = {"truncated": 1} if resent else {"invalid_json": 1, "truncated": 1}
    assert landed.invalid_output is not None
    assert {k: v for k, v in landed.invalid_output["reasons"].items() if v} == expected
    assert landed.invalid_output["total"] == sum(expected.values())


def test_on_object_storage_several_files_land_one_object_each_and_replace_an_earlier_landing(tmp_path):
    """An object store (fsspec's in-memory one here; S3 is in tests/integration/test_landing_s3.py): each
    shard's and round's file in its own numbered object, invalid answers counted in each, and a later landing
    with fewer files leaves none of the earlier ones."""
    from airflow.sdk.io import attach
    from fsspec.implementations.memory import MemoryFileSystem

    from tests.unit.structured.models import Ticket

    attach(protocol="memory", fs=MemoryFileSystem())  # as a storage provider registers its scheme
    folder = "memory://landing-each/out"
    hook = FakeBatchHook()
    spec = [
        [
            ("b0", [answer("a", VALID), answer("b", '{"label":')], [http(500, "x")]),
            ("b1", [answer("c", VALID)], [http(400, "y")]),
        ],
        [("f1", [answer("x", '{"la', "length")], [])],
    ]
    rounds = rounds_of(hook, spec)
    work = tmp_path / "work"
    work.mkdir()
    store = storage.to_path(folder)
    (store / "output.jsonl").write_bytes(b"stale\n")  # an earlier landing's, of one file

    landed = landing.land(hook, folder, rounds, [False], str(work), output_schema=Ticket)

    names = [f"output-{i:05d}.jsonl" for i in range(3)]
    # Paths as the store writes them (Airflow 3.1 spells an in-memory folder memory:///...): the folder's files.
    assert landed.output_paths == [str(store / name) for name in names]
    assert [ids(store / name) for name in names] == [["a", "b"], ["c"], ["x"]]
    # Round 1 resent x, so round 0's error line of x was dropped: only y is left, in b1's file (the second).
    assert landed.error_paths == [str(store / "errors-00001.jsonl")]
    assert ids(store / "errors-00001.jsonl") == ["y"]
    assert (landed.output_lines, landed.error_lines) == (4, 1)
    assert landed.invalid_output is not None and landed.invalid_output["total"] == 2
    assert sorted(p.name for p in store.iterdir()) == ["errors-00001.jsonl", *names]  # no stale output.jsonl

    again = landing.land(hook, folder, rounds[:1], [], str(work))
    assert again.output_paths == [str(store / "output-00000.jsonl"), str(store / "output-00001.jsonl")]
    assert sorted(p.name for p in store.iterdir()) == [
        "errors-00000.jsonl",
        "errors-00001.jsonl",
        "output-00000.jsonl",
        "output-00001.jsonl",
    ]
