"""transfer.py: sources joined in order into one local file that appears only when whole, and S3 uploads as\nstorage_s3 makes them (a recording client: the part numbers, checksums and completions it is asked for)."""

from __future__ import annotations

import io
from types import SimpleNamespace

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
    """What an Upload asks of S3, recorded: the part numbers it uploads and the parts it completes with."""

    def __init__(self, checksums="when_supported"):
        self.created, self.numbers, self.completed_with, self.checksums = 0, [], None, set()
        self.meta = SimpleNamespace(config=SimpleNamespace(request_checksum_calculation=checksums))

    def create_multipart_upload(self, ChecksumAlgorithm=None, **_):
        self.created += 1
        self.checksums.add(("create", ChecksumAlgorithm))
        return {"UploadId": "u1"}

    def upload_part(self, PartNumber, Body, ChecksumAlgorithm=None, **_):
        self.numbers.append(PartNumber)
        self.checksums.add(("part", ChecksumAlgorithm))
        return {
            "ETag": f"e{PartNumber}",
            **({"ChecksumCRC32": f"c{PartNumber}"} if ChecksumAlgorithm else {}),
        }

    def complete_multipart_upload(self, MultipartUpload, **_):
        self.completed_with = MultipartUpload["Parts"]

    @property
    def completed(self):
        """The part numbers completed, in the order given."""
        return [p["PartNumber"] for p in self.completed_with]


def _upload(client, data: bytes, size: int | None, part: int = 100) -> None:
    parts = storage_s3.PartPool(2)
    try:
        upload = storage_s3.Upload(client, "b", "k", part_size=part, parts=parts)
        upload.write(io.BytesIO(data), size)
        upload.complete()
    finally:
        parts.shutdown()


def test_a_file_too_long_for_s3s_ten_thousand_parts_gets_bigger_parts_when_its_size_is_known():
    client, size = _RecordingS3(), 100 * storage_s3.MAX_PARTS + 50
    _upload(client, b"x" * size, size)
    assert max(client.numbers) == len(client.numbers) <= storage_s3.MAX_PARTS  # 101-byte parts: 9,902
    assert client.completed == sorted(client.numbers)


def test_a_file_too_long_for_s3s_parts_is_refused_before_part_ten_thousand_and_one_is_sent():
    client = _RecordingS3()
    with pytest.raises(ValueError, match="raise \\[openai_batch\\] landing_part_size_mb"):
        _upload(client, b"x" * (100 * storage_s3.MAX_PARTS + 1), None)  # its size unknown up front
    assert max(client.numbers) == storage_s3.MAX_PARTS and client.completed_with is None


def test_parts_are_the_part_size_but_the_last_and_a_retry_replaces_an_earlier_attempt():
    client, parts = _RecordingS3(), storage_s3.PartPool(2)
    upload = storage_s3.Upload(client, "b", "k", part_size=100, parts=parts)
    upload.write(io.BytesIO(b"x" * 450), 450)  # a first attempt, five parts
    upload.write(io.BytesIO(b"y" * 250), 250)  # the retry: three parts, the last 50 bytes
    upload.complete()
    parts.shutdown()
    assert client.completed == [1, 2, 3]


def test_an_empty_file_is_an_empty_object():
    class Empty(_RecordingS3):
        aborted = put = None

        def abort_multipart_upload(self, **_):
            self.aborted = True

        def put_object(self, Body, **_):
            self.put = Body

    client = Empty()
    _upload(client, b"", 0)
    assert (client.numbers, client.aborted, client.put) == ([], True, b"")


def test_every_part_carries_a_crc32_that_the_completion_sends_back():
    client = _RecordingS3()
    _upload(client, b"x" * 250, 250)
    assert client.checksums == {("create", "CRC32"), ("part", "CRC32")}
    assert client.completed_with == [
        {"PartNumber": n, "ETag": f"e{n}", "ChecksumCRC32": f"c{n}"} for n in (1, 2, 3)
    ]


def test_a_client_configured_to_send_checksums_only_when_required_sends_none():
    """As boto3's transfer manager: `request_checksum_calculation = when_required` (stores without checksums)."""
    client = _RecordingS3(checksums="when_required")
    _upload(client, b"x" * 250, 250)
    assert client.checksums == {("create", None), ("part", None)}
    assert client.completed_with == [{"PartNumber": n, "ETag": f"e{n}"} for n in (1, 2, 3)]


def test_joining_is_for_local_disk_only(tmp_path):
    with pytest.raises(ValueError, match="object storage lands each file as its own object"):
        transfer.write_joined([source(b"a\n")], SimpleNamespace(protocol="s3", path="b/k"), SETTINGS)


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


def sized(data: bytes, keep=None, chunk: int = 4):
    """A source streaming ``data`` in ``chunk``-byte chunks with its content-length (and a line filter)."""

    def run(sink):
        pieces = [data[i : i + chunk] for i in range(0, len(data), chunk)]
        stream = ContentStream(iter(pieces), len(data), keep)
        sink(stream)
        return stream.lines

    return run


def test_whole_sources_are_written_at_their_offsets_and_never_rewritten(tmp_path, monkeypatch):
    def no_rewrite(*_):
        raise AssertionError("every source filled its range: nothing should be rewritten")

    monkeypatch.setattr(transfer, "_rebuild", no_rewrite)
    datas = [b'{"a": 1}\n' * 300, b"", b'{"b": 22}\n', b'{"c": 333}\n' * 1000]
    settings = transfer.TransferSettings(part_size=5 * 2**20, concurrency=4)
    lines = transfer.write_joined(
        [sized(d) for d in datas], storage.to_path(tmp_path / "output.jsonl"), settings
    )
    assert lines == [300, 0, 1, 1000]
    assert (tmp_path / "output.jsonl").read_bytes() == b"".join(datas)
    assert [p.name for p in tmp_path.iterdir()] == ["output.jsonl"]


def test_a_source_of_unknown_size_and_the_ones_after_it_get_files_of_their_own(tmp_path):
    drop_b = lambda raw: raw != b"b\n"  # noqa: E731
    sources = [sized(b"first\n"), sized(b"a\nb\nc\n", keep=drop_b), sized(b"last\n"), sized(b"end")]
    lines = transfer.write_joined(sources, storage.to_path(tmp_path / "output.jsonl"), SETTINGS)
    assert lines == [1, 2, 1, 1]
    assert (tmp_path / "output.jsonl").read_bytes() == b"first\na\nc\nlast\nend\n"
    assert [p.name for p in tmp_path.iterdir()] == ["output.jsonl"]


def test_a_retry_that_brings_another_size_lands_what_it_brought(tmp_path):
    """The first attempt reserved 20 bytes and dropped midway; the retry is 9 bytes: the file holds the retry's
    bytes, then the next source's, with nothing of the dropped attempt between them."""
    attempts = []

    def changing(sink):
        while True:
            attempts.append(1)
            data = b"first-try-long-line\n" if len(attempts) == 1 else b"retry-ok\n"
            chunks = iter([data[:7]]) if len(attempts) == 1 else iter([data])
            stream = ContentStream(chunks, len(data))
            try:
                sink(stream)
            except _IncompleteDownload:
                continue
            return stream.lines

    lines = transfer.write_joined(
        [sized(b"zero\n"), changing, sized(b"two\n")], storage.to_path(tmp_path / "output.jsonl"), SETTINGS
    )
    assert (lines, len(attempts)) == ([1, 1, 1], 2)
    assert (tmp_path / "output.jsonl").read_bytes() == b"zero\nretry-ok\ntwo\n"
    assert [p.name for p in tmp_path.iterdir()] == ["output.jsonl"]


def test_an_earlier_failure_frees_a_later_source_waiting_for_its_offset(tmp_path):
    """Source 1 waits for source 0's size; source 0 fails before it has one. The landing ends with source 0's
    error (not a hang), and nothing is left behind."""
    import threading

    class Gone(Exception):
        pass

    def failing(sink):
        threading.Event().wait(0.2)  # source 1 is waiting by now
        raise Gone

    outcome: list[BaseException] = []

    def land():
        try:
            transfer.write_joined(
                [failing, sized(b"x\n")], storage.to_path(tmp_path / "output.jsonl"), SETTINGS
            )
        except BaseException as err:  # noqa: BLE001  # recorded for the assertion
            outcome.append(err)

    thread = threading.Thread(target=land, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "the later source still waits for an offset that will never come"
    assert [type(e) for e in outcome] == [Gone]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kernel_copy", [True, False], ids=["copy_file_range", "through-python"])
def test_a_rewrite_keeps_every_byte_in_order_with_or_without_the_kernels_copy(
    tmp_path, monkeypatch, kernel_copy
):
    """Pieces that did not fill their ranges (a newline added, a filtered file) are rewritten in order; where
    ``copy_file_range`` is refused (another file system, another OS) the bytes go through Python instead."""
    if not kernel_copy:

        def refused(*_):
            raise OSError(18, "Invalid cross-device link")

        monkeypatch.setattr(transfer.os, "copy_file_range", refused)
    big = b"".join(b'{"n": %d}\n' % i for i in range(300_000))  # several COPY_BUFFERs
    drop_odd = lambda raw: not raw.endswith(b"1}\n")  # noqa: E731
    sources = [sized(big, chunk=2**16), sized(b"no newline"), sized(big, drop_odd, 2**16), sized(b"last\n")]
    transfer.write_joined(sources, storage.to_path(tmp_path / "output.jsonl"), SETTINGS)
    kept = b"".join(line for line in big.splitlines(keepends=True) if not line.endswith(b"1}\n"))
    assert (tmp_path / "output.jsonl").read_bytes() == big + b"no newline\n" + kept + b"last\n"
    assert [p.name for p in tmp_path.iterdir()] == ["output.jsonl"]
