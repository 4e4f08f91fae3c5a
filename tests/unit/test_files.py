"""files.py: the names a landing writes (one file, or numbered ones) and how a message names them."""

from __future__ import annotations

import pytest

from airflow_provider_openai_batch.files import (
    ERRORS,
    LANDED_NAME,
    MANIFEST,
    OUTPUT,
    describe_files,
    numbered,
)


@pytest.mark.parametrize(
    ("name", "index", "expected"),
    [
        (OUTPUT, 0, "output-00000.jsonl"),
        (OUTPUT, 1, "output-00001.jsonl"),
        (ERRORS, 12, "errors-00012.jsonl"),
        (OUTPUT, 99_999, "output-99999.jsonl"),
    ],
)
def test_numbered_names_file_index_of_several(name, index, expected):
    assert numbered(name, index) == expected


@pytest.mark.parametrize(
    ("name", "landed"),
    [
        (OUTPUT, True),
        (ERRORS, True),
        ("output-00000.jsonl", True),
        ("errors-00001.jsonl", True),
        (MANIFEST, False),
        ("output-0.jsonl", False),  # not five digits: not a name landing writes
        ("output-000000.jsonl", False),
        ("output.jsonl.tmp", False),
        (".partial-t-0.output.jsonl", False),  # a file still being written
        ("requests.jsonl", False),
        ("output_00000.jsonl", False),
    ],
)
def test_landed_name_matches_exactly_the_names_landing_writes(name, landed):
    assert bool(LANDED_NAME.fullmatch(name)) is landed


def test_every_numbered_name_is_a_landed_name():
    for name in (OUTPUT, ERRORS):
        assert all(LANDED_NAME.fullmatch(numbered(name, i)) for i in (0, 1, 10, 99_999))


@pytest.mark.parametrize(
    ("paths", "expected"),
    [
        ([], "no file"),
        (["/data/run/output.jsonl"], "/data/run/output.jsonl"),
        (
            ["s3://c@b/run/output-00000.jsonl", "s3://c@b/run/output-00001.jsonl"],
            "s3://c@b/run/ in 2 files (output-00000.jsonl to output-00001.jsonl)",
        ),
        (
            [f"s3://c@b/run/errors-{i:05d}.jsonl" for i in range(120)],
            "s3://c@b/run/ in 120 files (errors-00000.jsonl to errors-00119.jsonl)",
        ),
    ],
    ids=["none", "one", "two", "many"],
)
def test_describe_files_names_one_file_or_counts_several_on_one_line(paths, expected):
    assert describe_files(paths) == expected
