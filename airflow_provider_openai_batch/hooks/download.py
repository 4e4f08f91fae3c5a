"""Streaming a file's content to whoever consumes it (a local file, an upload), retried from the start when the
connection drops mid-body.

Large downloads can be reset mid-stream (openai-python #2959) and a short body is not always an error to the
HTTP client, so each attempt checks the byte count against ``content-length`` and counts the lines it passed on
(the caller compares them with the batch's request counts). The consumer reads a :class:`ContentStream`, a
file-like view of the response that only ever holds one chunk, so memory stays flat whatever the file size.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import TypeVar

import httpx2
import openai

from airflow_provider_openai_batch.exceptions import OpenAIBatchError
from airflow_provider_openai_batch.requests_input.reading import count_lines

log = logging.getLogger(__name__)

T = TypeVar("T")
#: Keeps a line (raw bytes, newline included) or drops it; called once per line, in order.
LineFilter = Callable[[bytes], bool]
#: Called at the end of a whole body, before the consumer sees its end: raising makes the consumer fail.
EndCheck = Callable[["ContentStream"], None]


class _IncompleteDownload(Exception):
    pass


class ContentStream:
    """A readable, non-seekable view of one streamed response: at most one chunk is held at a time.

    Lines are joined safely: a body whose last line lacks its newline gets one. With ``keep``, only the lines it
    keeps are passed on (and counted). A body shorter than its ``content-length`` raises at its end, so a
    consumer never finishes a truncated copy.
    """

    def __init__(
        self,
        chunks: Iterator[bytes],
        expected_bytes: int | None,
        keep: LineFilter | None = None,
        check: EndCheck | None = None,
    ) -> None:
        self._chunks = chunks
        self._check = check
        self._expected = expected_bytes
        self._keep = keep
        self._parts: list[bytes] = []
        self._held = 0
        self._carry = b""  # with a filter: the start of a line whose end has not arrived yet
        self._last = b"\n"
        self._done = False
        self.size = expected_bytes  # of the body, when known (the lines passed on may be fewer)
        self.received = 0
        self.lines = 0  # passed on
        self.seen = 0  # received (with a filter: its non-blank lines)

    def readable(self) -> bool:
        return True

    @property
    def passed_size(self) -> int | None:
        """The bytes :meth:`read` will yield, when known from the start: the body's size, unless lines are
        filtered. A newline added to a last line that lacks one comes on top."""
        return self.size if self._keep is None else None

    def read(self, size: int = -1) -> bytes:
        while not self._done and (size < 0 or self._held < size):
            self._fill()
        data = b"".join(self._parts)
        if size < 0 or size >= len(data):
            self._parts, self._held = [], 0
            return data
        self._parts, self._held = [data[size:]], len(data) - size
        return data[:size]

    def _hold(self, data: bytes) -> None:
        if data:
            self._parts.append(data)
            self._held += len(data)

    def _fill(self) -> None:
        chunk = next(self._chunks, None)
        if chunk is None:
            self._finish()
            return
        self.received += len(chunk)
        if self._keep is None:
            if chunk:
                self.lines += count_lines(chunk)
                self.seen = self.lines
                self._last = chunk[-1:]
                self._hold(chunk)
            return
        *whole, self._carry = (self._carry + chunk).split(b"\n")
        self._hold(b"".join(self._kept(line + b"\n") for line in whole))

    def _kept(self, line: bytes) -> bytes:
        if not line.strip():
            return b""
        self.seen += 1
        if not self._keep(line):  # type: ignore[misc]
            return b""
        self.lines += 1
        return line

    def _finish(self) -> None:
        self._done = True
        if self._expected is not None and self._expected != self.received:
            raise _IncompleteDownload(f"received {self.received} of {self._expected} bytes")
        if self._keep is not None:
            if self._carry:
                self._hold(self._kept(self._carry + b"\n"))
        elif self._last != b"\n":
            self._hold(b"\n")
            self.lines += 1
            self.seen = self.lines
        if self._check is not None:
            self._check(self)


def stream_file(
    client: openai.OpenAI,
    file_id: str,
    consume: Callable[[ContentStream], T],
    *,
    max_attempts: int,
    chunk_size: int,
    keep: LineFilter | None = None,
    check: EndCheck | None = None,
    where: str = "",
) -> tuple[T, ContentStream]:
    """
    Stream file ``file_id`` into ``consume``; return what it returned and the stream (its ``lines``).

    :param client: the sync client.
    :param file_id: the file to download.
    :param consume: reads the stream to its end and stores it; called again, on a fresh stream, for each
        attempt, so it must start its copy over (a partial copy of a failed attempt must not count).
    :param max_attempts: total attempts; a dropped or short download is retried from scratch, an HTTP error
        such as 404 is raised at once.
    :param chunk_size: bytes per read from the response.
    :param keep: pass on only the lines it keeps (fresh state per attempt is the caller's business:
        :func:`stream_file` calls it on every line of every attempt).
    :param check: called at the end of each whole body, before ``consume`` sees the end (to refuse a body
        whose line count is wrong before its copy is completed).
    :param where: where the file goes, for messages.
    """
    last_error: BaseException | None = None
    for attempt in range(1, max_attempts + 1):
        try:
            with client.files.with_streaming_response.content(file_id) as response:
                expected = response.headers.get("content-length")
                encoded = response.headers.get("content-encoding", "identity") != "identity"
                stream = ContentStream(
                    response.iter_bytes(chunk_size),
                    int(expected) if expected is not None and not encoded else None,
                    keep,
                    check,
                )
                return consume(stream), stream
        except (
            httpx2.TransportError,
            httpx2.StreamError,
            openai.APIConnectionError,
            _IncompleteDownload,
        ) as exc:
            last_error = exc
            log.warning(
                "Download of file %s to %s failed on attempt %d of %d (%s: %s)%s",
                file_id,
                where,
                attempt,
                max_attempts,
                type(exc).__name__,
                exc,
                "; retrying from the start" if attempt < max_attempts else "",
            )
    raise OpenAIBatchError(
        f"Could not download file {file_id} to {where}: the connection dropped on each of "
        f"{max_attempts} attempts (last error {type(last_error).__name__}: {last_error})"
    ) from last_error


def download_to_path(
    client: openai.OpenAI, file_id: str, local_path: str, *, max_attempts: int, chunk_size: int
) -> tuple[int, int]:
    """Stream file ``file_id`` to ``local_path`` (overwritten); return ``(bytes, lines)``."""

    def write(stream: ContentStream) -> int:
        written = 0
        with open(local_path, "wb") as out:
            while chunk := stream.read(chunk_size):
                written += out.write(chunk)
        return written

    _, stream = stream_file(
        client, file_id, write, max_attempts=max_attempts, chunk_size=chunk_size, where=local_path
    )
    return stream.received, stream.lines
