"""``POST /webhooks/{provider}``: read the body under a cap, hand it to ingest, answer."""

from __future__ import annotations

__all__ = [
    "INGEST",
    "INGEST_LIMITS",
    "METRICS",
    "REJECTIONS",
    "IngestLimits",
    "add_ingest_routes",
    "capture",
    "read_body",
    "unrouted",
]

import asyncio
import re
import time
from dataclasses import dataclass

import structlog
from aiohttp import HttpVersion11, web

from receiver.errors import (
    BodyTimeout,
    ClientDisconnected,
    ExpectationFailed,
    MalformedRequest,
    MethodNotAllowed,
    PayloadTooLarge,
    RequestRejected,
    ServerBusy,
    Unavailable,
    UnknownRoute,
)
from receiver.ingest import IngestResult, IngestService
from receiver.metrics import Metrics
from receiver.models import Accepted, Duplicate, HandshakeReply, InboundRequest, IngestOutcome
from receiver.server.body_budget import BodyBudget, Reservation
from receiver.server.responses import error_response, json_response
from receiver.store.rejections import RejectionJournal

# The request log, bound when the routes are added (after logging is configured): a bound
# logger skips the per-call configuration lookup of a module-level proxy, once per request.
REQUEST_LOG = web.AppKey("request_log", structlog.typing.FilteringBoundLogger)


@dataclass(frozen=True, slots=True, kw_only=True)
class IngestLimits:
    max_body_bytes: int
    read_timeout_s: float
    body_memory_bytes: int = 64 * 1024 * 1024  # all bodies held at once


INGEST = web.AppKey("ingest", IngestService)
INGEST_LIMITS = web.AppKey("ingest_limits", IngestLimits)
BODY_BUDGET = web.AppKey("body_budget", BodyBudget)
METRICS = web.AppKey("metrics", Metrics)
# The rejected-request journal (optional): record() only buffers, so it never slows an answer.
REJECTIONS = web.AppKey("rejections", RejectionJournal)


async def read_body(
    request: web.Request, limits: IngestLimits, reservation: Reservation | None = None
) -> bytes:
    """The raw body, refused before reading when declared too large, and while reading; with a
    ``reservation``, also when the bodies held at once would pass their budget. The budget
    counts bytes as they arrive, not as declared: a client that declares a megabyte and sends
    nothing holds nothing (64 such connections used to refuse every delivery)."""
    declared = request.content_length
    if declared is not None and declared > limits.max_body_bytes:
        raise PayloadTooLarge(f"the body is {declared} bytes; the limit is {limits.max_body_bytes}")
    if request.content.is_eof():  # the whole body already arrived with the headers
        body = request.content.read_nowait()
        if len(body) > limits.max_body_bytes:
            raise PayloadTooLarge(f"the body exceeds the limit of {limits.max_body_bytes} bytes")
        if reservation is not None:
            reservation.grow(len(body))
        return body
    buffer = bytearray()
    try:
        async with asyncio.timeout(limits.read_timeout_s):
            while chunk := await request.content.readany():
                if reservation is not None:
                    reservation.grow(len(chunk))
                buffer += chunk
                if len(buffer) > limits.max_body_bytes:
                    raise PayloadTooLarge(
                        f"the body exceeds the limit of {limits.max_body_bytes} bytes"
                    )
    except TimeoutError:
        raise BodyTimeout(f"the body did not arrive within {limits.read_timeout_s:g} s") from None
    except ConnectionError:  # aiohttp's "Connection lost" when the client closes mid-body
        raise ClientDisconnected(
            f"the client closed the connection after {len(buffer)} bytes of the body"
        ) from None
    return bytes(buffer)


def _headers(request: web.Request) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in request.headers.items():
        lowered = name.lower()
        headers[lowered] = f"{headers[lowered]}, {value}" if lowered in headers else value
    return headers


# What no host or port holds, and what would end the URL's authority part early: aiohttp passes
# a Host header on as sent, and "other.example/sms?x=" made the URL a URL-signing scheme checks
# (Twilio's, without public_url) another one's. Anything else (an IPv6 zone, an empty port,
# raw UTF-8) is left to the signature, as before.
_NOT_IN_HOST = re.compile(r"[/?#@\\\s\x00-\x1f\x7f]")


def _url(request: web.Request) -> str:
    """The URL as the provider called it: the path and query exactly as sent on the wire (what
    URL-signing schemes sign), not re-encoded by a URL parser."""
    host = request.host
    if _NOT_IN_HOST.search(host):
        raise MalformedRequest("the Host header is not a host name or address and a port")
    return f"{request.scheme}://{host}{request.raw_path}"


def _outcome_json(outcome: IngestOutcome) -> dict[str, str]:
    status = "accepted" if isinstance(outcome, Accepted) else "duplicate"
    return {"status": status, "id": str(outcome.id), "key": outcome.key}


async def capture(
    request: web.Request, limits: IngestLimits, reservation: Reservation | None = None
) -> InboundRequest:
    """The delivery as ingest sees it: the raw body (read under the caps) and the request line
    and headers, nothing parsed yet."""
    return InboundRequest(
        provider=request.match_info["provider"],
        method=request.method,
        url=_url(request),
        headers=_headers(request),
        body=await read_body(request, limits, reservation),
        remote=request.remote or "",
        query=dict(request.query) if request.query_string else {},
    )


def _result_response(
    result: IngestResult,
) -> tuple[web.Response, str, str | None, dict[str, object]]:
    """The answer, the log line's event name and key, and (a batch) what it held."""
    if not result.is_batch:
        outcome = result.outcomes[0]
        body = _outcome_json(outcome)
        # The request's one line says a redelivery carried another body (its warning, the
        # event_conflict line, names the key too).
        is_conflict = isinstance(outcome, Duplicate) and outcome.is_conflict
        extra: dict[str, object] = {"conflict": True} if is_conflict else {}
        return json_response(body), f"event_{body['status']}", body["key"], extra
    events = [_outcome_json(o) for o in result.outcomes]
    accepted = sum(e["status"] == "accepted" for e in events)
    status = "accepted" if accepted else "duplicate"
    # A batch's line says what it held: the log can be matched with the counters per event.
    held: dict[str, object] = {"accepted": accepted, "duplicate": len(events) - accepted}
    return json_response({"status": status, "events": events}), f"batch_{status}", None, held


def _refused(
    request: web.Request, exc: RequestRejected, *, provider: str, is_known: bool, body_bytes: int
) -> web.Response:
    """A refusal's answer, counted (a name not configured under ``provider=""``) and journaled."""
    response = error_response(exc)
    if isinstance(exc, PayloadTooLarge | BodyTimeout):
        response.force_close()
    elif isinstance(exc, MethodNotAllowed):
        response.headers["Allow"] = "POST"
    request.app[METRICS].rejections.labels(provider if is_known else "", exc.code).inc()
    journal = request.app.get(REJECTIONS)
    if journal is not None:
        journal.record(
            cause=exc.code,
            provider=provider,
            remote_addr=request.remote,
            body_bytes=body_bytes or request.content_length,
        )
    return response


async def unrouted(request: web.Request) -> web.StreamResponse:
    """Any other path on the ingest listener: answered 404 as before, now also counted,
    journaled and logged. A provider configured with a trailing slash, or ``/webhook/``,
    failed every delivery without a trace here."""
    exc = UnknownRoute("nothing is served here: deliveries go to /webhooks/{provider}")
    return _refused_unread(request, exc, provider="")


def _refused_unread(request: web.Request, exc: RequestRejected, *, provider: str) -> web.Response:
    """A refusal before any route reads the request (a path nothing serves, an expectation
    not understood): counted, journaled and logged like the ingest route's own."""
    is_known = bool(provider) and request.app[INGEST].has_provider(provider)
    response = _refused(request, exc, provider=provider, is_known=is_known, body_bytes=0)
    named = {"provider": provider[:64]} if provider else {}  # the caller's text: cut short
    request.app[REQUEST_LOG].info(
        "request_rejected",
        cause=exc.code,
        status=exc.status,
        method=request.method[:16],
        path=request.path[:100],  # the caller's text: cut short, never a label
        remote=request.remote,
        **named,
    )
    return response


async def receive(request: web.Request) -> web.StreamResponse:
    started = time.perf_counter()
    name = request.match_info["provider"]
    service = request.app[INGEST]
    metrics = request.app[METRICS]
    log = request.app[REQUEST_LOG]
    body_bytes = 0
    key: str | None = None
    # A name not configured is the caller's: never a metric label (each one would be kept).
    is_known = service.has_provider(name)
    reservation = request.app[BODY_BUDGET].reservation()
    try:
        if request.method != "POST":
            raise MethodNotAllowed("a webhook is delivered with POST")
        service.provider(name)  # 404 before reading anything
        inbound = await capture(request, request.app[INGEST_LIMITS], reservation)
        body_bytes = len(inbound.body)
        prepared = service.prepare(inbound)
        if isinstance(prepared, HandshakeReply):
            result: IngestResult | HandshakeReply = prepared
        else:
            if len(prepared.events) == 1:  # known before storing: a 503's log line names it
                key = prepared.events[0].key
            result = await service.record(prepared)
    except RequestRejected as exc:
        response = _refused(request, exc, provider=name, is_known=is_known, body_bytes=body_bytes)
        event = "signature_rejected" if exc.status == 401 else "request_rejected"
        outcome, status = event, exc.status
        log_extra: dict[str, object] = {"cause": exc.code}
    except Unavailable as exc:
        response = error_response(exc)
        if isinstance(exc, ServerBusy):
            response.force_close()  # do not read the body it was refused for
        metrics.received.labels(name, exc.code).inc()  # a configured provider: found above
        outcome, status = exc.code, exc.status
        log_extra = {"cause": exc.detail}
    else:
        log_extra = {}
        if isinstance(result, HandshakeReply):
            response = web.Response(
                status=result.status, body=result.body, content_type=result.content_type
            )
            outcome, status = "handshake_answered", result.status
            metrics.received.labels(name, outcome).inc()
        else:
            response, outcome, key, log_extra = _result_response(result)
            status = 200
            series = metrics.ingest_for(name)  # a configured provider: ingest found it
            for o in result.outcomes:
                if isinstance(o, Accepted):
                    series.accepted.inc()
                    continue
                series.duplicate.inc()
                series.duplicates.inc()
                if o.is_conflict:
                    series.conflicts.inc()
    finally:
        reservation.release()  # the body is no longer held once ingest has answered
    elapsed = time.perf_counter() - started
    if is_known:
        metrics.ingest_for(name).latency.observe(elapsed)
    # A delivery refused for the receiver's own trouble (storage, memory) is a warning: it
    # must stay in the log when ``logging.level: warning`` hides the per-request lines.
    emit = log.warning if status >= 500 else log.info
    emit(
        outcome,
        provider=name[:64],  # an unknown name is whatever the caller sent: never log it whole
        status=status,
        key=key,
        duration_ms=round(elapsed * 1000, 2),
        body_bytes=body_bytes or request.content_length or 0,
        remote=request.remote,
        **log_extra,
    )
    return response


async def expect_continue(request: web.Request) -> web.StreamResponse | None:
    """``Expect: 100-continue``: invite the body only when the route will read it. A request
    the route refuses before reading (an unknown provider, a declared size over the cap) gets
    that answer at once instead of a ``100`` that asks for a body nobody will take."""
    if request.version != HttpVersion11:
        return None  # HTTP/1.0 has no 100 Continue: the body comes anyway
    expect = request.headers.get("Expect", "")
    if expect.lower() != "100-continue":
        exc = ExpectationFailed("only Expect: 100-continue is understood")
        return _refused_unread(request, exc, provider=request.match_info["provider"])
    declared = request.content_length
    is_refused = not request.app[INGEST].has_provider(request.match_info["provider"]) or (
        declared is not None and declared > request.app[INGEST_LIMITS].max_body_bytes
    )
    if not is_refused:
        try:
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        except ConnectionError:
            return None  # gone already: the route finds no body and says client_disconnected
        request.writer.output_size = 0  # the answer itself has not started
    return None  # the route answers (and logs and counts) as for any request


def add_ingest_routes(app: web.Application) -> None:
    app[REQUEST_LOG] = structlog.get_logger("receiver.ingest").bind()
    app[BODY_BUDGET] = BodyBudget(app[INGEST_LIMITS].body_memory_bytes)
    # Every method: one that is not POST is answered 405 by ``receive``, logged and counted
    # like any other refusal (the router's own 405 was neither).
    app.router.add_route("*", "/webhooks/{provider}", receive, expect_handler=expect_continue)
