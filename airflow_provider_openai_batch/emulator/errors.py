"""OpenAI-shaped API errors: ``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}
_CODES = {429: "rate_limit_exceeded", 500: "server_error", 502: "bad_gateway", 503: "service_unavailable"}


def error_body(
    status: int, message: str, *, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """The JSON body the service sends with an HTTP error of ``status``."""
    return {
        "error": {
            "message": message,
            "type": _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error"),
            "param": param,
            "code": code if code is not None else _CODES.get(status),
        }
    }


class APIError(Exception):
    """Raised by a route; rendered by the app as an OpenAI error response."""

    def __init__(
        self, status: int, message: str, *, param: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.message, param=self.param, code=self.code)


def not_found(kind: str, object_id: str, param: str) -> APIError:
    return APIError(404, f"No such {kind}: '{object_id}'", param=param, code=None)


async def json_object(request: Request) -> dict[str, Any]:
    """The request body, which must be a JSON object (400 otherwise)."""
    try:
        body = await request.json()
    except ValueError as exc:
        raise APIError(400, "Expected a JSON object body.") from exc
    if not isinstance(body, dict):
        raise APIError(400, "Expected a JSON object body.")
    return body
