"""The per-connection snapshot: one listing per refresh, stopping once every shown batch is seen."""

from __future__ import annotations

import threading
import time

import pytest

from airflow_provider_openai_batch.plugin.api_cache import BatchCache


class Lister:
    """Batches newest first; counts listings and how many batches each one read."""

    def __init__(self, ids, fail=False):
        self.ids, self.fail, self.listings, self.read = ids, fail, [], 0

    def __call__(self, conn_id, max_pages):
        self.listings.append(conn_id)
        if self.fail:
            raise ConnectionError("https://user:sk-secret@host/ unreachable")
        for batch_id in self.ids:
            self.read += 1
            yield {"id": batch_id, "status": "in_progress"}


def test_views_within_the_ttl_share_one_listing_per_connection():
    lister = Lister([f"b{i}" for i in range(10)])
    cache = BatchCache(lister, ttl=30)
    for _ in range(5):
        for conn in ("a", "b"):
            snap = cache.snapshot(conn, {"b1"}, now=time.time())
    assert lister.listings == ["a", "b"] and snap.listings == 1
    later = cache.snapshot("a", {"b1"}, now=time.time() + 31)
    assert lister.listings == ["a", "b", "a"] and later.listings == 2


def test_a_listing_stops_once_every_shown_batch_is_seen():
    lister = Lister([f"b{i}" for i in range(1000)])
    snap = BatchCache(lister, ttl=30).snapshot("a", {"b3", "b7"})
    assert lister.read == 8 and set(snap.batches) == {f"b{i}" for i in range(8)}


def test_a_failed_listing_keeps_the_last_snapshot_and_names_only_the_error_type():
    lister = Lister(["b1"])
    cache = BatchCache(lister, ttl=0)
    assert cache.snapshot("a", {"b1"}).batches.keys() == {"b1"}
    lister.fail = True
    snap = cache.snapshot("a", {"b1"})
    assert snap.batches.keys() == {"b1"} and snap.error == "listing failed: ConnectionError"
    assert "sk-secret" not in snap.error


@pytest.mark.timeout(30)
def test_concurrent_views_wait_for_the_refresh_in_flight_instead_of_listing_again():
    gate = threading.Event()

    def slow(conn_id, max_pages):
        calls.append(conn_id)
        gate.wait(5)
        yield {"id": "b1", "status": "in_progress"}

    calls: list[str] = []
    cache = BatchCache(slow, ttl=30)
    threads = [threading.Thread(target=cache.snapshot, args=("a", {"b1"})) for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    gate.set()
    for t in threads:
        t.join()
    assert calls == ["a"]
