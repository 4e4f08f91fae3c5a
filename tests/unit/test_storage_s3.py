"""storage_s3.plan_parts as a table: how pieces of given sizes become the parts of one S3 object."""

from __future__ import annotations

import pytest

from airflow_provider_openai_batch.storage_s3 import Range, plan_parts

M = 10  # a small stand-in for S3's 5 MiB, so the table stays readable
CASES = [
    ("nothing", [], []),
    ("one big piece, copied whole", [25], [(Range(0, 0, 25),)]),
    ("one small piece is the last part", [3], [(Range(0, 0, 3),)]),
    ("big pieces are copied server-side", [10, 30], [(Range(0, 0, 10),), (Range(1, 0, 30),)]),
    (
        "a small piece takes what it needs from the next and the rest is copied",
        [3, 30],
        [(Range(0, 0, 3), Range(1, 0, 7)), (Range(1, 7, 30),)],
    ),
    (
        "small pieces gather until a part is big enough",
        [4, 4, 4, 2],
        [(Range(0, 0, 4), Range(1, 0, 4), Range(2, 0, 4)), (Range(3, 0, 2),)],
    ),
    (
        "a next piece too small to give and keep enough is taken whole",
        [3, 12],
        [(Range(0, 0, 3), Range(1, 0, 12))],
    ),
    ("empty pieces are skipped", [0, 12, 0], [(Range(1, 0, 12),)]),
    (
        "a piece bigger than the largest part is split evenly",
        [90],
        [(Range(0, 0, 30),), (Range(0, 30, 60),), (Range(0, 60, 90),)],
    ),
    (
        "a big piece's small tail is carried into the next part",
        [14, 3],
        [(Range(0, 0, 14),), (Range(1, 0, 3),)],
    ),
]


@pytest.mark.parametrize(("sizes", "parts"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_plan_parts(sizes, parts):
    plan = plan_parts(sizes, min_part=M, max_part=40)
    assert plan == parts
    # Every byte once, in order; every part but the last at least min_part and at most max_part (or 2*min
    # when carried through the worker).
    flat = [(r.piece, i) for part in plan for r in part for i in range(r.start, r.end)]
    assert flat == [(p, i) for p, size in enumerate(sizes) for i in range(size)]
    for part in plan[:-1]:
        size = sum(r.end - r.start for r in part)
        assert M <= size <= max(40, 2 * M)
