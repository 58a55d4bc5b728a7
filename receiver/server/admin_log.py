"""One line per ``/admin`` request: what was asked, with which access, and what it got.

``admin_request`` for what was served or refused as a bad request; ``admin_refused`` (at
``warning``, so it stays at ``logging.level: warning``) for a missing or wrong token (401) or a
forbidden write (403): a token being guessed shows. Probes and scrapes (``/healthz``,
``/readyz``, ``/metrics``) are not logged, they come every few seconds and carry no event data;
nor is the query string, whose search text may hold a customer's address.
"""

from __future__ import annotations

__all__ = ["admin_log_middleware"]

import asyncio
import time
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from receiver.server.admin_auth import ADMIN_ACCESS, is_admin_path

log = structlog.get_logger("receiver.admin")

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_REFUSED = frozenset({401, 403})


@web.middleware
async def admin_log_middleware(request: web.Request, handler: _Handler) -> web.StreamResponse:
    if not is_admin_path(request.path):
        return await handler(request)
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    except asyncio.CancelledError:
        status = 499  # the client went away first (nginx's word for it)
        raise
    finally:
        access = request.get(ADMIN_ACCESS)
        fields = {
            "method": request.method,
            "path": request.path[:200],
            "status": status,
            "access": str(access) if access is not None else "none",
            "remote": request.remote or "",
            "duration_ms": round((time.perf_counter() - started) * 1000, 2),
        }
        if status in _REFUSED:
            log.warning("admin_refused", **fields)
        else:
            log.info("admin_request", **fields)
