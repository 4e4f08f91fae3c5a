"""The status board: which reads a refresh makes, whom it wakes, and how registrations during a refresh fare."""

from __future__ import annotations

import asyncio

import pytest

from airflow_provider_openai_batch.hooks.openai_batch import OpenAIBatchHook
from airflow_provider_openai_batch.lifecycle.waiting import Looks
from airflow_provider_openai_batch.triggers import status_board
from tests.unit.triggers.fake_api import CONN_ID, FakeBatches
from tests.unit.triggers.test_list_map import cheapest_by_depth


def run(coro, timeout: float = 10):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def new_board() -> status_board.StatusBoard:
    return status_board.board_for(await OpenAIBatchHook(openai_conn_id=CONN_ID).get_async_client())


async def settle(subs, statuses: dict[str, str]) -> None:
    """Consume news until every subscription has seen a status for each of its batches."""
    for sub in subs:
        left = set(sub.batch_ids)
        while left:
            ids, results, _ = await sub.next()
            for batch_id, result in zip(ids, results, strict=True):
                assert not isinstance(result, Exception), result
                statuses[batch_id] = result[1]
                left.discard(batch_id)


async def next_refresh(board: status_board.StatusBoard) -> int:
    """Wait for the board's next whole refresh; the requests it made."""
    done = asyncio.Event()
    real = board._refresh
    calls: list[int] = []

    async def refresh(*args):
        before = board.requests
        try:
            return await real(*args)
        finally:
            calls.append(board.requests - before)
            done.set()

    board._refresh = refresh
    try:
        await done.wait()
    finally:
        board._refresh = real
    return calls[0]


def ours(n: int) -> dict[str, list]:
    return {f"b{i:04d}": ["in_progress"] for i in range(n)}  # b0000 oldest, newest last


@pytest.mark.parametrize(
    "others, n, page_size, expected_calls",
    [
        (0, 1, 100, 1),  # one batch: one retrieve
        (0, 250, 100, 3),  # the top page, then two pages anchored below it
        (150, 200, 100, 2),  # others' batches on top are skipped: two pages anchored at ours
        (1500, 1000, 100, 10),
        (35, 12, 10, 2),  # small pages
    ],
)
def test_a_steady_refresh_reads_only_the_pages_that_hold_watched_batches(
    monkeypatch, others, n, page_size, expected_calls
):
    monkeypatch.setenv("AIRFLOW__OPENAI_BATCH__LIST_PAGE_SIZE", str(page_size))
    fake = FakeBatches(monkeypatch, ours(n), others=others)

    async def main():
        board = await new_board()
        subs = [board.subscribe([b], poll_interval=0.05) for b in fake.scripts]
        await settle(subs, {})  # start-up: discovery finds where the batches are
        await next_refresh(board)  # the one that was due when start-up ended
        calls = await next_refresh(board)  # a whole refresh of every batch
        for sub in subs:
            sub.close()
        return calls

    calls = run(main())
    assert calls == expected_calls
    positions = list(range(others, others + n))
    assert calls <= cheapest_by_depth(positions, page_size)


def test_a_finished_batch_wakes_its_trigger_on_the_refresh_that_saw_it_and_nobody_else(monkeypatch):
    fake = FakeBatches(monkeypatch, {"a": ["in_progress"], "b": ["in_progress"], "c": ["in_progress"]})

    async def main():
        board = await new_board()
        sub_a, sub_bc = board.subscribe(["a"], 0.05), board.subscribe(["b", "c"], 0.05)
        await settle([sub_a, sub_bc], {})
        fake.scripts["b"] = ["completed"]
        refreshes = board.refreshes
        ids, results, _ = await sub_bc.next()
        assert dict(zip(ids, [r[1] for r in results], strict=True))["b"] == "completed"
        assert board.refreshes == refreshes + 1  # pushed by the refresh that saw it
        with pytest.raises(TimeoutError):  # nothing changed for "a": its trigger sleeps on
            await asyncio.wait_for(sub_a.next(), 0.2)
        assert board.refreshes >= refreshes + 3
        sub_a.close()
        sub_bc.close()

    run(main())


def test_a_failed_refresh_reaches_every_subscriber_as_an_error(monkeypatch):
    FakeBatches(monkeypatch, ours(5), list_script=[None, 503])

    async def main():
        board = await new_board()
        subs = [board.subscribe([b], 0.02) for b in ours(5)]
        await settle(subs, {})
        for sub in subs:
            ids, results, _ = await sub.next()
            assert len(ids) == 1 and "503" in str(results[0])
            sub.close()

    run(main())


def test_a_service_that_cannot_list_is_polled_with_retrieves(monkeypatch, caplog):
    fake = FakeBatches(monkeypatch, ours(5), list_script=[404])

    async def main():
        board = await new_board()
        subs = [
            board.subscribe([b], 0.5) for b in ours(5)
        ]  # slow enough that no extra refresh slips in under load
        await settle(subs, {})
        await next_refresh(board)
        for sub in subs:
            sub.close()

    run(main())
    assert fake.lists == 1 and all(n == 2 for n in fake.gets.values()) and len(fake.gets) == 5
    assert caplog.text.count("listing batches is not available here (HTTP 404)") == 1


def test_coalescing_switched_off_in_the_configuration_retrieves_each_batch(monkeypatch):
    monkeypatch.setenv("AIRFLOW__OPENAI_BATCH__COALESCE", "False")
    fake = FakeBatches(monkeypatch, ours(5))

    async def main():
        board = await new_board()
        assert board.settings.coalesce is False
        subs = [
            board.subscribe([b], 0.5) for b in ours(5)
        ]  # slow enough that no extra refresh slips in under load
        await settle(subs, {})
        for sub in subs:
            sub.close()

    run(main())
    assert fake.lists == 0 and fake.gets == dict.fromkeys(ours(5), 1)


def test_a_batch_registered_during_a_refresh_is_not_judged_by_it(monkeypatch):
    # Pages of 10, a map at most 2 pages deep, 30 batches: b0000..b0009 are older than the cap.
    monkeypatch.setenv("AIRFLOW__OPENAI_BATCH__LIST_PAGE_SIZE", "10")
    monkeypatch.setenv("AIRFLOW__OPENAI_BATCH__MAX_LIST_PAGES", "2")
    fake = FakeBatches(monkeypatch, ours(30))

    async def main():
        fake.hold_lists = asyncio.Event()
        board = await new_board()
        first = board.subscribe(["b0000", "b0001", "b0002"], 0.02)
        await fake.list_asked.wait()  # the first refresh is reading the top page, held
        late = board.subscribe(["b0003"], 0.02)
        fake.hold_lists.set()
        await settle([first], {})
        # Read from the top to the cap: the first three are proven older than it; b0003 was not asked for.
        assert board.map.deep == {"b0000", "b0001", "b0002"}
        await settle([late], {})
        assert "b0003" not in board.map.deep
        first.close()
        late.close()

    run(main())


def test_batches_passed_over_while_few_were_registered_are_paged_for_once_many_are(monkeypatch):
    # 150 other users' batches on top of ours: the first two triggers are not worth paging past them for.
    fake = FakeBatches(monkeypatch, ours(202), others=150)
    early_ids, later_ids = ["b0200", "b0201"], [f"b{i:04d}" for i in range(200)]

    async def main():
        board = await new_board()
        early = [board.subscribe([b], 0.02) for b in early_ids]
        await settle(early, {})
        assert fake.gets.keys() == set(early_ids) and fake.lists == 1
        later = [board.subscribe([b], 0.02) for b in later_ids]
        await settle(later, {})
        await next_refresh(board)
        gets = dict(fake.gets)
        calls = await next_refresh(board)  # steady state: every batch from pages anchored at ours
        assert dict(fake.gets) == gets
        assert calls <= 3
        for sub in early + later:
            sub.close()

    run(main())


def test_a_batch_is_fetched_as_often_as_its_most_frequent_trigger_asks(monkeypatch):
    fake = FakeBatches(monkeypatch, {"fast": ["in_progress"], "slow": ["in_progress"]})

    async def main():
        board = await new_board()
        subs = [board.subscribe(["fast"], 0.02), board.subscribe(["slow"], 0.3)]
        await asyncio.sleep(1.0)
        for sub in subs:
            sub.close()

    run(main())
    looks = {b: fake.gets[b] + fake.listed[b] for b in ("fast", "slow")}
    assert looks["fast"] >= 15 and 3 <= looks["slow"] <= 6


def test_the_board_stops_when_the_last_subscription_closes(monkeypatch):
    FakeBatches(monkeypatch, ours(2))

    async def main():
        board = await new_board()
        subs = [board.subscribe([b], 0.02) for b in ours(2)]
        await settle(subs, {})
        subs[0].close()
        assert status_board.live_boards() == [board] and board.watched == {"b0001": 1}
        subs[1].close()
        await asyncio.sleep(0.01)
        assert board.closed and status_board.live_boards() == []

    run(main())


def test_boards_on_different_event_loops_are_independent(monkeypatch):
    import threading

    FakeBatches(monkeypatch, ours(6))
    boards: list[status_board.StatusBoard] = []

    async def one_loop(batch_ids):
        board = await new_board()
        boards.append(board)
        subs = [board.subscribe([b], 0.02) for b in batch_ids]
        await settle(subs, {})
        for sub in subs:
            sub.close()
        await asyncio.sleep(0.01)

    threads = [threading.Thread(target=run, args=(one_loop(list(ours(6))[k::2]),)) for k in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert len({id(b) for b in boards}) == 2 and boards[0].loop is not boards[1].loop
    assert all(b.closed for b in boards) and status_board.live_boards() == []


def test_the_board_logs_in_no_trigger_s_context_while_each_trigger_keeps_its_own(monkeypatch, caplog):
    # The triggerer files a line in the log of the trigger id bound in the writing task's context (structlog
    # contextvars, as airflow.jobs.triggerer_job_runner binds them per trigger). The board, started by the
    # first subscriber, must not write its shared lines into that trigger's log.
    import structlog

    FakeBatches(monkeypatch, ours(2))
    seen_by_board: list[dict] = []

    async def trigger(batch_id: str, trigger_id: int) -> dict:
        structlog.contextvars.bind_contextvars(trigger_id=trigger_id)
        board = await new_board()
        if not seen_by_board:
            real = board.refresher.fetch

            async def fetch(*args):
                seen_by_board.append(structlog.contextvars.get_contextvars())
                return await real(*args)

            board.refresher.fetch = fetch
        sub = board.subscribe([batch_id], 0.02)
        await settle([sub], {})
        sub.close()
        return structlog.contextvars.get_contextvars()

    async def main():
        return await asyncio.gather(trigger("b0000", 1), trigger("b0001", 2))

    with caplog.at_level("INFO", logger=status_board.__name__):
        assert run(main()) == [{"trigger_id": 1}, {"trigger_id": 2}]
    assert seen_by_board and all(ctx == {} for ctx in seen_by_board), seen_by_board
    assert "Shared status board refresh 1: 2 batch(es) due" in caplog.text


def test_waiting_shards_are_let_in_in_order_as_a_batch_leaves_the_queue(monkeypatch):
    from airflow_provider_openai_batch.lifecycle.queue import RoomRequest

    FakeBatches(monkeypatch, {"someone_elses": ["in_progress", "in_progress", "completed"]})

    def room(date: str) -> RoomRequest:
        return RoomRequest(model="gpt-4o-mini", tokens=600, limit=1000, order=(date, 0))

    async def main():
        board = await new_board()
        later = board.subscribe([], 0.05, room=room("2026-11-02"))
        earlier = board.subscribe([], 0.05, room=room("2026-11-01"))
        # The queue is held: nobody is let in until the batch that holds it leaves.
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(earlier.next(), 0.08)
        assert await asyncio.wait_for(earlier.next(), 2) == ([], [], [])
        assert earlier.admitted and not later.admitted  # one left, one let in: the earliest date
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(later.next(), 0.3)
        earlier.close()
        later.close()

    run(main())


def test_a_batch_holding_the_queue_below_the_first_list_page_is_seen_leaving(monkeypatch):
    from airflow_provider_openai_batch.lifecycle.queue import RoomRequest

    monkeypatch.setenv("AIRFLOW__OPENAI_BATCH__LIST_PAGE_SIZE", "2")
    # Two newer batches fill the first page and run on; the one that leaves the queue is on the second.
    fake = FakeBatches(monkeypatch, {"holder": ["in_progress"] * 3 + ["completed"]}, others=2)

    async def main():
        board = await new_board()
        sub = board.subscribe([], 0.05, room=RoomRequest(model="gpt-4o-mini", tokens=600, limit=1000))
        assert await asyncio.wait_for(sub.next(), 3) == ([], [], [])
        assert sub.admitted
        sub.close()

    run(main())
    assert fake.listed["holder"] >= 4  # read on the second page each time, until it left
    assert "other_1" in fake.list_afters  # the page after the first


def test_a_trigger_that_takes_news_late_still_learns_of_every_failed_look_and_any_success(monkeypatch):
    """The board polls on its own clock: an answer taken late stands for several looks. A success among
    them clears the trigger's error budget; each failed look after it counts (CI once saw a 503 after an
    unread success counted as the fourth failure in a row)."""
    fake = FakeBatches(monkeypatch, {"a": ["in_progress", 500, "in_progress", 503]})

    async def main():
        board = await new_board()

        async def looks_reach(n: int) -> None:
            while fake.looks["a"] < n:
                await next_refresh(board)

        sub = board.subscribe(["a"], 0.05)  # a look in flight while news is taken would need a 50 ms stall
        await settle([sub], {})  # look 1
        await looks_reach(5)  # 500, in_progress, 503, 503 unread
        ids, results, looks = await sub.next()
        assert ids == ["a"] and "503" in str(results[0])
        assert looks == [Looks(succeeded=True, failed=fake.looks["a"] - 3)]
        taken = fake.looks["a"]
        await looks_reach(taken + 2)  # two more 503s, no success in between
        ids, results, looks = await sub.next()
        assert looks == [Looks(succeeded=False, failed=fake.looks["a"] - taken)]
        sub.close()

    run(main())
