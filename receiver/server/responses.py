"""The one table from exceptions to HTTP answers, and the JSON helpers both listeners use."""

from __future__ import annotations

__all__ = ["NOT_FOUND", "error_json", "error_middleware", "error_response", "json_response"]

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from receiver.errors import RequestRejected, Unavailable

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "too_many_requests",
}


def json_response(
    data: Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(data), status=status, content_type="application/json", headers=headers
    )


def error_json(
    status: int, code: str, detail: str, *, headers: dict[str, str] | None = None
) -> web.Response:
    return json_response({"error": code, "detail": detail}, status=status, headers=headers)


def error_response(exc: BaseException) -> web.Response:
    """Map a receiver exception or an aiohttp HTTP error to a JSON error answer."""
    if isinstance(exc, RequestRejected):
        return error_json(exc.status, exc.code, exc.detail)
    if isinstance(exc, Unavailable):
        return error_json(
            exc.status, exc.code, exc.detail, headers={"Retry-After": str(exc.retry_after_s)}
        )
    if isinstance(exc, web.HTTPException):
        code = _HTTP_CODES.get(exc.status, "http_error")
        headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        return error_json(exc.status, code, exc.reason, headers=headers or None)
    return error_json(500, "internal_error", "an unexpected error occurred; it has been logged")


# What answers a request no route matched at all (a target that is not a path: ``OPTIONS *``,
# ``CONNECT host:443``), where an app counts and logs its refusals; aiohttp's own 404 else.
Answer = Callable[[web.Request], Awaitable[web.StreamResponse]]
NOT_FOUND: web.AppKey[Answer] = web.AppKey("not_found")


@web.middleware
async def error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Routing errors (404, 405) and anything unexpected become JSON, never HTML or a trace."""
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if isinstance(exc, web.HTTPNotFound) and (not_found := request.app.get(NOT_FOUND)):
            return await not_found(request)
        return error_response(exc)
    except (RequestRejected, Unavailable) as exc:
        return error_response(exc)
    except Exception:
        import structlog

        structlog.get_logger("receiver.server").exception(
            "unhandled_error", path=request.path, method=request.method
        )
        return error_response(RuntimeError())
