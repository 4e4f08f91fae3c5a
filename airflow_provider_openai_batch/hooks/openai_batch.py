"""OpenAIBatchHook: the openai client built from an Airflow connection, one thin method per API verb.

Verbs mirror openai-python's resources (keyword-only arguments, sync and async side by side); a batch leaves the
hook as the plain JSON dict the API sent, the one shape the rest of the provider reads. How a connection maps to
client arguments lives in :mod:`.connection`, how the clients are built and the async one shared in
:mod:`.clients`, the create's retry policy in :mod:`.create_retry`. The API key is never logged, never in a repr
and never in an exception message: the clients scrub the connection's secrets from every error a server's answer
makes (:mod:`.secrets`), and the hook registers them with Airflow's masker.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from functools import cached_property
from typing import IO, TYPE_CHECKING, Any, NamedTuple, TypeVar

import openai
from airflow.sdk import BaseHook

from airflow_provider_openai_batch.hooks import clients, connection_test, create_retry, download, secrets
from airflow_provider_openai_batch.hooks.connection import (
    batch_dashboard_url,
    client_kwargs_from_connection,
    connection_form,
    safe_url,
)
from airflow_provider_openai_batch.version_compat import mask_secret

if TYPE_CHECKING:
    from openai.types import Batch, FileDeleted, FileObject

log = logging.getLogger(__name__)
T = TypeVar("T")


#: Seconds the connection test waits for its one call.
_TEST_TIMEOUT = 30.0


def _non_empty(name: str, value: Any) -> None:
    if not value or not isinstance(value, str):
        raise ValueError(f"Expected a non-empty value for `{name}` but received {value!r}")


def _check_limit(limit: Any) -> None:
    if not isinstance(limit, int) or not 1 <= limit <= 100:
        raise ValueError(f"Expected `limit` between 1 and 100 but received {limit!r}")


class BatchPage(NamedTuple):
    """One page of ``GET /batches``, newest first, each batch a plain dict."""

    data: list[dict[str, Any]]
    has_more: bool


def batch_dict(batch: Batch) -> dict[str, Any]:
    """A batch as the plain JSON dict the API sent: the one shape the provider passes around."""
    return batch.model_dump(mode="json", exclude_none=False)


class OpenAIBatchHook(BaseHook):
    """
    Interact with the OpenAI Files and Batch APIs (or Azure OpenAI's) through the official ``openai`` client.

    :param openai_conn_id: connection of type ``openai_batch`` (or ``openai``, from
        apache-airflow-providers-openai). The password is the API key, the host an optional base URL.
    """

    conn_name_attr = "openai_conn_id"
    default_conn_name = "openai_default"
    conn_type = "openai_batch"
    hook_name = "OpenAI Batch"

    def __init__(self, openai_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.openai_conn_id = openai_conn_id

    def __repr__(self) -> str:
        return f"{type(self).__name__}(openai_conn_id={self.openai_conn_id!r})"

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Connection form: API key as password, optional base URL as host, the rest in extras."""
        return connection_form()

    # -- clients ---------------------------------------------------------------------------------------

    @cached_property
    def client(self) -> openai.OpenAI:
        """The synchronous client (``OpenAI`` or ``AzureOpenAI``), built once per hook."""
        conn = self.get_connection(self.openai_conn_id)
        kind, kwargs = client_kwargs_from_connection(conn)
        for secret in secrets.client_kwargs_secrets(kwargs):
            mask_secret(secret)
        log.debug("Building %s client for connection %r", kind, self.openai_conn_id)
        return clients.new_sync_client(kind, kwargs)

    def get_conn(self) -> openai.OpenAI:
        """Return the synchronous client."""
        return self.client

    async def get_async_client(self) -> openai.AsyncOpenAI:
        """
        Return the ``AsyncOpenAI`` (or ``AsyncAzureOpenAI``) client shared by this process and event loop.

        The connection is looked up with ``aget_connection`` (never the sync lookup inside the loop); hooks
        on connections with equal settings get the same client and its connection pool.
        """
        conn = await self.aget_connection(self.openai_conn_id)
        kind, kwargs = client_kwargs_from_connection(conn, await clients.aextra_dejson(conn))
        return await clients.shared_async_client(kind, kwargs, self.openai_conn_id)

    # -- connection test and link -------------------------------------------------------------------------

    def test_connection(self) -> tuple[bool, str]:
        """
        Three cheap authenticated reads, for ``airflow connections test`` and the UI (see :mod:`.connection_test`):
        list one batch, the page after it, and a batch that does not exist.

        :return: ``(True, message)`` when the API answered as the provider needs, else ``(False, cause)``:
            authentication (401 or 403), not found (404: the base URL probably lacks ``/v1``), unreachable
            (naming the host), a gateway that ignores ``after=`` or hides statuses, or the connection's own
            settings. The connection's secrets are never in the message, even when the server echoes them.
        """
        try:
            client = self.client
        except Exception as err:  # a connection that cannot be read or mapped: ValueError, not found, ...
            return False, f"Connection {self.openai_conn_id!r} cannot be used: {err}"
        url = safe_url(str(client.base_url))
        # One attempt each, bounded: a button press should not wait out the client's 10-minute default.
        probe = client.with_options(max_retries=0, timeout=_TEST_TIMEOUT)
        ok, message = connection_test.check(probe, url)
        return ok, secrets.scrub(message, secrets.client_secrets(client))

    def dashboard_url(self, batch_id: str) -> str:
        """
        Where a person can see the batch: OpenAI's dashboard, the Azure resource's batch page, or the base
        URL's host for other servers (the bundled emulator serves a page there). A connection extra
        ``dashboard_url`` (a template with ``{batch_id}``) overrides it.

        :param batch_id: the batch's id.
        """
        return batch_dashboard_url(self.get_connection(self.openai_conn_id), batch_id)

    # -- sync verbs ------------------------------------------------------------------------------------

    def upload_file(self, *, file: IO[bytes], filename: str, purpose: str = "batch") -> FileObject:
        """
        Upload a file, streaming it from ``file`` (read in chunks by the HTTP client, never all at once).

        :param file: a binary file object positioned anywhere (it is read from the start).
        :param filename: the name OpenAI records; batch input files must end with ``.jsonl``.
        :param purpose: the file's purpose, ``"batch"`` for batch input.
        """
        _non_empty("filename", filename)
        _non_empty("purpose", purpose)
        if file is None or not hasattr(file, "read"):
            raise ValueError(f"Expected a binary file object for `file` but received {type(file).__name__}")
        return self.client.files.create(file=(filename, file), purpose=purpose)  # type: ignore[arg-type]

    def create_batch(
        self,
        *,
        input_file_id: str,
        endpoint: str,
        completion_window: str = "24h",
        metadata: dict[str, str] | None = None,
        output_expires_after: dict[str, Any] | None = None,
        find_existing: Callable[[], str | None] | None = None,
    ) -> dict[str, Any]:
        """
        Create a batch from an uploaded input file; the batch as a dict.

        :param input_file_id: id of a file uploaded with purpose ``batch``.
        :param endpoint: the endpoint every request targets, e.g. ``/v1/chat/completions``.
        :param completion_window: only ``"24h"`` is accepted by the API.
        :param metadata: at most 16 string pairs (keys up to 64, values up to 512 characters); the operator
            builds them within these limits (:mod:`..lifecycle.tags`), the API refuses others with a 400.
        :param output_expires_after: e.g. ``{"anchor": "created_at", "seconds": 86400}``.
        :param find_existing: returns the id of the batch this call made, or ``None``. When given, a failure the client
            would retry is not blindly posted again (which could bill a second batch): after openai's delay,
            the batch is looked for and returned when found (see :func:`.create_retry.create_with_recovery`).
            Without it, the client's own retries apply.
        """
        _non_empty("input_file_id", input_file_id)
        _non_empty("endpoint", endpoint)
        _non_empty("completion_window", completion_window)
        extra: dict[str, Any] = {}
        if metadata is not None:
            extra["metadata"] = metadata
        if output_expires_after is not None:
            extra["output_expires_after"] = output_expires_after

        def create(client: openai.OpenAI) -> dict[str, Any]:
            return batch_dict(
                client.batches.create(
                    input_file_id=input_file_id,
                    endpoint=endpoint,  # type: ignore[arg-type]
                    completion_window=completion_window,  # type: ignore[arg-type]
                    **extra,
                )
            )

        if find_existing is None:
            return create(self.client)
        once = self.client.with_options(max_retries=0)

        def found() -> dict[str, Any] | None:
            batch_id = find_existing()
            return None if batch_id is None else self.get_batch(batch_id)

        return create_retry.create_with_recovery(lambda: create(once), found, client=self.client)

    def get_batch(self, batch_id: str) -> dict[str, Any]:
        """Retrieve a batch, as a dict."""
        _non_empty("batch_id", batch_id)
        return batch_dict(self.client.batches.retrieve(batch_id))

    def cancel_batch(self, batch_id: str) -> dict[str, Any]:
        """Ask OpenAI to cancel a batch (it goes ``cancelling`` and then ``cancelled``); the batch, as a dict."""
        _non_empty("batch_id", batch_id)
        return batch_dict(self.client.batches.cancel(batch_id))

    def list_batches(self, *, after: str | None = None, limit: int = 100) -> BatchPage:
        """
        One page of batches, newest first.

        :param after: cursor: the id of the last batch of the previous page.
        :param limit: page size, 1 to 100.
        """
        _check_limit(limit)
        if after is not None:
            _non_empty("after", after)
            page = self.client.batches.list(after=after, limit=limit)
        else:
            page = self.client.batches.list(limit=limit)
        return BatchPage([batch_dict(b) for b in page.data], bool(page.has_more))

    def iter_batches(self, *, max_pages: int = 5, limit: int = 100) -> Iterator[dict[str, Any]]:
        """
        Iterate over the most recent batches, newest first, fetching at most ``max_pages`` pages.

        The API has no server-side filter, so scans must be bounded.

        :param max_pages: pages to fetch at most.
        :param limit: page size, 1 to 100.
        """
        if int(max_pages) < 1:
            raise ValueError(f"Expected `max_pages` to be at least 1 but received {max_pages!r}")
        after: str | None = None
        for _ in range(max_pages):
            page = self.list_batches(after=after, limit=limit)
            yield from page.data
            if not page.has_more or not page.data:
                return
            after = page.data[-1]["id"]

    def delete_file(self, file_id: str) -> FileDeleted:
        """Delete a file."""
        _non_empty("file_id", file_id)
        return self.client.files.delete(file_id)

    def download_file(
        self,
        file_id: str,
        *,
        local_path: str | os.PathLike[str],
        max_attempts: int = 3,
        chunk_size: int = 1024 * 1024,
    ) -> tuple[int, int]:
        """
        Stream a file's content to ``local_path``; return ``(bytes, lines)``.

        Large downloads can be reset mid-stream (openai-python #2959): a dropped or short download is
        retried from scratch (the local file is truncated) up to ``max_attempts`` times. HTTP errors such
        as 404 are not retried.

        :param file_id: the file to download (a batch's ``output_file_id`` or ``error_file_id``).
        :param local_path: where to write; overwritten.
        :param max_attempts: total attempts before giving up.
        :param chunk_size: bytes per read; memory use is bounded by it.
        """
        _non_empty("file_id", file_id)
        _non_empty("local_path", os.fspath(local_path) if local_path else local_path)
        if int(max_attempts) < 1:
            raise ValueError(f"Expected `max_attempts` to be at least 1 but received {max_attempts!r}")
        return download.download_to_path(
            self.client, file_id, os.fspath(local_path), max_attempts=max_attempts, chunk_size=chunk_size
        )

    def stream_file(
        self,
        file_id: str,
        consume: Callable[[download.ContentStream], T],
        *,
        keep: download.LineFilter | None = None,
        check: download.EndCheck | None = None,
        where: str = "",
        max_attempts: int = 3,
        chunk_size: int = 1024 * 1024,
    ) -> tuple[T, download.ContentStream]:
        """
        Stream a file's content into ``consume`` (an upload, a local file) without a full copy anywhere else;
        return what ``consume`` returned and the stream, whose ``lines`` it passed on.

        A dropped or short download is retried from scratch, ``consume`` being called again on a fresh stream.

        :param file_id: the file to download.
        :param consume: reads the stream to its end; it must start its copy over on each call.
        :param keep: pass on only the lines it keeps.
        :param check: called at the end of each whole body, before ``consume`` sees the end; what it raises
            fails ``consume`` (an upload is then aborted, not completed) and is not retried.
        :param where: where the file goes, for messages.
        :param max_attempts: total attempts before giving up.
        :param chunk_size: bytes per read from the response.
        """
        _non_empty("file_id", file_id)
        if int(max_attempts) < 1:
            raise ValueError(f"Expected `max_attempts` to be at least 1 but received {max_attempts!r}")
        return download.stream_file(
            self.client,
            file_id,
            consume,
            keep=keep,
            check=check,
            where=where,
            max_attempts=max_attempts,
            chunk_size=chunk_size,
        )

    # -- async verbs -----------------------------------------------------------------------------------

    async def aget_batch(self, batch_id: str) -> dict[str, Any]:
        """Retrieve a batch with the shared async client, as a dict."""
        _non_empty("batch_id", batch_id)
        client = await self.get_async_client()
        return batch_dict(await client.batches.retrieve(batch_id))

    async def acancel_batch(self, batch_id: str) -> dict[str, Any]:
        """Cancel a batch with the shared async client; the batch, as a dict."""
        _non_empty("batch_id", batch_id)
        client = await self.get_async_client()
        return batch_dict(await client.batches.cancel(batch_id))

    async def alist_batches(self, *, after: str | None = None, limit: int = 100) -> BatchPage:
        """
        One page of batches, newest first, with the shared async client.

        :param after: cursor: the id of the last batch of the previous page.
        :param limit: page size, 1 to 100.
        """
        _check_limit(limit)
        client = await self.get_async_client()
        if after is not None:
            _non_empty("after", after)
            page = await client.batches.list(after=after, limit=limit)
        else:
            page = await client.batches.list(limit=limit)
        return BatchPage([batch_dict(b) for b in page.data], bool(page.has_more))
