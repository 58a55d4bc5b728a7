"""Operator reads: keyset pages, one event in detail, and the stats summary.

Everything here runs on the reader connection, so an admin query never waits for a commit
and never holds the writer. Filters are parsed by :mod:`receiver.store.filters`. SQL is built
from constant fragments; values are always bound.
"""

from __future__ import annotations

__all__ = [
    "EVENT_WITH_PAYLOAD",
    "EventDetail",
    "EventQueries",
    "EventSummary",
    "Page",
    "event_where",
    "redact_headers",
    "row_to_event",
]

import base64
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import aiosqlite

from receiver.credentials import is_credential_header
from receiver.store import search_index
from receiver.store.base import StoredEvent
from receiver.store.database import Database
from receiver.store.filters import EventFilter, encode_cursor, iso_time

T = TypeVar("T")

REDACTED = "[redacted]"
_TIMELINE_MAX = 200


def _fts_query(text: str) -> str | None:
    """Every whitespace-separated term as a quoted FTS5 phrase (so no query syntax leaks in)."""
    # A term the index can hold has a letter or digit ("_" alone is a separator to it, as to
    # FTS5's tokenizer): any other query is a substring search instead.
    terms = [t for t in text.split() if any(ch.isalnum() for ch in t)]
    if not terms:
        return None
    return " ".join('"' + t.replace('"', '""') + '"' for t in terms)


def _like_pattern(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def event_where(flt: EventFilter, *, has_fts: bool) -> tuple[list[str], list[object]]:
    """WHERE conditions over ``events e`` for a filter, with their bound values."""
    where: list[str] = []
    params: list[object] = []
    for column, value in (
        ("e.provider", flt.provider),
        ("e.status", flt.status),
        ("e.event_type", flt.event_type),
        ("e.key", flt.key),
    ):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    if flt.since_s is not None:
        where.append("e.received_at >= ?")
        params.append(flt.since_s)
    if flt.until_s is not None:
        where.append("e.received_at < ?")
        params.append(flt.until_s)
    if flt.text is not None:
        match = _fts_query(flt.text) if has_fts else None
        if match is not None:
            where.append("e.id IN (SELECT rowid FROM events_fts WHERE events_fts MATCH ?)")
            params.append(match)
        else:
            where.append(
                "e.id IN (SELECT event_id FROM payloads"
                " WHERE CAST(body AS TEXT) LIKE ? ESCAPE '\\')"
            )
            params.append(_like_pattern(flt.text))
    return where, params


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Stored headers for display: anything that looks like a credential is masked."""
    return {
        name: REDACTED if is_credential_header(name) else value for name, value in headers.items()
    }


@dataclass(frozen=True, slots=True, kw_only=True)
class Page(Generic[T]):
    items: Sequence[T]
    next_cursor: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class EventSummary:
    id: int
    provider: str
    key: str
    provider_event_id: str
    event_type: str | None
    status: str
    received_at_s: float
    last_seen_at_s: float
    duplicate_count: int
    conflict_count: int
    body_bytes: int | None
    payload_purged_at_s: float | None

    def as_json(self) -> dict[str, object]:
        return {
            "id": str(self.id),
            "provider": self.provider,
            "key": self.key,
            "provider_event_id": self.provider_event_id,
            "type": self.event_type,
            "status": self.status,
            "received_at": iso_time(self.received_at_s),
            "last_seen_at": iso_time(self.last_seen_at_s),
            "duplicate_count": self.duplicate_count,
            "conflict_count": self.conflict_count,
            "body_bytes": self.body_bytes,
            "payload_purged": self.payload_purged_at_s is not None,
        }


def _summary(row: aiosqlite.Row) -> EventSummary:
    return EventSummary(
        id=row["id"],
        provider=row["provider"],
        key=row["key"],
        provider_event_id=row["provider_event_id"],
        event_type=row["event_type"],
        status=row["status"],
        received_at_s=row["received_at"],
        last_seen_at_s=row["last_seen_at"],
        duplicate_count=row["duplicate_count"],
        conflict_count=row["conflict_count"],
        body_bytes=row["body_bytes"],
        payload_purged_at_s=row["payload_purged_at"],
    )


# One event whole, its payload beside it (none once purged).
EVENT_WITH_PAYLOAD = (
    "SELECT e.*, p.body, p.headers FROM events e LEFT JOIN payloads p ON p.event_id = e.id"
    " WHERE e.id = ?"
)


def row_to_event(row: aiosqlite.Row) -> StoredEvent:
    headers = row["headers"]
    return StoredEvent(
        id=row["id"],
        provider=row["provider"],
        key=row["key"],
        provider_event_id=row["provider_event_id"],
        event_type=row["event_type"],
        fingerprint=row["fingerprint"],
        body=bytes(row["body"]) if row["body"] is not None else None,
        headers=json.loads(headers) if headers is not None else None,
        content_type=row["content_type"],
        remote_addr=row["remote_addr"],
        status=row["status"],
        received_at_s=row["received_at"],
        last_seen_at_s=row["last_seen_at"],
        duplicate_count=row["duplicate_count"],
        conflict_count=row["conflict_count"],
        payload_expires_at_s=row["payload_expires_at"],
        dedupe_expires_at_s=row["dedupe_expires_at"],
        payload_purged_at_s=row["payload_purged_at"],
    )


_SUMMARY_COLUMNS = (
    "e.id, e.provider, e.key, e.provider_event_id, e.event_type, e.status, e.received_at, "
    "e.last_seen_at, e.duplicate_count, e.conflict_count,"
    " (SELECT length(body) FROM payloads WHERE event_id = e.id) AS body_bytes, "
    "e.payload_purged_at"
)


def _body_json(body: bytes | None) -> dict[str, object]:
    if body is None:
        return {"body": None, "encoding": None, "body_bytes": None}
    try:
        return {"body": body.decode("utf-8"), "encoding": "utf-8", "body_bytes": len(body)}
    except UnicodeDecodeError:
        encoded = base64.b64encode(body).decode("ascii")
        return {"body": encoded, "encoding": "base64", "body_bytes": len(body)}


@dataclass(frozen=True, slots=True, kw_only=True)
class EventDetail:
    event: StoredEvent
    job: Mapping[str, object] | None
    attempts: Sequence[Mapping[str, object]] = field(default_factory=list)
    conflicts: Sequence[Mapping[str, object]] = field(default_factory=list)
    requeues: Sequence[Mapping[str, object]] = field(default_factory=list)

    def as_json(self) -> dict[str, object]:
        ev = self.event
        return {
            "id": str(ev.id),
            "provider": ev.provider,
            "key": ev.key,
            "provider_event_id": ev.provider_event_id,
            "type": ev.event_type,
            "status": ev.status,
            "fingerprint": ev.fingerprint,
            "content_type": ev.content_type,
            "remote_addr": ev.remote_addr,
            "received_at": iso_time(ev.received_at_s),
            "last_seen_at": iso_time(ev.last_seen_at_s),
            "duplicate_count": ev.duplicate_count,
            "conflict_count": ev.conflict_count,
            "payload_expires_at": iso_time(ev.payload_expires_at_s),
            "dedupe_expires_at": iso_time(ev.dedupe_expires_at_s),
            "payload_purged_at": iso_time(ev.payload_purged_at_s),
            **_body_json(ev.body),
            "headers": redact_headers(ev.headers) if ev.headers is not None else None,
            "job": dict(self.job) if self.job is not None else None,
            "attempts": [dict(a) for a in self.attempts],
            "conflicts": [dict(c) for c in self.conflicts],
            "requeues": [dict(r) for r in self.requeues],
        }


async def _rows(
    conn: aiosqlite.Connection, sql: str, params: Sequence[object]
) -> list[aiosqlite.Row]:
    return list(await conn.execute_fetchall(sql, params))


class EventQueries:
    """Read-only queries over events. ``clock`` only feeds relative times and queue readiness."""

    def __init__(
        self,
        db: Database,
        *,
        clock: Callable[[], float],
        settle: Callable[[], Awaitable[None]] | None = None,
        handled: frozenset[str] | None = None,
    ) -> None:
        self._db = db
        self.clock = clock
        # The providers with a handler: only their jobs are a queue the worker drains (None: all).
        self._handled = handled
        # Waits for duplicate counts still held in memory, so operators read what was answered.
        self._settle = settle
        self._fts_ready: bool | None = None

    async def has_fts_index(self) -> bool:
        """FTS5 available in this SQLite and the index built (``storage.search_index``).
        Asked before the store is open, while it migrates: not known yet, so nothing is
        remembered (a search then would find the store closed anyway)."""
        if self._fts_ready is None:
            if not self._db.is_open:
                return False
            if not self._db.has_fts:
                self._fts_ready = False
            else:
                async with self._db.reading() as conn:
                    self._fts_ready = await search_index.exists(conn)
        return self._fts_ready

    async def newest_received_at(self) -> float | None:
        """When the newest stored event was received (the index's last entry), or None."""
        async with self._db.reading() as conn:
            rows = await conn.execute_fetchall("SELECT max(received_at) FROM events")
        [(newest,)] = list(rows)
        return None if newest is None else float(newest)

    async def list_events(
        self, flt: EventFilter, *, before_id: int | None, limit: int, now_s: float
    ) -> Page[EventSummary]:
        """Newest first. Keyset on id, so new arrivals never shift a page already handed out;
        ``now_s`` (what relative times were resolved against) travels in the next cursor."""
        if self._settle is not None:
            await self._settle()
        where, params = event_where(flt, has_fts=await self.has_fts_index())
        if before_id is not None:
            where.append("e.id < ?")
            params.append(before_id)
        sql = f"SELECT {_SUMMARY_COLUMNS} FROM events e"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY e.id DESC LIMIT ?"
        async with self._db.reading() as conn:
            rows = await _rows(conn, sql, [*params, limit + 1])
        items = [_summary(row) for row in rows[:limit]]
        has_more = len(rows) > limit
        return Page(
            items=items,
            next_cursor=(
                encode_cursor("e", items[-1].id, now_s=now_s) if has_more and items else None
            ),
        )

    async def get_detail(self, event_id: int) -> EventDetail | None:
        if self._settle is not None:
            await self._settle()
        async with self._db.reading() as conn:
            rows = await _rows(conn, EVENT_WITH_PAYLOAD, (event_id,))
            if not rows:
                return None
            jobs = await _rows(
                conn,
                "SELECT status, attempts, run_at, is_replay, last_error, updated_at"
                " FROM jobs WHERE event_id = ?",
                (event_id,),
            )
            attempts = await _rows(
                conn,
                "SELECT number, is_replay, started_at, finished_at, outcome, http_status,"
                " exit_code, error, duration_s FROM attempts WHERE event_id = ?"
                " ORDER BY id DESC LIMIT ?",
                (event_id, _TIMELINE_MAX),
            )
            conflicts = await _rows(
                conn,
                "SELECT fingerprint, seen_at FROM conflicts WHERE event_id = ?"
                " ORDER BY id DESC LIMIT ?",
                (event_id, _TIMELINE_MAX),
            )
            requeues = await _rows(
                conn,
                "SELECT at, cause, actor, reason FROM requeues WHERE event_id = ?"
                " ORDER BY id DESC LIMIT ?",
                (event_id, _TIMELINE_MAX),
            )
        return EventDetail(
            event=row_to_event(rows[0]),
            job=_job_json(jobs[0]) if jobs else None,
            attempts=[_attempt_json(a) for a in reversed(attempts)],
            conflicts=[
                {"fingerprint": c["fingerprint"], "seen_at": iso_time(c["seen_at"])}
                for c in reversed(conflicts)
            ],
            requeues=[
                {
                    "at": iso_time(r["at"]),
                    "cause": r["cause"],
                    "actor": r["actor"],
                    "reason": r["reason"],
                }
                for r in reversed(requeues)
            ],
        )

    async def stats(self) -> dict[str, object]:
        """Counts by provider and status, duplicates, conflicts, queue depth, rejections."""
        if self._settle is not None:
            await self._settle()
        now = self.clock()
        async with self._db.reading() as conn:
            events = await _rows(
                conn,
                "SELECT provider, status, COUNT(*) AS n, SUM(duplicate_count) AS dup,"
                " SUM(conflict_count) AS conf, SUM(payload_purged_at IS NOT NULL) AS purged"
                " FROM events GROUP BY provider, status",
                (),
            )
            jobs = await _rows(
                conn,
                "SELECT provider, status, COUNT(*) AS n, SUM(run_at <= ?) AS ready,"
                " MIN(CASE WHEN run_at <= ? THEN run_at END) AS oldest_due,"
                " MIN(enqueued_at) AS oldest_enqueued FROM jobs"
                " GROUP BY provider, status",
                (now, now),
            )
            rejections = await _rows(
                conn, "SELECT cause, COUNT(*) AS n FROM rejections GROUP BY cause", ()
            )
        return _stats_json(events, jobs, rejections, handled=self._handled, now=now)


def _job_json(row: aiosqlite.Row) -> dict[str, object]:
    return {
        "status": row["status"],
        "attempts": row["attempts"],
        "run_at": iso_time(row["run_at"]),
        "is_replay": bool(row["is_replay"]),
        "last_error": row["last_error"],
        "updated_at": iso_time(row["updated_at"]),
    }


def _attempt_json(row: aiosqlite.Row) -> dict[str, object]:
    return {
        "number": row["number"],
        "is_replay": bool(row["is_replay"]),
        "started_at": iso_time(row["started_at"]),
        "finished_at": iso_time(row["finished_at"]),
        "outcome": row["outcome"],
        "http_status": row["http_status"],
        "exit_code": row["exit_code"],
        "error": row["error"],
        "duration_s": row["duration_s"],
    }


@dataclass(slots=True)
class _Counts:
    events: int = 0
    duplicates: int = 0
    conflicts: int = 0
    payloads_purged: int = 0
    by_status: dict[str, int] = field(default_factory=dict)

    def add(self, row: aiosqlite.Row) -> None:
        self.events += row["n"]
        self.duplicates += int(row["dup"] or 0)
        self.conflicts += int(row["conf"] or 0)
        self.payloads_purged += int(row["purged"] or 0)
        self.by_status[row["status"]] = self.by_status.get(row["status"], 0) + row["n"]

    def as_json(self) -> dict[str, object]:
        return {
            "events": self.events,
            "by_status": dict(sorted(self.by_status.items())),
            "duplicates": self.duplicates,
            "conflicts": self.conflicts,
            "payloads_purged": self.payloads_purged,
        }


def _stats_json(
    events: Sequence[aiosqlite.Row],
    jobs: Sequence[aiosqlite.Row],
    rejections: Sequence[aiosqlite.Row],
    *,
    handled: frozenset[str] | None,
    now: float,
) -> dict[str, object]:
    totals = _Counts()
    providers: dict[str, _Counts] = {}
    for row in events:
        totals.add(row)
        providers.setdefault(row["provider"], _Counts()).add(row)
    queue = {"queued": 0, "ready": 0, "running": 0}
    unhandled = 0  # jobs of providers without a handler: they wait for one to be configured
    oldest_due = oldest_enqueued = now
    for row in jobs:
        if row["status"] not in ("queued", "running"):
            continue
        if handled is not None and row["provider"] not in handled:
            unhandled += row["n"]
            continue
        if row["oldest_enqueued"] is not None:
            oldest_enqueued = min(oldest_enqueued, float(row["oldest_enqueued"]))
        if row["status"] == "queued":
            queue["queued"] += row["n"]
            queue["ready"] += int(row["ready"] or 0)
            if row["oldest_due"] is not None:
                oldest_due = min(oldest_due, float(row["oldest_due"]))
        else:
            queue["running"] += row["n"]
    causes = {row["cause"]: row["n"] for row in rejections}
    return {
        "totals": totals.as_json(),
        "providers": {name: c.as_json() for name, c in sorted(providers.items())},
        "queue": {
            **queue,
            "depth": queue["queued"] + queue["running"],
            "oldest_ready_age_s": round(now - oldest_due, 3),
            "oldest_unfinished_age_s": round(now - oldest_enqueued, 3),
            "waiting_for_a_handler": unhandled,
        },
        "rejections": {"journaled": sum(causes.values()), "by_cause": dict(sorted(causes.items()))},
    }
