"""Streaming a file's content to disk, retried from the start when the connection drops mid-body.

Large downloads can be reset mid-stream (openai-python #2959) and a short body is not always an error to the
HTTP client, so each attempt checks the byte count against ``content-length`` and counts the lines it wrote
(the caller compares them with the batch's request counts).
"""

from __future__ import annotations

import logging

import httpx2
import openai

from airflow_provider_openai_batch.exceptions import OpenAIBatchError

log = logging.getLogger(__name__)


class _IncompleteDownload(Exception):
    pass


def download_to_path(
    client: openai.OpenAI, file_id: str, local_path: str, *, max_attempts: int, chunk_size: int
) -> tuple[int, int]:
    """
    Stream file ``file_id`` to ``local_path`` (overwritten); return ``(bytes, lines)``.

    :param client: the sync client.
    :param file_id: the file to download.
    :param local_path: where to write.
    :param max_attempts: total attempts; a dropped or short download is retried from scratch, an HTTP error
        such as 404 is raised at once.
    :param chunk_size: bytes per read; memory use is bounded by it.
    """
    last_error: BaseException | None = None
    for attempt in range(1, max_attempts + 1):
        try:
            return _download_once(client, file_id, local_path, chunk_size)
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
                local_path,
                attempt,
                max_attempts,
                type(exc).__name__,
                exc,
                "; retrying from the start" if attempt < max_attempts else "",
            )
    raise OpenAIBatchError(
        f"Could not download file {file_id} to {local_path}: the connection dropped on each of "
        f"{max_attempts} attempts (last error {type(last_error).__name__}: {last_error})"
    ) from last_error


def _download_once(client: openai.OpenAI, file_id: str, local_path: str, chunk_size: int) -> tuple[int, int]:
    nbytes = lines = 0
    last = b""
    with (
        client.files.with_streaming_response.content(file_id) as response,
        open(local_path, "wb") as out,
    ):
        for chunk in response.iter_bytes(chunk_size):
            out.write(chunk)
            nbytes += len(chunk)
            lines += chunk.count(b"\n")
            last = chunk[-1:]
        expected = response.headers.get("content-length")
        encoded = response.headers.get("content-encoding", "identity") != "identity"
        if expected is not None and not encoded and int(expected) != nbytes:
            raise _IncompleteDownload(f"received {nbytes} of {expected} bytes")
    if last and last != b"\n":
        lines += 1
    return nbytes, lines
