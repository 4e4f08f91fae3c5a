"""The list map's plan (which reads cover the watched batches) and what it learns from pages."""

from __future__ import annotations

import pytest

from airflow_provider_openai_batch.triggers.list_map import ListMap, Plan, Window


def ids(n: int, prefix: str = "x") -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def mapped(n: int, page_size: int = 10, max_pages: int = 100) -> ListMap:
    """A map that has read the top ``n`` items x0 (newest) .. x{n-1}."""
    m = ListMap(page_size=page_size, max_pages=max_pages)
    m.learn_top(ids(n), has_more=True)
    return m


def cheapest_by_depth(positions: list[int], page_size: int) -> int:
    """The issue's yardstick: min over depth d of pages down to d plus the batches older than d."""
    deepest = max(positions) // page_size + 1
    return min(d + sum(p >= d * page_size for p in positions) for d in range(deepest + 1))


@pytest.mark.parametrize(
    "positions, windows, retrieves",
    [
        # one batch: a retrieve costs what a page does
        ([5], [], ["x5"]),
        # two in the top page: the top page (nothing above the head is known)
        ([0, 3], [(None, ["x0", "x3"])], []),
        # a run of batches under others: one page anchored just above the first
        ([15, 16, 24], [("x14", ["x15", "x16", "x24"])], []),
        # a run longer than a page: pages start at the first batch each does not cover yet
        ([20, 25, 29, 30, 31], [("x19", ["x20", "x25", "x29"]), ("x29", ["x30", "x31"])], []),
        # a lone batch between runs is retrieved, not paged for
        ([2, 3, 40, 70, 71], [("x1", ["x2", "x3"]), ("x69", ["x70", "x71"])], ["x40"]),
    ],
)
def test_plan_covers_known_batches_with_the_fewest_reads(positions, windows, retrieves):
    m = mapped(100)
    plan = m.plan([f"x{p}" for p in positions])
    assert plan == Plan(tuple(Window(a, tuple(e)) for a, e in windows), tuple(retrieves), ())
    assert plan.calls <= cheapest_by_depth(positions, 10)


@pytest.mark.parametrize(
    "others, ours, page_size",
    [(0, 1000, 100), (1500, 1000, 100), (0, 5000, 100), (1500, 5000, 100), (120, 7, 10)],
)
def test_plan_never_costs_more_than_the_best_depth(others, ours, page_size):
    m = mapped(others + ours, page_size=page_size)
    positions = list(range(others, others + ours))
    assert m.plan([f"x{p}" for p in positions]).calls <= cheapest_by_depth(positions, page_size)


def test_unknown_and_judged_batches_are_told_apart():
    m = mapped(30)
    m.deep.add("old")
    m.unlisted.add("gone")
    plan = m.plan(["x3", "new", "old", "gone"])
    assert plan.unknown == ("new",) and set(plan.retrieves) == {"x3", "old", "gone"}


def test_new_batches_on_top_join_the_known_stretch():
    m = mapped(20)
    assert m.learn_top(["n1", "n0", "x0", "x1"], has_more=True)
    assert [m.position(b) for b in ("n1", "n0", "x0", "x19")] == [0, 1, 2, 21]
    # Positions moved by the two created batches; the stretch below did not change.
    assert m.plan(["x5", "x6"]).windows == (Window("x4", ("x5", "x6")),)


def test_pages_below_the_tail_extend_the_map_and_find_the_end():
    m = mapped(10)
    assert m.learn_after("x9", ["x10", "x11"], has_more=False)
    assert m.position("x11") == 11 and m.end_reached


@pytest.mark.parametrize(
    "learn",
    [
        lambda m: m.learn_after("x4", ["x5", "zz", "x7"], has_more=True),  # a stranger inside the stretch
        lambda m: m.learn_after("x4", ["x6"], has_more=True),  # an item out of its place
    ],
)
def test_a_page_that_contradicts_the_map_starts_it_over(learn):
    m = mapped(10)
    assert learn(m) is False
    assert len(m) == 0 and m.resets == 1


def test_top_pages_that_do_not_reach_the_head_start_the_map_over():
    m = mapped(10)
    assert not m.learn_top(ids(5, "n"), has_more=True)
    assert m.position("n0") == 0 and "x0" not in m


def test_the_map_stays_within_its_page_cap():
    m = ListMap(page_size=10, max_pages=3)
    m.learn_top(ids(25), has_more=True)
    m.learn_after("x24", [f"x{i}" for i in range(25, 35)], has_more=True)
    assert len(m) == 30 and "x30" not in m and not m.end_reached
    m.learn_top(["n0", "n1", "x0"], has_more=True)
    assert len(m) == 30 and "x28" not in m and m.position("x27") == 29


def test_a_batch_is_judged_only_after_a_read_from_the_top():
    m = ListMap(page_size=10, max_pages=2)
    m.learn_top(ids(20), has_more=True)
    m.judge_missing(["late"], read_from_top=False)  # e.g. registered while a refresh skipped its range
    assert not m.deep
    m.judge_missing(["old", "x3"], read_from_top=True)  # the map reaches the cap: older than it
    assert m.deep == {"old"}
    m2 = ListMap(page_size=10, max_pages=5)
    m2.learn_top(ids(12), has_more=False)
    m2.judge_missing(["nowhere"], read_from_top=True)
    assert m2.unlisted == {"nowhere"} and not m2.deep
    m2.forget(["nowhere"])
    assert not m2.unlisted


@pytest.mark.parametrize(
    "pages_read, unknown_left, expected",
    [(0, 1, False), (0, 2, True), (1, 2, False), (3, 50, True), (49, 50, False)],
)
def test_discovery_stops_when_pages_stop_saving_retrieves(pages_read, unknown_left, expected):
    assert ListMap().should_discover(pages_read, unknown_left) is expected


def test_discovery_stops_at_the_page_cap():
    m = ListMap(page_size=10, max_pages=2)
    m.learn_top(ids(20), has_more=True)
    assert not m.should_discover(0, 100)
