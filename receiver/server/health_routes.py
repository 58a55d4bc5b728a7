"""``/healthz`` (process up), ``/readyz`` (store writable, worker running), ``/metrics``."""

from __future__ import annotations

__all__ = ["READINESS", "Readiness", "add_health_routes"]

import asyncio
import time
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from receiver.metrics import Metrics
from receiver.server.ingest_routes import METRICS
from receiver.server.responses import json_response

log = structlog.get_logger("receiver.http")


# A check answers None when its part is ready, else why not, in plain words (no path, no secret).
Check = Callable[[], Awaitable[str | None]]


class Readiness:
    """Named checks. The store's check is a real write on the single writer, so probes at once
    share one run, and a listener open to the world (ingest) takes an answer up to
    ``max_age_s`` old: a probe flood costs about one write a second there, not one per
    request."""

    def __init__(
        self, *, checks: dict[str, Check], needs_restart: Callable[[], bool] = lambda: False
    ) -> None:
        self.checks = checks
        # True once only a restart can help (the database file was deleted or replaced): then
        # ``/healthz`` fails too, so a supervisor's liveness probe restarts the process.
        self.needs_restart = needs_restart
        self._lock = asyncio.Lock()
        self._last: dict[str, str | None] = {}
        self._last_at = float("-inf")

    async def results(self, *, max_age_s: float = 0.0) -> dict[str, str | None]:
        """Each check's answer: None when ready, else the reason."""
        asked_at = time.monotonic()
        async with self._lock:  # a run that started after this probe arrived answers it too
            if self._last_at >= asked_at - max_age_s:
                return self._last
            started = time.monotonic()
            results = {name: await check() for name, check in self.checks.items()}
            if results != self._last:
                _log_change(self._last, results)
            self._last, self._last_at = results, started
            return results


def _log_change(before: dict[str, str | None], now: dict[str, str | None]) -> None:
    """A change of readiness (or of why not) is a log line: a probe's 503 alone left no trace
    (and the store check's own failure is not logged where it happens)."""
    reasons = _reasons(now)
    if reasons:
        log.warning("readiness_changed", is_ready=False, failing=sorted(reasons), reasons=reasons)
    elif before:  # not the first answer: it was not ready before
        log.info("readiness_changed", is_ready=True)


def _reasons(results: dict[str, str | None]) -> dict[str, str]:
    return {name: reason for name, reason in sorted(results.items()) if reason is not None}


READINESS = web.AppKey("readiness", Readiness)
READY_MAX_AGE_S = web.AppKey("ready_max_age_s", float)
READY_WITH_REASONS = web.AppKey("ready_with_reasons", bool)


async def healthz(request: web.Request) -> web.Response:
    if request.app[READINESS].needs_restart():
        return json_response({"status": "restart_needed"}, status=503)
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    results = await request.app[READINESS].results(max_age_s=request.app[READY_MAX_AGE_S])
    with_reasons = request.app[READY_WITH_REASONS]
    reasons = _reasons(results)
    is_ready = not reasons
    answer: dict[str, object] = {
        "status": "ready" if is_ready else "not_ready",
        "checks": {name: reason is None for name, reason in results.items()},
    }
    if reasons and with_reasons:
        answer["reasons"] = reasons
    return json_response(
        answer,
        status=200 if is_ready else 503,
        headers=None if is_ready else {"Retry-After": "5"},
    )


async def metrics(request: web.Request) -> web.Response:
    registry: Metrics = request.app[METRICS]
    return web.Response(body=registry.render(), headers={"Content-Type": registry.content_type})


def add_health_routes(
    app: web.Application, *, with_metrics: bool, ready_max_age_s: float = 0.0
) -> None:
    """The admin listener (``with_metrics``) also says why it is not ready; the ingest
    listener, open to anyone who can reach it, only what."""
    app[READY_MAX_AGE_S] = ready_max_age_s
    app[READY_WITH_REASONS] = with_metrics
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    if with_metrics:
        app.router.add_get("/metrics", metrics)
