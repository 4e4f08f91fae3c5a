"""From an Airflow connection to the openai client's class and arguments, and to the page that shows a batch:
pure, no network, no Airflow lookup.

Kept apart from the hook so the sync and async paths, the connection test and the extra link's URL all read a
connection the same way. The API key is copied into the arguments and nowhere else: no message here names it.
"""

from __future__ import annotations

import json
import logging
import urllib.parse
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from airflow.sdk import Connection

log = logging.getLogger(__name__)

ClientKind = Literal["openai", "azure"]

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
OPENAI_DASHBOARD_URL = "https://platform.openai.com/batches/{batch_id}"
#: The Azure AI Foundry (formerly Azure OpenAI Studio) batch jobs page. A page of one resource's batch needs
#: the resource's Azure id (subscription, resource group, account), which an API connection does not hold;
#: this page lists the batches of the resource picked there. A connection extra ``dashboard_url`` can give
#: the exact page instead.
AZURE_BATCH_JOBS_URL = "https://oai.azure.com/resource/batch"


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
        kwargs["base_url"] = conn.host.strip()
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
        if conn.host:
            kwargs["base_url"] = base_url_from_host(kwargs["base_url"])
        dropped = sorted(_AZURE_ONLY_KWARGS & kwargs.keys())
        if dropped:
            log.warning("Ignoring Azure-only settings %s on a non-Azure connection %r", dropped, conn.conn_id)
        return "openai", {k: v for k, v in kwargs.items() if k not in _AZURE_ONLY_KWARGS}

    # AzureOpenAI takes the resource URL as azure_endpoint; base_url and azure_endpoint are mutually exclusive.
    if "azure_endpoint" not in kwargs and "base_url" in kwargs:
        endpoint = kwargs.pop("base_url")
        kwargs["azure_endpoint"] = endpoint if "://" in endpoint else f"https://{endpoint}"
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


def base_url_from_host(host: str) -> str:
    """
    The client's ``base_url`` for a connection host: a scheme is added when missing (``https``), and a host
    without a path gets ``/v1``, the API's prefix (``http://127.0.0.1:8000`` becomes
    ``http://127.0.0.1:8000/v1``); a host with a path is kept as it is (proxies and gateways mount the API
    elsewhere).

    :param host: the connection's host field.
    """
    host = host.strip()
    url = host if "://" in host else f"https://{host}"
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            "Expected the connection host to be a URL such as https://api.openai.com/v1 or "
            f"http://127.0.0.1:8000/v1 but received {_without_userinfo(parts)!r}"
        )
    if parts.path in ("", "/"):
        return urllib.parse.urlunsplit((parts.scheme, parts.netloc, "/v1", parts.query, ""))
    return url


def _without_userinfo(parts: urllib.parse.SplitResult) -> str:
    netloc = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def safe_url(url: str) -> str:
    """A URL fit for a message: credentials embedded in it, a query and a fragment are left out."""
    return _without_userinfo(urllib.parse.urlsplit(url))


def batch_dashboard_url(conn: Connection, batch_id: str) -> str:
    """
    The page where a person can see batch ``batch_id``: the connection extra ``dashboard_url`` (a template with
    ``{batch_id}``) when set, else OpenAI's dashboard for api.openai.com (or no host), the Azure batch jobs page
    for Azure, and the base URL's scheme and host followed by ``/batches/{batch_id}`` for any other server.

    :param conn: the connection; the key is never read into the URL, nor credentials in its host.
    :param batch_id: the batch's id (quoted into the URL).
    """
    if not batch_id or not isinstance(batch_id, str):
        raise ValueError(f"Expected a non-empty value for `batch_id` but received {batch_id!r}")
    quoted = urllib.parse.quote(batch_id, safe="")
    template = conn.extra_dejson.get("dashboard_url")
    if template:
        try:
            return str(template).format(batch_id=quoted)
        except (KeyError, IndexError, ValueError):
            raise ValueError(
                f"Expected connection {conn.conn_id!r} extra `dashboard_url` to be a URL with `{{batch_id}}` "
                f"as its only placeholder but received {safe_url(str(template))!r}"
            ) from None
    kind, kwargs = client_kwargs_from_connection(conn)
    if kind == "azure":
        return AZURE_BATCH_JOBS_URL
    base_url = str(kwargs.get("base_url") or "https://api.openai.com/v1")
    parts = urllib.parse.urlsplit(base_url if "://" in base_url else f"https://{base_url}")
    host = (parts.hostname or "").lower()
    if host == "openai.com" or host.endswith(".openai.com"):
        return OPENAI_DASHBOARD_URL.format(batch_id=quoted)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}/batches/{quoted}"


def connection_form() -> dict[str, Any]:
    """The connection form (``get_ui_field_behaviour``): API key as password, optional base URL as host."""
    return {
        "hidden_fields": ["schema", "port", "login"],
        "relabeling": {"host": "Base URL (optional; a bare host gets /v1)", "password": "API key"},
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
                    "dashboard_url": "(optional) link template, e.g. https://gateway/batches/{batch_id}",
                },
                indent=2,
            ),
        },
    }
