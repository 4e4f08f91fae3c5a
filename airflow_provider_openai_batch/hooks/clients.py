"""The openai clients a hook hands out, built from a connection's client arguments.

The sync client is built once per hook. The async client is shared per process, event loop and connection
settings, so thousands of triggers polling in one triggerer use one client and one connection pool; a connection
whose settings change gets a new client. Both are the secret-scrubbing subclasses of :mod:`.secrets`, and the
secrets are registered with Airflow's masker once per client, not per poll. The ``_new_*_http_client`` functions
are the seams tests swap a transport in through.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import weakref
from typing import TYPE_CHECKING, Any

import httpx2
import openai

from airflow_provider_openai_batch.hooks import secrets
from airflow_provider_openai_batch.hooks.connection import ClientKind
from airflow_provider_openai_batch.version_compat import amask_secret

if TYPE_CHECKING:
    from airflow.sdk import Connection

log = logging.getLogger(__name__)

#: Pool size of the shared async client. Polls are short GETs: 1,000 triggers polling every minute need about
#: 5 connections at 300 ms latency; 50 absorbs the burst after a triggerer restart, and a request waiting for a
#: free connection is bounded by the client's pool timeout. (httpcore scans the whole pool on every request,
#: so a much larger pool costs CPU per poll without adding throughput.)
ASYNC_MAX_CONNECTIONS = 50


def _settings_key(kind: str, kwargs: dict[str, Any]) -> str:
    """Digest of the client settings: the cache key, without keeping the API key in a readable key."""
    blob = json.dumps([kind, kwargs], sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def _new_sync_http_client() -> httpx2.Client | None:
    """The sync client's HTTP client; ``None`` keeps openai's default (a seam for tests)."""
    return None


def new_sync_client(kind: ClientKind, kwargs: dict[str, Any]) -> openai.OpenAI:
    """A sync ``OpenAI`` (or ``AzureOpenAI``) client that scrubs the connection's secrets from its errors."""
    cls = secrets.AzureOpenAI if kind == "azure" else secrets.OpenAI
    http_client = _new_sync_http_client()
    if http_client is None:
        return cls(**kwargs)
    return cls(**kwargs, http_client=http_client)


def _new_async_http_client() -> httpx2.AsyncClient:
    """The shared async client's HTTP client (a seam for tests, which swap in an ``httpx2.MockTransport``)."""
    limits = httpx2.Limits(
        max_connections=ASYNC_MAX_CONNECTIONS, max_keepalive_connections=ASYNC_MAX_CONNECTIONS
    )
    return openai.DefaultAsyncHttpxClient(limits=limits)


def _new_async_client(kind: ClientKind, kwargs: dict[str, Any]) -> openai.AsyncOpenAI:
    cls = secrets.AsyncAzureOpenAI if kind == "azure" else secrets.AsyncOpenAI
    return cls(**kwargs, http_client=_new_async_http_client())


# One future per (event loop, settings digest): the first caller builds the client, concurrent callers await it.
_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Future[Any]]] = (
    weakref.WeakKeyDictionary()
)


def clear_async_client_cache() -> None:
    """Forget every shared async client (for tests and benchmarks; the clients are not closed)."""
    _async_clients.clear()


async def aextra_dejson(conn: Connection) -> dict[str, Any]:
    """
    The connection's extras, decoded and registered with the secrets masker, from inside an event loop.

    Airflow 3.3 has ``Connection.aextra_dejson``, whose masking does not block the loop. Before 3.3 there is
    only ``extra_dejson``; there its masking is built to run inside a loop (it does not raise, and tells the
    supervisor only where that is safe), so it is the way the older triggerers expect.
    """
    aextra = getattr(conn, "aextra_dejson", None)
    if aextra is not None:
        return dict(await aextra())
    return dict(conn.extra_dejson)


async def shared_async_client(kind: ClientKind, kwargs: dict[str, Any], conn_id: str) -> openai.AsyncOpenAI:
    """The async client for these settings on the running event loop, built by the first caller only."""
    key = _settings_key(kind, kwargs)
    loop = asyncio.get_running_loop()
    per_loop = _async_clients.setdefault(loop, {})
    future = per_loop.get(key)
    if future is None:
        future = loop.create_future()
        per_loop[key] = future
        try:
            for secret in secrets.client_kwargs_secrets(kwargs):  # once per client, not per poll
                await amask_secret(secret)
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
        log.debug("Built shared async %s client for connection %r", kind, conn_id)
        future.set_result(client)
    result: openai.AsyncOpenAI = await asyncio.shield(future)
    return result
