"""Duplicate custom_ids: found across shards, confirmed by the ids themselves, named by both lines."""

from __future__ import annotations

from airflow_provider_openai_batch.requests_input import duplicates
from airflow_provider_openai_batch.requests_input.shards import Limits
from tests.unit.requests_input.spooling import failure, jsonl, req, spool


def test_duplicate_custom_id_names_first_line(tmp_path):
    data = jsonl(req("a"), req("b"), b"", req("a"), req("c"), req("b"), req("a"))
    err = failure(data, tmp_path)
    assert err.total == 3
    assert [(p.line, p.field) for p in err.problems] == [(4, "custom_id"), (6, "custom_id"), (7, "custom_id")]
    assert err.problems[0].message == "duplicate custom_id 'a' (first seen on line 1)"
    assert err.problems[1].message == "duplicate custom_id 'b' (first seen on line 2)"
    assert err.problems[2].message == "duplicate custom_id 'a' (first seen on line 1)"


def test_duplicates_across_shards_and_mixed_with_other_problems(tmp_path):
    items = [req(i) for i in range(30)]
    items[5] = {**items[5], "method": "GET"}
    items[25] = req(3)  # duplicate of line 4, in another shard
    err = failure(jsonl(*items), tmp_path, limits=Limits(max_requests=10, safety_margin=1))
    assert [(p.line, p.field) for p in err.problems] == [(6, "method"), (26, "custom_id")]
    assert "first seen on line 4" in err.problems[1].message


def test_hash_collision_is_not_a_duplicate(tmp_path, monkeypatch):
    # Force every id into one 64-bit hash: only the second pass over the strings can tell them apart.
    real_hash = hash
    monkeypatch.setattr(
        duplicates, "hash", lambda s: 42 if isinstance(s, str) else real_hash(s), raising=False
    )
    result = spool(jsonl(req(1), req(2), req(3)), tmp_path / "ok")
    assert result.total_requests == 3
    err = failure(jsonl(req(1), req(2), req(1)), tmp_path)
    assert [(p.line, p.message) for p in err.problems] == [
        (3, "duplicate custom_id 'r1' (first seen on line 1)")
    ]


def test_duplicates_found_late_still_appear_in_line_order_under_the_cap(tmp_path):
    items = [req(i) for i in range(40)]
    items[1] = req(0)  # duplicate early
    for i in range(10, 40):
        items[i] = {**items[i], "url": "/v1/x"}
    err = failure(jsonl(*items), tmp_path)
    assert err.total == 31
    assert (err.problems[0].line, err.problems[0].field) == (2, "custom_id")
    assert [p.line for p in err.problems] == [2, *range(11, 30)]


def test_generated_id_colliding_with_user_id_is_a_duplicate(tmp_path):
    items = [req("p-000001"), {"model": "gpt-4o-mini", "messages": []}]
    err = failure(iter(items), tmp_path, custom_id_prefix="p")
    assert [(p.line, p.message) for p in err.problems] == [
        (2, "duplicate custom_id 'p-000001' (first seen on line 1)")
    ]


def test_id_hashes_keep_every_hash_once_and_report_exactly_the_repeated_ones():
    ids = [f"req-{i}" for i in range(5000)]
    repeats = ["req-7", "req-4095", "req-4999"]
    hashes = duplicates.IdHashes()
    for start in range(0, len(ids), 700):  # batches, as the spool files them
        hashes.add(ids[start : start + 700])
    hashes.add(list(repeats))
    hashes.add([])

    stored = [h for bucket in hashes.buckets for h in bucket]
    assert sorted(stored) == sorted(map(hash, ids + repeats))
    assert all(hashes.buckets)  # spread over all 64 buckets
    assert hashes.repeated() == {hash(i) for i in repeats}
