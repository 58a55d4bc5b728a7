"""App factories for the two listeners. The only place that assembles aiohttp applications."""

from __future__ import annotations

__all__ = ["build_admin_app", "build_ingest_app"]

from aiohttp import web

from receiver.ingest import IngestService
from receiver.metrics import Metrics
from receiver.server.admin_auth import ADMIN_TOKENS, AdminTokens, admin_auth_middleware
from receiver.server.admin_log import admin_log_middleware
from receiver.server.admin_routes import ADMIN, AdminServices, add_admin_routes, parameter_errors
from receiver.server.health_routes import READINESS, Readiness, add_health_routes
from receiver.server.ingest_routes import (
    INGEST,
    INGEST_LIMITS,
    METRICS,
    REJECTIONS,
    IngestLimits,
    add_ingest_routes,
    unrouted,
)
from receiver.server.responses import NOT_FOUND, error_middleware
from receiver.store.rejections import RejectionJournal


def build_ingest_app(
    service: IngestService,
    *,
    limits: IngestLimits,
    metrics: Metrics,
    readiness: Readiness,
    rejections: RejectionJournal | None = None,
) -> web.Application:
    # client_max_size guards any other reader; the webhook route reads with its own cap.
    app = web.Application(middlewares=[error_middleware], client_max_size=limits.max_body_bytes + 1)
    app[INGEST] = service
    app[INGEST_LIMITS] = limits
    app[METRICS] = metrics
    app[READINESS] = readiness
    if rejections is not None:
        app[REJECTIONS] = rejections
    add_ingest_routes(app)
    # Open to whoever can reach ingest: readiness a second old at most, not a write per probe.
    add_health_routes(app, with_metrics=False, ready_max_age_s=1.0)
    app.router.add_route("*", "/{path:.*}", unrouted)  # last: only what nothing else took
    app[NOT_FOUND] = unrouted  # and what no path can match (OPTIONS *, CONNECT host:443)
    return app


def build_admin_app(
    *,
    metrics: Metrics,
    readiness: Readiness,
    admin: AdminServices | None = None,
    tokens: AdminTokens | None = None,
) -> web.Application:
    """Health and metrics always; the ``/admin`` API when ``admin`` is given.

    ``tokens`` guard ``/admin`` (none configured: open, for a loopback-only listener).
    """
    # Outermost first: the log line sees the answer the error table made of any failure.
    middlewares = [admin_log_middleware, error_middleware, admin_auth_middleware, parameter_errors]
    app = web.Application(middlewares=middlewares)
    app[METRICS] = metrics
    app[READINESS] = readiness
    app[ADMIN_TOKENS] = tokens or AdminTokens()
    add_health_routes(app, with_metrics=True)
    if admin is not None:
        app[ADMIN] = admin
        add_admin_routes(app)
    return app
