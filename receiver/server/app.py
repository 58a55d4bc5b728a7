"""App factories for the two listeners. The only place that assembles aiohttp applications."""

from __future__ import annotations

__all__ = ["build_admin_app", "build_ingest_app"]

from aiohttp import web

from receiver.ingest import IngestService
from receiver.metrics import Metrics
from receiver.server.health_routes import READINESS, Readiness, add_health_routes
from receiver.server.ingest_routes import (
    INGEST,
    INGEST_LIMITS,
    METRICS,
    IngestLimits,
    add_ingest_routes,
)
from receiver.server.responses import error_middleware


def build_ingest_app(
    service: IngestService, *, limits: IngestLimits, metrics: Metrics, readiness: Readiness
) -> web.Application:
    # client_max_size guards any other reader; the webhook route reads with its own cap.
    app = web.Application(middlewares=[error_middleware], client_max_size=limits.max_body_bytes + 1)
    app[INGEST] = service
    app[INGEST_LIMITS] = limits
    app[METRICS] = metrics
    app[READINESS] = readiness
    add_ingest_routes(app)
    add_health_routes(app, with_metrics=False)
    return app


def build_admin_app(*, metrics: Metrics, readiness: Readiness) -> web.Application:
    app = web.Application(middlewares=[error_middleware])
    app[METRICS] = metrics
    app[READINESS] = readiness
    add_health_routes(app, with_metrics=True)
    return app
