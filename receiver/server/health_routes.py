"""``/healthz`` (process up), ``/readyz`` (store writable, worker running), ``/metrics``."""

from __future__ import annotations

__all__ = ["READINESS", "Readiness", "add_health_routes"]

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from receiver.metrics import Metrics
from receiver.server.ingest_routes import METRICS
from receiver.server.responses import json_response


@dataclass(frozen=True, slots=True, kw_only=True)
class Readiness:
    """Named checks, each answering True when that part is ready."""

    checks: dict[str, Callable[[], Awaitable[bool]]]


READINESS = web.AppKey("readiness", Readiness)


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    results = {name: await check() for name, check in request.app[READINESS].checks.items()}
    is_ready = all(results.values())
    return json_response(
        {"status": "ready" if is_ready else "not_ready", "checks": results},
        status=200 if is_ready else 503,
        headers=None if is_ready else {"Retry-After": "5"},
    )


async def metrics(request: web.Request) -> web.Response:
    registry: Metrics = request.app[METRICS]
    return web.Response(body=registry.render(), headers={"Content-Type": registry.content_type})


def add_health_routes(app: web.Application, *, with_metrics: bool) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    if with_metrics:
        app.router.add_get("/metrics", metrics)
