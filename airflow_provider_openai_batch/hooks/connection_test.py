"""What the connection test asks the API, and how it reads the answers of a server or a gateway in front of one.

Three cheap reads, no batch created: list one batch (the key works and the base URL is right), list the next page
after it (the server honours the ``after=`` cursor the operator pages with to find what it already paid for), and
read a batch that does not exist (the server answers 404, not a plain 500). A gateway that fails the last two still
passes requests, but the provider cannot rely on it: each answer is named with what it means and what to change.
Messages are built from the status and the API's error message only; the hook scrubs them of the key.
"""

from __future__ import annotations

from typing import Any

import openai

#: A batch id no server holds: reading it must answer 404.
MISSING_BATCH_ID = "batch_airflow_connection_test_missing"
#: What LiteLLM without a database answers for a key it cannot look up.
_NO_DB = "no connected db"
_GATEWAY_HIDES_STATUS = (
    "A gateway that hides the server's status (LiteLLM without its `prisma` package answers 401, 404 and 409 as "
    "500) makes a wrong key look like an outage, which is retried instead of failing at once; check the gateway's "
    "log and install what it lacks."
)


def check(client: openai.OpenAI, url: str) -> tuple[bool, str]:
    """
    Run the three reads with ``client`` (no retries wanted) and say what they show.

    :param client: the hook's client, with retries off and a short timeout.
    :param url: the client's base URL as :func:`~.connection.safe_url` renders it.
    :return: ``(True, what works)`` or ``(False, the first thing that does not, and what to change)``.
    """
    try:
        page = client.batches.list(limit=1)
    except (openai.APIConnectionError, openai.APIStatusError) as err:
        return False, describe_failure(err, url)
    paged = ""
    if page.data:
        after = page.data[0].id
        try:
            client.batches.list(limit=1, after=after)
        except openai.APIStatusError as err:
            return False, (
                f"{url.rstrip('/')}/batches lists batches but answered HTTP {err.status_code} "
                f"({api_message(err)}) to the next page (`after={after}`). Expected a server that honours the "
                "`after=` cursor: the operator pages through batches to find the ones it already paid for. A "
                "gateway that re-encodes batch ids (LiteLLM's model-routed mode) breaks it; route the Batch "
                "API through the gateway's passthrough instead."
            )
        paged = ", pages with `after=`"
    try:
        client.batches.retrieve(MISSING_BATCH_ID)
    except openai.NotFoundError:
        pass
    except openai.APIStatusError as err:
        return False, (
            f"{url.rstrip('/')}/batches/{MISSING_BATCH_ID} answered HTTP {err.status_code} "
            f"({api_message(err)}) for a batch that does not exist; expected HTTP 404. "
            + (_GATEWAY_HIDES_STATUS if err.status_code >= 500 else "")
        ).rstrip()
    return True, f"Connected to {url}: the API key can list batches{paged} and a missing batch answers 404."


def describe_failure(err: openai.APIConnectionError | openai.APIStatusError, url: str) -> str:
    """
    Why listing batches at ``url`` failed, for a person fixing the connection: authentication (401 or 403), not
    found (404, most often a base URL without ``/v1``), unreachable (naming the host), a gateway that cannot check
    keys (400 ``No connected db.``) or hides the status (500), or the API's own answer.

    :param err: what the openai client raised.
    :param url: the client's base URL, as :func:`~.connection.safe_url` renders it.
    """
    if isinstance(err, openai.APIConnectionError):
        cause = err.__cause__ or err
        return (
            f"Cannot reach {url}: {type(cause).__name__}: {cause}. Expected the API at this host; check "
            "the connection's host, the network and any proxy."
        )
    answered = f"{url.rstrip('/')}/batches answered HTTP {err.status_code} ({api_message(err)})"
    if isinstance(err, (openai.AuthenticationError, openai.PermissionDeniedError)):
        return (
            f"Authentication failed: {url} answered HTTP {err.status_code} ({api_message(err)}). "
            "Expected a valid API key in the connection's password (and, if set, a matching "
            "organization and project)."
        )
    if isinstance(err, openai.NotFoundError):
        return (
            f"Not found: {url.rstrip('/')}/batches answered HTTP 404. The base URL probably lacks `/v1`: "
            "expected a host such as https://api.openai.com/v1 or http://127.0.0.1:8000/v1."
        )
    if err.status_code == 400 and _NO_DB in api_message(err).lower():
        return (
            f"{answered}: the gateway cannot check this key. LiteLLM without a database answers a key it does "
            "not know this way; expected the gateway's master key, or a gateway with its database."
        )
    if err.status_code >= 500:
        return f"{answered} to the cheapest authenticated call. {_GATEWAY_HIDES_STATUS}"
    return answered


def api_message(err: openai.APIStatusError) -> str:
    """The API's own error message (``error.message``), cut short."""
    body: Any = err.body if isinstance(err.body, dict) else {}
    inner = body.get("error", body)
    message = inner.get("message") if isinstance(inner, dict) else None
    return str(message or err.message)[:200]
