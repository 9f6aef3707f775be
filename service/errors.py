"""Every error leaves the service as JSON: `{"error": {"type": ..., "message": ...}}`.

Handlers raise `ApiError`; Starlette's own HTTP errors (404, 405) and anything unexpected
are converted by the handlers registered in `EXCEPTION_HANDLERS`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

log = logging.getLogger("service.errors")

_TYPES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    500: "internal_error",
    503: "unavailable",
}


class ApiError(Exception):
    """An error with its HTTP status, a stable machine-readable type and a human message."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type or _TYPES.get(status, "error")
        self.message = message
        self.headers = dict(headers or {})


def error_body(type: str, message: str) -> bytes:
    """The one shape of every error this API sends."""
    return json.dumps({"error": {"type": type, "message": message}}, ensure_ascii=False).encode()


def error_response(
    status: int, type: str, message: str, headers: Mapping[str, str] | None = None
) -> Response:
    body = error_body(type, message)
    return Response(body, status, headers=headers, media_type="application/json")


async def api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.type, exc.message, exc.headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    if status == 404:
        message = f"no route {request.url.path}"
    elif status == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    return error_response(status, _TYPES.get(status, "error"), message, exc.headers)


async def unexpected(request: Request, exc: Exception) -> Response:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal_error", "internal error (logged on the server)")


EXCEPTION_HANDLERS = {ApiError: api_error, HTTPException: _http_error, Exception: unexpected}
