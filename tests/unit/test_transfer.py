"""transfer.py on local disk: sources joined in order into one file that appears only when whole."""

from __future__ import annotations

import io

import pytest

from airflow_provider_openai_batch import storage, storage_s3, transfer
from airflow_provider_openai_batch.hooks.download import ContentStream, _IncompleteDownload

SETTINGS = transfer.TransferSettings(part_size=5 * 2**20, concurrency=2)


def source(data: bytes, fail_first: int = 0):
    """A source streaming ``data``; its first ``fail_first`` attempts break midway (as a dropped download)."""
    attempts = []

    def run(sink):
        while True:
            attempts.append(1)
            stream = ContentStream(iter([data[i : i + 5] for i in range(0, len(data), 5)]), len(data))
            if len(attempts) <= fail_first:
                stream = ContentStream(iter([data[:7]]), len(data))
                try:
                    sink(stream)
                except _IncompleteDownload:
                    continue
            sink(stream)
            return stream.lines

    run.attempts = attempts
    return run


def test_sources_join_in_order_line_safe_and_leave_no_hidden_file(tmp_path):
    dest = storage.to_path(tmp_path / "out" / "output.jsonl")
    lines = transfer.write_joined(
        [source(b'{"a": 1}\n'), source(b""), source(b'{"b": 2}\n{"c": 3}')], dest, SETTINGS
    )
    assert lines == [1, 0, 2]
    assert (tmp_path / "out" / "output.jsonl").read_bytes() == b'{"a": 1}\n{"b": 2}\n{"c": 3}\n'
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["output.jsonl"]


def test_nothing_is_an_empty_file(tmp_path):
    assert transfer.write_joined([], storage.to_path(tmp_path / "output.jsonl"), SETTINGS) == []
    assert (tmp_path / "output.jsonl").read_bytes() == b""


def test_a_dropped_download_restarts_only_its_own_file(tmp_path):
    first, second = source(b"x\n" * 1000, fail_first=1), source(b"y\n" * 10)
    transfer.write_joined([first, second], storage.to_path(tmp_path / "output.jsonl"), SETTINGS)
    assert (tmp_path / "output.jsonl").read_bytes() == b"x\n" * 1000 + b"y\n" * 10
    assert (len(first.attempts), len(second.attempts)) == (2, 1)


def test_a_failure_keeps_the_previous_file_and_leaves_no_hidden_one(tmp_path):
    (tmp_path / "output.jsonl").write_bytes(b"previous\n")

    class Boom(Exception):
        pass

    def broken(sink):
        sink(io.BytesIO(b"new line\n"))
        raise Boom

    with pytest.raises(Boom):
        transfer.write_joined([source(b"a\n"), broken], storage.to_path(tmp_path / "output.jsonl"), SETTINGS)
    assert (tmp_path / "output.jsonl").read_bytes() == b"previous\n"
    assert [p.name for p in tmp_path.iterdir()] == ["output.jsonl"]


@pytest.mark.parametrize(
    ("data", "keep", "passed", "lines", "seen"),
    [
        (b"a\nb\n", None, b"a\nb\n", 2, 2),
        (b"a\nb", None, b"a\nb\n", 2, 2),
        (b"a\n\nb\nc", lambda raw: raw != b"b\n", b"a\nc\n", 2, 3),
    ],
    ids=["whole", "last-newline-added", "filtered"],
)
def test_content_stream(data, keep, passed, lines, seen):
    stream = ContentStream(iter([data[:3], data[3:]]), len(data), keep)
    assert stream.read(2) + stream.read() == passed
    assert (stream.lines, stream.seen, stream.received) == (lines, seen, len(data))


def test_a_short_body_fails_its_reader_at_the_end():
    stream = ContentStream(iter([b"a\n"]), 10)
    with pytest.raises(_IncompleteDownload, match="received 2 of 10"):
        stream.read()


def test_part_size_below_s3s_minimum_is_refused():
    with pytest.raises(ValueError, match="landing_part_size_mb to be at least 5"):
        transfer.TransferSettings(part_size=2**20)


class _RecordingS3:
    """What JoinedUpload asks of S3, recorded: the part numbers it uploads and the parts it completes with."""

    def __init__(self):
        self.created, self.numbers, self.completed = 0, [], None

    def create_multipart_upload(self, **_):
        self.created += 1
        return {"UploadId": "u1"}

    def upload_part(self, PartNumber, Body, **_):
        self.numbers.append(PartNumber)
        return {"ETag": f"e{PartNumber}"}

    def complete_multipart_upload(self, MultipartUpload, **_):
        self.completed = [p["PartNumber"] for p in MultipartUpload["Parts"]]


def test_part_numbers_stay_within_s3s_ten_thousand_however_many_short_files():
    # 199 files each a little over half a part: pairs of them fill a gathered part, after 199 ranges.
    client, part = _RecordingS3(), 100
    with storage_s3.JoinedUpload(client, "b", "k", sources=199, part_size=part, concurrency=2) as upload:
        for index in range(199):
            upload.write(index, io.BytesIO(b"x" * 60), 60)
        upload.complete()
    assert len(client.numbers) == 100 and max(client.numbers) <= storage_s3.MAX_PARTS
    assert client.completed == sorted(client.numbers)


def test_too_many_files_for_one_object_are_refused_before_an_upload_starts():
    client = _RecordingS3()
    with pytest.raises(ValueError, match="at most 3999 files"):
        storage_s3.JoinedUpload(client, "b", "k", sources=4000, part_size=100, concurrency=2)
    assert client.created == 0


@pytest.mark.parametrize("stop", ["failure", "interrupt"])
def test_after_a_failure_or_an_interrupt_no_queued_file_starts(tmp_path, monkeypatch, stop):
    """One file at a time, three queued: the first fails (or the task's thread is interrupted while it runs),
    and the other two never start; nothing appears at the destination."""
    import threading

    started: list[int] = []
    release = threading.Event()

    def make(index: int):
        def run(sink):
            started.append(index)
            if stop == "failure":
                raise OSError("disk full")
            release.wait(1)
            sink(ContentStream(iter([b"x\n"]), 2))
            return 1

        return run

    if stop == "interrupt":  # the wait in the task's thread is interrupted (a task timeout raises there)
        real_wait = transfer.wait

        def interrupted(futures, return_when):
            while not started:
                threading.Event().wait(0.01)
            raise KeyboardInterrupt

        monkeypatch.setattr(transfer, "wait", interrupted)
    settings = transfer.TransferSettings(part_size=5 * 2**20, concurrency=1)
    dest = storage.to_path(tmp_path / "output.jsonl")
    with pytest.raises(OSError if stop == "failure" else KeyboardInterrupt):
        transfer.write_joined([make(0), make(1), make(2)], dest, settings)
    release.set()
    if stop == "interrupt":
        monkeypatch.setattr(transfer, "wait", real_wait)
    assert started == [0]
    assert list(tmp_path.iterdir()) == []
