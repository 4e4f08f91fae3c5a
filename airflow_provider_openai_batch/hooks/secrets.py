"""A connection's secrets, and the clients that scrub them from every error built from a server's answer.

A server may echo what it was sent: a gateway's 401 can quote the whole API key. openai-python copies the
server's message into the exception, which then reaches the task log, the trigger's event, XCom and
``airflow connections test``. The clients built here (subclasses of openai's four client classes) scrub the
connection's secrets — the API key, and the values of headers and query parameters whose names say they hold
credentials — from the message and body of every ``APIStatusError`` they raise, so every caller gets a clean
error. :func:`scrub` is the one function that does it; the hook also registers the secrets with Airflow's masker.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import httpx2
import openai

#: Header and query parameter names holding a credential (``Authorization``, ``api-key``, ``X-Gateway-Token``).
_CREDENTIAL_NAME = re.compile(r"auth|key|token|secret|passw|cookie|signature|credential", re.IGNORECASE)
#: Shorter values are not treated as secrets (as Airflow's masker does): masking them would garble messages.
MIN_SECRET_CHARS = 5
#: A stretch this long of a longer secret is scrubbed too, so a key a server cut short or split still goes.
FRAGMENT_CHARS = 12
REDACTED = "***"


def secrets_of(
    api_key: Any = None, headers: Mapping[str, Any] | None = None, query: Mapping[str, Any] | None = None
) -> tuple[str, ...]:
    """The secrets among a client's settings: the API key, and credential-named header and query values.

    A header value such as ``Bearer sk-...`` counts whole and by its last word, the token itself.

    :param api_key: the client's ``api_key``.
    :param headers: ``default_headers``.
    :param query: ``default_query``.
    """
    found: list[str] = [str(api_key)] if api_key else []
    for values in (headers or {}, query or {}):
        for name, value in values.items():
            if value and _CREDENTIAL_NAME.search(str(name)):
                found.append(str(value))
                found.extend(str(value).split()[-1:])
    return tuple(dict.fromkeys(s for s in found if len(s) >= MIN_SECRET_CHARS))


def client_kwargs_secrets(kwargs: Mapping[str, Any]) -> tuple[str, ...]:
    """The secrets among client arguments, as :func:`~.connection.client_kwargs_from_connection` returns them."""
    return secrets_of(kwargs.get("api_key"), kwargs.get("default_headers"), kwargs.get("default_query"))


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret, and every :data:`FRAGMENT_CHARS`-long stretch of one, replaced by ``***``."""
    hidden = bytearray(len(text))
    for secret in secrets:
        size = min(len(secret), FRAGMENT_CHARS)
        pieces = {secret[i : i + size] for i in range(len(secret) - size + 1)}
        for i in range(len(text) - size + 1):
            if text[i : i + size] in pieces:
                hidden[i : i + size] = b"\1" * size
    if not any(hidden):
        return text
    out, i = [], 0
    while i < len(text):
        if hidden[i]:
            while i < len(text) and hidden[i]:
                i += 1
            out.append(REDACTED)
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def scrub_value(value: Any, secrets: tuple[str, ...]) -> Any:
    """A JSON value with :func:`scrub` applied to every string in it (keys included)."""
    if isinstance(value, str):
        return scrub(value, secrets)
    if isinstance(value, Mapping):
        return {scrub_value(k, secrets): scrub_value(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub_value(v, secrets) for v in value]
    return value


class _ScrubsErrors:
    """Mixin over an openai client: the errors it makes from a server's answer hold none of its secrets."""

    api_key: Any
    _custom_headers: Mapping[str, Any]
    _custom_query: Mapping[str, Any]

    def secrets(self) -> tuple[str, ...]:
        """This client's secrets (read from its settings, so a ``with_options`` copy has them too)."""
        return secrets_of(self.api_key, self._custom_headers, self._custom_query)

    def _make_status_error(self, err_msg: str, *, body: object, response: httpx2.Response) -> Any:
        secrets = self.secrets()
        return super()._make_status_error(  # type: ignore[misc]
            scrub(err_msg, secrets), body=scrub_value(body, secrets), response=response
        )


class OpenAI(_ScrubsErrors, openai.OpenAI):
    """``openai.OpenAI`` whose status errors are scrubbed of the connection's secrets."""


class AzureOpenAI(_ScrubsErrors, openai.AzureOpenAI):
    """``openai.AzureOpenAI`` whose status errors are scrubbed of the connection's secrets."""


class AsyncOpenAI(_ScrubsErrors, openai.AsyncOpenAI):
    """``openai.AsyncOpenAI`` whose status errors are scrubbed of the connection's secrets."""


class AsyncAzureOpenAI(_ScrubsErrors, openai.AsyncAzureOpenAI):
    """``openai.AsyncAzureOpenAI`` whose status errors are scrubbed of the connection's secrets."""


def client_secrets(client: Any) -> tuple[str, ...]:
    """The secrets of a client built here (none for another client)."""
    return client.secrets() if isinstance(client, _ScrubsErrors) else ()
