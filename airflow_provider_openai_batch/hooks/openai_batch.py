"""OpenAIBatchHook: sync and async openai clients built from an Airflow connection, one thin method per verb.

Connection mapping (one pure function, :func:`client_kwargs_from_connection`, used by both paths):

* ``password`` is the API key; ``host`` the base URL (optional, defaults to the client's own).
* extras ``organization``, ``project``, ``timeout`` (seconds), ``max_retries``, ``default_headers`` (dict).
* Azure when the extras have ``azure_endpoint`` or ``api_type: "azure"``: ``api_version`` (required) and an
  optional ``azure_deployment``; the client is then ``AzureOpenAI`` / ``AsyncAzureOpenAI``.
* Connections made for apache-airflow-providers-openai (type ``openai``) keep client arguments in
  ``extra.openai_client_kwargs``; those are merged first, and the connection's own fields win over them.

The async client is shared per process, per event loop and per connection settings, so thousands of triggers
polling in one triggerer use one client and one connection pool; a connection whose settings change gets a
new client. The API key is never logged, never in a repr and never in an exception message raised here.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import weakref
from collections.abc import Iterator
from functools import cached_property
from typing import IO, TYPE_CHECKING, Any, Literal

import httpx2
import openai
from airflow.sdk import BaseHook

from airflow_provider_openai_batch.exceptions import OpenAIBatchError

if TYPE_CHECKING:
    from airflow.sdk import Connection
    from openai.pagination import AsyncCursorPage, SyncCursorPage
    from openai.types import Batch, FileDeleted, FileObject

log = logging.getLogger(__name__)

ClientKind = Literal["openai", "azure"]

#: Pool size of the shared async client. Polls are short GETs: 1,000 triggers polling every minute need about
#: 5 connections at 300 ms latency; 50 absorbs the burst after a triggerer restart, and a request waiting for a
#: free connection is bounded by the client's pool timeout. (httpcore scans the whole pool on every request,
#: so a much larger pool costs CPU per poll without adding throughput.)
ASYNC_MAX_CONNECTIONS = 50

# Client arguments a connection may set; anything else in ``openai_client_kwargs`` is dropped with a warning
# (an ``http_client`` or a callable cannot come from JSON anyway).
_ALLOWED_CLIENT_KWARGS = frozenset(
    {
        "api_key",
        "organization",
        "project",
        "base_url",
        "timeout",
        "max_retries",
        "default_headers",
        "default_query",
        "azure_endpoint",
        "azure_deployment",
        "api_version",
    }
)
_AZURE_ONLY_KWARGS = frozenset({"azure_endpoint", "azure_deployment", "api_version"})


def _non_empty(name: str, value: Any) -> None:
    if not value or not isinstance(value, str):
        raise ValueError(f"Expected a non-empty value for `{name}` but received {value!r}")


def _check_metadata(metadata: Any) -> None:
    """The Batch API's metadata limits, checked before a request is spent on them."""
    if not isinstance(metadata, dict):
        raise ValueError(
            f"Expected `metadata` to be a dict of strings but received {type(metadata).__name__}"
        )
    if len(metadata) > 16:
        raise ValueError(f"Expected at most 16 `metadata` pairs but received {len(metadata)}")
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ValueError(
                f"Expected `metadata` keys and values to be strings but received {key!r}: {value!r}"
            )
        if len(key) > 64 or len(value) > 512:
            raise ValueError(
                f"Expected `metadata` keys of at most 64 and values of at most 512 characters but key {key!r} "
                f"has {len(key)} and its value {len(value)}"
            )


def _as_dict(name: str, value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise ValueError(
                f"Expected connection extra `{name}` to be a JSON object but it is not valid JSON"
            ) from None
    if not isinstance(value, dict):
        raise ValueError(
            f"Expected connection extra `{name}` to be an object but received {type(value).__name__}"
        )
    return value


def client_kwargs_from_connection(
    conn: Connection, extra: dict[str, Any] | None = None
) -> tuple[ClientKind, dict[str, Any]]:
    """
    Map an Airflow connection to the openai client class to use and its constructor arguments.

    Pure: no network, no Airflow lookup. The sync and async paths both call it.

    :param conn: the connection (``openai_batch`` or apache-airflow-providers-openai's ``openai`` type).
    :param extra: the already-decoded extras; the async path passes ``await conn.aextra_dejson()`` so that
        nothing here calls Airflow's synchronous secret masking inside an event loop.
    :return: ``("openai" | "azure", kwargs)`` for ``OpenAI``/``AsyncOpenAI`` or ``AzureOpenAI``/``AsyncAzureOpenAI``.
    """
    extra = dict(conn.extra_dejson if extra is None else extra)
    kwargs: dict[str, Any] = {}

    if "openai_client_kwargs" in extra:
        for key, value in _as_dict("openai_client_kwargs", extra.pop("openai_client_kwargs")).items():
            if key in _ALLOWED_CLIENT_KWARGS:
                kwargs[key] = value
            else:
                log.warning("Ignoring unsupported key %r in connection extra `openai_client_kwargs`", key)

    if conn.password:
        kwargs["api_key"] = conn.password
    if conn.host:
        host = conn.host.strip()
        kwargs["base_url"] = host if "://" in host else f"https://{host}"
    for key in ("organization", "project", "azure_endpoint", "azure_deployment", "api_version"):
        if extra.get(key):
            kwargs[key] = extra[key]
    if extra.get("timeout") not in (None, ""):
        kwargs["timeout"] = extra["timeout"]
    if extra.get("max_retries") not in (None, ""):
        kwargs["max_retries"] = extra["max_retries"]
    if extra.get("default_headers"):
        kwargs["default_headers"] = _as_dict("default_headers", extra["default_headers"])

    # Connection forms hand back strings; the client wants numbers.
    try:
        if "timeout" in kwargs and kwargs["timeout"] is not None:
            kwargs["timeout"] = float(kwargs["timeout"])
        if "max_retries" in kwargs:
            kwargs["max_retries"] = int(kwargs["max_retries"])
    except (TypeError, ValueError):
        raise ValueError(
            "Expected connection extras `timeout` (seconds) and `max_retries` to be numbers but received "
            f"timeout={kwargs.get('timeout')!r}, max_retries={kwargs.get('max_retries')!r}"
        ) from None
    if "default_headers" in kwargs:
        kwargs["default_headers"] = {str(k): str(v) for k, v in kwargs["default_headers"].items()}

    is_azure = "azure_endpoint" in kwargs or str(extra.get("api_type", "")).lower() == "azure"
    if not is_azure:
        dropped = sorted(_AZURE_ONLY_KWARGS & kwargs.keys())
        if dropped:
            log.warning("Ignoring Azure-only settings %s on a non-Azure connection %r", dropped, conn.conn_id)
        return "openai", {k: v for k, v in kwargs.items() if k not in _AZURE_ONLY_KWARGS}

    # AzureOpenAI takes the resource URL as azure_endpoint; base_url and azure_endpoint are mutually exclusive.
    if "azure_endpoint" not in kwargs and "base_url" in kwargs:
        kwargs["azure_endpoint"] = kwargs.pop("base_url")
    kwargs.pop("base_url", None)
    if not kwargs.get("azure_endpoint"):
        raise ValueError(
            f"Connection {conn.conn_id!r} is an Azure OpenAI connection: expected extra `azure_endpoint` "
            "(or the host) to be set but received nothing"
        )
    if not kwargs.get("api_version"):
        raise ValueError(
            f"Connection {conn.conn_id!r} is an Azure OpenAI connection: expected extra `api_version` "
            "(for example '2024-10-21') but received nothing"
        )
    return "azure", kwargs


def _settings_key(kind: str, kwargs: dict[str, Any]) -> str:
    """Digest of the client settings: the cache key, without keeping the API key in a readable key."""
    blob = json.dumps([kind, kwargs], sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def _new_sync_http_client() -> httpx2.Client | None:
    """The sync client's HTTP client; ``None`` keeps openai's default (a seam for tests)."""
    return None


def _new_sync_client(kind: ClientKind, kwargs: dict[str, Any]) -> openai.OpenAI:
    cls = openai.AzureOpenAI if kind == "azure" else openai.OpenAI
    http_client = _new_sync_http_client()
    return cls(**kwargs, **({"http_client": http_client} if http_client is not None else {}))


def _new_async_http_client() -> httpx2.AsyncClient:
    """The shared async client's HTTP client (a seam for tests, which swap in an ``httpx2.MockTransport``)."""
    limits = httpx2.Limits(
        max_connections=ASYNC_MAX_CONNECTIONS, max_keepalive_connections=ASYNC_MAX_CONNECTIONS
    )
    return openai.DefaultAsyncHttpxClient(limits=limits)


def _new_async_client(kind: ClientKind, kwargs: dict[str, Any]) -> openai.AsyncOpenAI:
    cls = openai.AsyncAzureOpenAI if kind == "azure" else openai.AsyncOpenAI
    return cls(**kwargs, http_client=_new_async_http_client())


# One future per (event loop, settings digest): the first caller builds the client, concurrent callers await it.
_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Future[Any]]] = (
    weakref.WeakKeyDictionary()
)


def clear_async_client_cache() -> None:
    """Forget every shared async client (for tests and benchmarks; the clients are not closed)."""
    _async_clients.clear()


class _IncompleteDownload(Exception):
    pass


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
        return {
            "hidden_fields": ["schema", "port", "login"],
            "relabeling": {"host": "Base URL (optional)", "password": "API key"},
            "placeholders": {
                "host": "https://api.openai.com/v1",
                "password": "sk-...",
                "extra": json.dumps(
                    {
                        "organization": "org-... (optional)",
                        "project": "proj_... (optional)",
                        "timeout": 600,
                        "max_retries": 2,
                        "default_headers": {},
                        "azure_endpoint": "https://RESOURCE.openai.azure.com (Azure only)",
                        "api_version": "2024-10-21 (Azure only)",
                        "azure_deployment": "(Azure, optional)",
                    },
                    indent=2,
                ),
            },
        }

    # -- clients ---------------------------------------------------------------------------------------

    @cached_property
    def client(self) -> openai.OpenAI:
        """The synchronous client (``OpenAI`` or ``AzureOpenAI``), built once per hook."""
        conn = self.get_connection(self.openai_conn_id)
        kind, kwargs = client_kwargs_from_connection(conn)
        log.debug("Building %s client for connection %r", kind, self.openai_conn_id)
        return _new_sync_client(kind, kwargs)

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
        kind, kwargs = client_kwargs_from_connection(conn, await conn.aextra_dejson())
        key = _settings_key(kind, kwargs)
        loop = asyncio.get_running_loop()
        per_loop = _async_clients.setdefault(loop, {})
        future = per_loop.get(key)
        if future is None:
            future = loop.create_future()
            per_loop[key] = future
            try:
                # Building the client loads CA certificates from disk: keep that off the event loop.
                client = await asyncio.to_thread(_new_async_client, kind, kwargs)
            except BaseException as exc:
                per_loop.pop(key, None)
                # Waiters get an ordinary error, never a CancelledError that is not theirs.
                future.set_exception(
                    exc
                    if isinstance(exc, Exception)
                    else RuntimeError("building the async client was interrupted")
                )
                # Nobody else may be waiting; mark the exception retrieved so asyncio does not warn.
                future.exception()
                raise
            log.debug("Built shared async %s client for connection %r", kind, self.openai_conn_id)
            future.set_result(client)
        return await asyncio.shield(future)

    # -- sync verbs ------------------------------------------------------------------------------------

    def upload_file(self, fileobj: IO[bytes], filename: str, purpose: str = "batch") -> FileObject:
        """
        Upload a file, streaming it from ``fileobj`` (read in chunks by the HTTP client, never all at once).

        :param fileobj: a binary file object positioned anywhere (it is read from the start).
        :param filename: the name OpenAI records; batch input files must end with ``.jsonl``.
        :param purpose: the file's purpose, ``"batch"`` for batch input.
        """
        _non_empty("filename", filename)
        _non_empty("purpose", purpose)
        if fileobj is None or not hasattr(fileobj, "read"):
            raise ValueError(
                f"Expected a binary file object for `fileobj` but received {type(fileobj).__name__}"
            )
        return self.client.files.create(file=(filename, fileobj), purpose=purpose)  # type: ignore[arg-type]

    def create_batch(
        self,
        input_file_id: str,
        endpoint: str,
        completion_window: str = "24h",
        metadata: dict[str, str] | None = None,
        output_expires_after: dict[str, Any] | None = None,
        max_retries: int | None = None,
    ) -> Batch:
        """
        Create a batch from an uploaded input file.

        :param input_file_id: id of a file uploaded with purpose ``batch``.
        :param endpoint: the endpoint every request targets, e.g. ``/v1/chat/completions``.
        :param completion_window: only ``"24h"`` is accepted by the API.
        :param metadata: at most 16 string pairs (keys up to 64, values up to 512 characters).
        :param output_expires_after: e.g. ``{"anchor": "created_at", "seconds": 86400}``.
        :param max_retries: overrides the client's retries for this call; ``0`` lets the caller check whether
            a create whose answer was lost made the batch before trying again (the client would just repost).
        """
        _non_empty("input_file_id", input_file_id)
        _non_empty("endpoint", endpoint)
        _non_empty("completion_window", completion_window)
        extra: dict[str, Any] = {}
        if metadata is not None:
            _check_metadata(metadata)
            extra["metadata"] = metadata
        if output_expires_after is not None:
            extra["output_expires_after"] = output_expires_after
        client = self.client if max_retries is None else self.client.with_options(max_retries=max_retries)
        return client.batches.create(
            input_file_id=input_file_id,
            endpoint=endpoint,  # type: ignore[arg-type]
            completion_window=completion_window,  # type: ignore[arg-type]
            **extra,
        )

    def get_batch(self, batch_id: str) -> Batch:
        """Retrieve a batch."""
        _non_empty("batch_id", batch_id)
        return self.client.batches.retrieve(batch_id)

    def cancel_batch(self, batch_id: str) -> Batch:
        """Ask OpenAI to cancel a batch (it goes ``cancelling`` and then ``cancelled``)."""
        _non_empty("batch_id", batch_id)
        return self.client.batches.cancel(batch_id)

    def list_batches(self, after: str | None = None, limit: int = 100) -> SyncCursorPage[Batch]:
        """
        One page of batches, newest first.

        :param after: cursor: the id of the last batch of the previous page.
        :param limit: page size, 1 to 100.
        """
        if not 1 <= int(limit) <= 100:
            raise ValueError(f"Expected `limit` between 1 and 100 but received {limit!r}")
        if after is not None:
            _non_empty("after", after)
            return self.client.batches.list(after=after, limit=limit)
        return self.client.batches.list(limit=limit)

    def iter_batches(self, max_pages: int = 5, limit: int = 100) -> Iterator[Batch]:
        """
        Iterate over the most recent batches, newest first, fetching at most ``max_pages`` pages.

        The API has no server-side filter, so scans must be bounded.
        """
        if int(max_pages) < 1:
            raise ValueError(f"Expected `max_pages` to be at least 1 but received {max_pages!r}")
        after: str | None = None
        for _ in range(max_pages):
            page = self.list_batches(after=after, limit=limit)
            yield from page.data
            if not page.has_more or not page.data:
                return
            after = page.data[-1].id

    def delete_file(self, file_id: str) -> FileDeleted:
        """Delete a file."""
        _non_empty("file_id", file_id)
        return self.client.files.delete(file_id)

    def download_file(
        self, file_id: str, local_path: str, max_attempts: int = 3, chunk_size: int = 1024 * 1024
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
        _non_empty("local_path", str(local_path) if local_path else local_path)
        if int(max_attempts) < 1:
            raise ValueError(f"Expected `max_attempts` to be at least 1 but received {max_attempts!r}")
        last_error: BaseException | None = None
        for attempt in range(1, max_attempts + 1):
            try:
                return self._download_once(file_id, local_path, chunk_size)
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

    def _download_once(self, file_id: str, local_path: str, chunk_size: int) -> tuple[int, int]:
        nbytes = lines = 0
        last = b""
        with (
            self.client.files.with_streaming_response.content(file_id) as response,
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

    # -- async verbs -----------------------------------------------------------------------------------

    async def aget_batch(self, batch_id: str) -> Batch:
        """Retrieve a batch with the shared async client."""
        _non_empty("batch_id", batch_id)
        client = await self.get_async_client()
        return await client.batches.retrieve(batch_id)

    async def acancel_batch(self, batch_id: str) -> Batch:
        """Cancel a batch with the shared async client."""
        _non_empty("batch_id", batch_id)
        client = await self.get_async_client()
        return await client.batches.cancel(batch_id)

    async def alist_batches(self, after: str | None = None, limit: int = 100) -> AsyncCursorPage[Batch]:
        """One page of batches, newest first, with the shared async client."""
        if not 1 <= int(limit) <= 100:
            raise ValueError(f"Expected `limit` between 1 and 100 but received {limit!r}")
        client = await self.get_async_client()
        if after is not None:
            _non_empty("after", after)
            return await client.batches.list(after=after, limit=limit)
        return await client.batches.list(limit=limit)
