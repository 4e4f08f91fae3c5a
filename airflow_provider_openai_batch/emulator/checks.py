"""Checks of request fields shared by the API and admin routes; each raises an OpenAI-shaped 400 naming the
field."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from .errors import APIError

ENDPOINTS = (
    "/v1/responses",
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/completions",
    "/v1/moderations",
    "/v1/images/generations",
    "/v1/images/edits",
    "/v1/videos",
)


def int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    """The integer query parameter ``name`` within ``low..high``, or ``default`` when absent.

    :param request: the request carrying the query string.
    :param name: the query parameter.
    :param default: the value when the parameter is absent.
    :param low: the smallest value accepted.
    :param high: the largest value accepted.
    """
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise APIError(400, f"Expected `{name}` between {low} and {high} but received {raw!r}.", param=name)
    return value


def check_endpoint(endpoint: Any) -> str:
    """``endpoint`` when it is one of the batch endpoints (400 otherwise)."""
    if not isinstance(endpoint, str) or endpoint not in ENDPOINTS:
        raise APIError(
            400, f"Expected `endpoint` in {list(ENDPOINTS)} but received {endpoint!r}.", param="endpoint"
        )
    return endpoint


def expires_seconds(value: Any, param: str) -> int:
    """The seconds of an ``expires_after`` object ``{"anchor": "created_at", "seconds": 3600..2592000}``.

    :param value: the object received.
    :param param: the field's name, for the error.
    """
    seconds = value.get("seconds") if isinstance(value, dict) else None
    if (
        not isinstance(value, dict)
        or value.get("anchor") != "created_at"
        or isinstance(seconds, bool)
        or not isinstance(seconds, int)
        or not 3600 <= seconds <= 2592000
    ):
        raise APIError(
            400,
            f'Expected `{param}` as {{"anchor": "created_at", "seconds": 3600..2592000}} but received {value!r}.',
            param=param,
        )
    return seconds


def check_metadata(metadata: Any) -> dict[str, str] | None:
    """``metadata`` when it is at most 16 pairs of keys <= 64 and string values <= 512 characters."""
    if metadata is None:
        return None
    if not isinstance(metadata, dict) or len(metadata) > 16:
        raise APIError(
            400,
            f"Expected `metadata` as an object of at most 16 pairs but received {metadata!r}.",
            param="metadata",
        )
    for key, value in metadata.items():
        if len(key) > 64 or not isinstance(value, str) or len(value) > 512:
            raise APIError(
                400,
                f"Invalid metadata pair {key!r}: keys are at most 64 characters, "
                "values strings of at most 512.",
                param=f"metadata.{key}",
            )
    return metadata
