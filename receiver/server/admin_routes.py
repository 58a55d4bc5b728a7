"""``/admin``: search and inspect events, replay them, list rejections, stats, the OpenAPI file.

Handlers parse and validate, call one store component, and shape the answer; a bad parameter
raises :class:`~receiver.store.queries.InvalidParameter`, which :func:`parameter_errors` turns
into ``400 {"error": "invalid_parameter", "detail", "parameter"}``. Write routes take a JSON
object body; unknown fields are refused there, so a misspelt filter cannot widen a bulk replay.
"""

from __future__ import annotations

__all__ = ["ADMIN", "AdminServices", "add_admin_routes", "parameter_errors"]

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from aiohttp import web

from receiver.keys import reject_constant
from receiver.server.openapi import openapi_document
from receiver.server.responses import error_json, json_response
from receiver.store.database import Database
from receiver.store.filters import (
    InvalidParameter,
    decode_cursor,
    parse_event_filter,
    parse_limit,
    parse_text,
    parse_time,
)
from receiver.store.queries import EventQueries
from receiver.store.rejections import list_rejections
from receiver.store.replay import REPLAY_DEFAULT, REPLAY_MAX, Replayer, ReplayOutcome
from receiver.store.retention import RetentionPolicy

HTTP_ACTOR = "admin"
_PAGE_DEFAULT, _PAGE_MAX = 50, 500
_FILTER_FIELDS = frozenset({"provider", "status", "type", "key", "since", "until", "q"})
_BULK_FIELDS = _FILTER_FIELDS | {"reason", "dry_run", "limit", "cursor"}
_ONE_FIELDS = frozenset({"reason", "dry_run"})
_PAGE_FIELDS = frozenset({"limit", "cursor"})
_NO_QUERY: frozenset[str] = frozenset()  # a write route's parameters are in its body
_EVENT_QUERY = _FILTER_FIELDS | _PAGE_FIELDS
_REJECTION_QUERY = frozenset({"cause", "provider", "since", "until"}) | _PAGE_FIELDS


@dataclass(frozen=True, slots=True, kw_only=True)
class AdminServices:
    """What the admin routes use: the store's operator components and the effective policy."""

    db: Database
    queries: EventQueries
    replayer: Replayer
    policies: Mapping[str, RetentionPolicy]
    clock: Callable[[], float]


ADMIN = web.AppKey("admin", AdminServices)

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def parameter_errors(request: web.Request, handler: _Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except InvalidParameter as exc:
        return json_response(
            {"error": exc.code, "detail": exc.detail, "parameter": exc.parameter}, status=400
        )


def _event_id(request: web.Request) -> int | None:
    raw = request.match_info["id"]
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        return None
    return int(raw)


def _not_found(raw: str) -> web.Response:
    return error_json(404, "not_found", f"no event with id {raw[:40]!r}")


def _once_each(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """An object whose members are named once: ``{"dry_run": true, "dry_run": false}`` is a
    mistake to refuse, not one to settle by taking the last."""
    data: dict[str, object] = {}
    for name, value in pairs:
        if name in data:
            raise InvalidParameter(name[:64], "is given twice")
        data[name] = value
    return data


async def _json_object(request: web.Request, allowed: frozenset[str]) -> dict[str, object]:
    raw = await request.read()
    if not raw.strip():
        data: object = {}
    else:
        try:  # a UTF-8 byte-order mark, as some Windows clients send, is allowed
            text = raw.decode("utf-8-sig")
            data = json.loads(text, object_pairs_hook=_once_each, parse_constant=reject_constant)
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise InvalidParameter("body", "is not valid JSON") from None
    if not isinstance(data, dict):
        raise InvalidParameter("body", "must be a JSON object")
    for name in data:
        if name not in allowed:
            raise InvalidParameter(str(name)[:64], "is not a field of this request")
    return data


def _query(request: web.Request, allowed: frozenset[str]) -> Mapping[str, str]:
    """The query string's parameters, each named once and known: a misspelt filter
    (``provder=stripe``) listed every event, and of ``since=2h&since=1h`` one was dropped."""
    query = request.query
    for name in query:
        if name not in allowed:
            raise InvalidParameter(name[:64], "is not a parameter of this request")
        if len(query.getall(name)) > 1:
            raise InvalidParameter(name[:64], "is given twice")
    return query


def _reason(data: Mapping[str, object]) -> str | None:
    """The operator's reason for the audit trail: optional, but never blank when given."""
    reason = data.get("reason")
    if reason is None:
        return None
    text = parse_text("reason", reason.strip() if isinstance(reason, str) else reason)
    if text is None:
        raise InvalidParameter("reason", "is empty: leave it out, or say why you replay")
    return text


def _dry_run(data: Mapping[str, object]) -> bool:
    value = data.get("dry_run", False)
    if not isinstance(value, bool):
        raise InvalidParameter("dry_run", "must be true or false")
    return value


async def list_events(request: web.Request) -> web.Response:
    admin = request.app[ADMIN]
    query = _query(request, _EVENT_QUERY)
    cursor = decode_cursor("e", query.get("cursor"))
    now = cursor.clock(admin.clock)
    page = await admin.queries.list_events(
        parse_event_filter(query, now_s=now),
        before_id=cursor.before_id,
        limit=parse_limit(query.get("limit"), default=_PAGE_DEFAULT, maximum=_PAGE_MAX),
        now_s=now,
    )
    return json_response(
        {"events": [e.as_json() for e in page.items], "next_cursor": page.next_cursor}
    )


async def get_event(request: web.Request) -> web.Response:
    _query(request, _NO_QUERY)
    event_id = _event_id(request)
    detail = None if event_id is None else await request.app[ADMIN].queries.get_detail(event_id)
    if detail is None:
        return _not_found(request.match_info["id"])
    return json_response(detail.as_json())


async def replay_event(request: web.Request) -> web.Response:
    _query(request, _NO_QUERY)  # ?dry_run=true, ignored, replayed for real
    event_id = _event_id(request)
    data = await _json_object(request, _ONE_FIELDS)
    reason, dry_run = _reason(data), _dry_run(data)
    if event_id is None:
        return _not_found(request.match_info["id"])
    outcome = await request.app[ADMIN].replayer.replay_one(
        event_id, actor=HTTP_ACTOR, reason=reason, dry_run=dry_run
    )
    if outcome is ReplayOutcome.NOT_FOUND:
        return _not_found(request.match_info["id"])
    if outcome is ReplayOutcome.PAYLOAD_PURGED:
        return error_json(
            409,
            "payload_purged",
            f"event {event_id} has no payload any more (retention purged it): nothing to replay",
        )
    if outcome is ReplayOutcome.NO_HANDLER:
        return error_json(
            409,
            "no_handler",
            f"event {event_id}'s provider has no handler configured: a replay would run nothing",
        )
    if outcome is ReplayOutcome.RUNNING:
        return error_json(
            409,
            "event_running",
            f"a worker is running event {event_id} now; replay it after this attempt ends",
        )
    status = "would_replay" if dry_run else "replayed"
    return json_response({"id": str(event_id), "status": status, "dry_run": dry_run})


async def replay_matching(request: web.Request) -> web.Response:
    _query(request, _NO_QUERY)
    admin = request.app[ADMIN]
    data = await _json_object(request, _BULK_FIELDS)
    reason, dry_run = _reason(data), _dry_run(data)
    cursor = decode_cursor("e", data.get("cursor"))
    now = cursor.clock(admin.clock)
    flt = parse_event_filter(data, now_s=now)
    if flt.is_empty:
        raise InvalidParameter(
            "filter", "name at least one of provider, status, type, key, since, until, q"
        )
    limit = parse_limit(data.get("limit"), default=REPLAY_DEFAULT, maximum=REPLAY_MAX)
    report = await admin.replayer.replay_matching(
        flt,
        actor=HTTP_ACTOR,
        reason=reason,
        dry_run=dry_run,
        limit=limit,
        before_id=cursor.before_id,
        now_s=now,
    )
    return json_response(report.as_json())


async def rejections(request: web.Request) -> web.Response:
    admin = request.app[ADMIN]
    query = _query(request, _REJECTION_QUERY)
    cursor = decode_cursor("r", query.get("cursor"))
    now = cursor.clock(admin.clock)
    since = parse_time("since", query.get("since"), now_s=now)
    until = parse_time("until", query.get("until"), now_s=now)
    if since is not None and until is not None and until < since:
        raise InvalidParameter("until", "is earlier than since")
    page = await list_rejections(
        admin.db,
        cause=parse_text("cause", query.get("cause")),
        provider=parse_text("provider", query.get("provider")),
        since_s=since,
        until_s=until,
        before_id=cursor.before_id,
        limit=parse_limit(query.get("limit"), default=_PAGE_DEFAULT, maximum=_PAGE_MAX),
        now_s=now,
    )
    return json_response(
        {"rejections": [r.as_json() for r in page.items], "next_cursor": page.next_cursor}
    )


async def stats(request: web.Request) -> web.Response:
    _query(request, _NO_QUERY)
    admin = request.app[ADMIN]
    summary = await admin.queries.stats()
    summary["retention"] = {
        name: policy.as_json() for name, policy in sorted(admin.policies.items())
    }
    return json_response(summary)


async def openapi(request: web.Request) -> web.Response:
    _query(request, _NO_QUERY)
    return json_response(openapi_document())


def add_admin_routes(app: web.Application) -> None:
    app.router.add_get("/admin/events", list_events)
    app.router.add_get("/admin/events/{id}", get_event)
    app.router.add_post("/admin/events/{id}/replay", replay_event)
    app.router.add_post("/admin/replay", replay_matching)
    app.router.add_get("/admin/rejections", rejections)
    app.router.add_get("/admin/stats", stats)
    app.router.add_get("/admin/openapi.json", openapi)
