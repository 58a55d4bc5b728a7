"""Operator replay: put an event's job back in the queue, audited.

A replay sets the job to ``queued`` (attempts 0, run now, lease cleared, ``is_replay`` 1), the
event to ``queued``, and writes a ``requeues`` row (cause ``replay``, the actor, the reason), all
in one transaction. An event whose payload was purged cannot be replayed (there is nothing to
hand the handler), nor one whose provider has no handler configured (nothing would run it); one
that a worker is running right now is left alone, so a replay never races a live attempt. A run
whose lease has lapsed (its server was killed) is no longer live: it is replayed, and the
worker, which never claims again an event it still runs, keeps the two apart.

Bulk replay picks the matching events newest first below the highest id present when it
started (events arriving meanwhile are not swept in), then queues them oldest first, in one
transaction: all of them or, when storage fails, none, so running the same replay again after
an error never runs a handler twice (batches committed one by one left the first hundreds
replayed behind a 503 that said nothing of them). 10 000 events, the most one request takes,
hold the writer for about 0.15 s. Oldest first, because a worker holds an event back behind
an older one of its ``serialize_by`` value only while that one is queued.
"""

from __future__ import annotations

__all__ = ["REPLAY_DEFAULT", "REPLAY_MAX", "ReplayOutcome", "ReplayReport", "Replayer"]

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import aiosqlite
import structlog

from receiver.models import EventStatus, JobStatus
from receiver.store.database import Database
from receiver.store.filters import EventFilter, encode_cursor
from receiver.store.queries import EventQueries, event_where

log = structlog.get_logger("receiver.replay")

_SAMPLE_SIZE = 20
_IDS_PER_STATEMENT = 1000
# Events one replay takes, by filter (default and most) or by ID (most), through the admin
# API or the CLI: one transaction, and 10 000 hold the writer for about 0.15 s.
REPLAY_DEFAULT, REPLAY_MAX = 1000, 10_000


class ReplayOutcome(StrEnum):
    REPLAYED = "replayed"
    NOT_FOUND = "not_found"
    PAYLOAD_PURGED = "payload_purged"
    NO_HANDLER = "no_handler"
    RUNNING = "running"


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplayReport:
    dry_run: bool
    matched: int
    replayed: int
    skipped: dict[str, int] = field(default_factory=dict)
    sample: Sequence[int] = ()
    has_more: bool = False
    next_cursor: str | None = None  # where the next run continues (older matches)

    def as_json(self) -> dict[str, object]:
        return {
            "dry_run": self.dry_run,
            "matched": self.matched,
            # Queued by this request (none in a dry run), and what a real run queues: a script
            # reading "replayed" after a dry run took a count of nothing done for work done.
            "replayed": 0 if self.dry_run else self.replayed,
            "would_replay": self.replayed,
            "skipped": dict(self.skipped),
            "sample": [str(i) for i in self.sample],
            "has_more": self.has_more,
            "next_cursor": self.next_cursor,
        }


@dataclass(frozen=True, slots=True)
class _Candidate:
    id: int
    outcome: ReplayOutcome


async def _classify(
    conn: aiosqlite.Connection,
    ids: Sequence[int],
    handled: Collection[str] | None,
    *,
    now: float,
) -> list[_Candidate]:
    """Which of ``ids`` can be replayed at ``now``, in the caller's transaction or snapshot;
    with ``handled`` (the providers that have a handler), only events of those."""
    if not ids:
        return []
    rows = await conn.execute_fetchall(
        "SELECT e.id, e.payload_purged_at IS NOT NULL AS purged,"
        f" j.status = '{JobStatus.RUNNING}' AND coalesce(j.lease_expires_at > ?, 1) AS is_live,"
        " e.provider FROM events e LEFT JOIN jobs j ON j.event_id = e.id"
        " WHERE e.id IN (" + ",".join("?" * len(ids)) + ")",
        [now, *ids],
    )
    found = {row[0]: row for row in rows}
    result: list[_Candidate] = []
    for event_id in ids:
        row = found.get(event_id)
        if row is None:
            outcome = ReplayOutcome.NOT_FOUND
        elif row[1]:
            outcome = ReplayOutcome.PAYLOAD_PURGED
        elif handled is not None and row[3] not in handled:
            outcome = ReplayOutcome.NO_HANDLER
        elif row[2]:
            outcome = ReplayOutcome.RUNNING
        else:
            outcome = ReplayOutcome.REPLAYED
        result.append(_Candidate(event_id, outcome))
    return result


async def _classify_all(
    conn: aiosqlite.Connection, ids: Sequence[int], handled: Collection[str] | None, now: float
) -> list[_Candidate]:
    """:func:`_classify` for up to ``REPLAY_MAX`` ids, a statement per thousand (older SQLite
    builds bind at most 999 values to one statement)."""
    result: list[_Candidate] = []
    for start in range(0, len(ids), _IDS_PER_STATEMENT):
        chunk = ids[start : start + _IDS_PER_STATEMENT]
        result.extend(await _classify(conn, chunk, handled, now=now))
    return result


class Replayer:
    def __init__(
        self,
        db: Database,
        queries: EventQueries,
        *,
        clock: Callable[[], float],
        on_committed: Callable[[], None] | None = None,
        on_replayed: Callable[[str, int], None] | None = None,
        handled: frozenset[str] | None = None,
    ) -> None:
        self._db = db
        self._queries = queries
        self._clock = clock
        self._on_committed = on_committed
        self.on_replayed = on_replayed
        # The providers with a handler configured (None: not known here, so any).
        self._handled = handled

    async def replay_one(
        self, event_id: int, *, actor: str, reason: str | None, dry_run: bool = False
    ) -> ReplayOutcome:
        report = await self.replay_ids([event_id], actor=actor, reason=reason, dry_run=dry_run)
        for outcome in ReplayOutcome:
            if report.skipped.get(outcome.value):
                return outcome
        return ReplayOutcome.REPLAYED

    async def replay_ids(
        self, ids: Sequence[int], *, actor: str, reason: str | None, dry_run: bool = False
    ) -> ReplayReport:
        """Replay the given events, all in one transaction; unknown, purged, unhandled and
        running ones are skipped."""
        unique = list(dict.fromkeys(ids))
        in_receive_order = sorted(unique)  # see the module's docstring: serialize_by
        if dry_run:
            async with self._db.reading() as conn:
                candidates = await _classify_all(
                    conn, in_receive_order, self._handled, self._clock()
                )
        else:
            candidates = await self._replay_all(in_receive_order, actor=actor, reason=reason)
        replayed = 0
        skipped: dict[str, int] = {}
        for c in candidates:
            if c.outcome is ReplayOutcome.REPLAYED:
                replayed += 1
            else:
                skipped[c.outcome.value] = skipped.get(c.outcome.value, 0) + 1
        return ReplayReport(
            dry_run=dry_run,
            matched=len(unique) - skipped.get(ReplayOutcome.NOT_FOUND.value, 0),
            replayed=replayed,
            skipped=skipped,
            sample=unique[:_SAMPLE_SIZE],
        )

    async def replay_matching(
        self,
        flt: EventFilter,
        *,
        actor: str,
        reason: str | None,
        dry_run: bool,
        limit: int,
        now_s: float,
        before_id: int | None = None,
    ) -> ReplayReport:
        """Replay the newest ``limit`` events matching ``flt`` below ``before_id`` (a cursor
        from an earlier run: it continues with the older matches instead of replaying the
        newest again), queued oldest first."""
        where, params = event_where(flt, has_fts=await self._queries.has_fts_index())
        if before_id is None:
            async with self._db.reading() as conn:
                rows = await conn.execute_fetchall("SELECT MAX(id) FROM events")
            ceiling = next(iter(rows))[0]
            if ceiling is None:
                return ReplayReport(dry_run=dry_run, matched=0, replayed=0)
            before_id = int(ceiling) + 1
        found = await self._matching_ids(where, params, before_id=before_id, limit=limit + 1)
        ids, has_more = found[:limit], len(found) > limit
        report = await self.replay_ids(ids, actor=actor, reason=reason, dry_run=dry_run)
        return ReplayReport(
            dry_run=dry_run,
            matched=len(ids),
            replayed=report.replayed,
            skipped=report.skipped,
            sample=ids[:_SAMPLE_SIZE],
            has_more=has_more,
            next_cursor=encode_cursor("e", ids[-1], now_s=now_s) if has_more else None,
        )

    async def _matching_ids(
        self, where: list[str], params: list[object], *, before_id: int, limit: int
    ) -> list[int]:
        sql = "SELECT e.id FROM events e WHERE " + " AND ".join([*where, "e.id < ?"])
        sql += " ORDER BY e.id DESC LIMIT ?"
        async with self._db.reading() as conn:
            rows = await conn.execute_fetchall(sql, [*params, before_id, limit])
        return [int(row[0]) for row in rows]

    async def _replay_all(
        self, ids: Sequence[int], *, actor: str, reason: str | None
    ) -> list[_Candidate]:
        now = self._clock()

        async def work(conn: aiosqlite.Connection) -> list[_Candidate]:
            candidates = await _classify_all(conn, ids, self._handled, now)
            ready = [(c.id,) for c in candidates if c.outcome is ReplayOutcome.REPLAYED]
            if not ready:
                return candidates
            # An upsert, so an event that somehow lost its job row is queued all the same.
            await conn.executemany(
                "INSERT INTO jobs (event_id, provider, status, attempts, run_at, enqueued_at,"
                " serialize_key, is_replay, updated_at)"
                " SELECT id, provider, ?, 0, ?, ?, serialize_key, 1, ? FROM events WHERE id = ?"
                " ON CONFLICT (event_id) DO UPDATE SET status = excluded.status, attempts = 0,"
                " run_at = excluded.run_at,"
                # An event still waiting keeps its age: a replay has not handled it.
                " enqueued_at = CASE WHEN jobs.status IN ('queued', 'running')"
                " THEN coalesce(jobs.enqueued_at, excluded.enqueued_at)"
                " ELSE excluded.enqueued_at END,"
                " lease_token = NULL, lease_expires_at = NULL, is_replay = 1,"
                " updated_at = excluded.updated_at",
                [(str(JobStatus.QUEUED), now, now, now, event_id) for (event_id,) in ready],
            )
            await conn.executemany(
                "UPDATE events SET status = ? WHERE id = ?",
                [(str(EventStatus.QUEUED), event_id) for (event_id,) in ready],
            )
            await conn.executemany(
                "INSERT INTO requeues (event_id, at, cause, actor, reason)"
                " VALUES (?, ?, 'replay', ?, ?)",
                [(event_id, now, actor, reason) for (event_id,) in ready],
            )
            return candidates

        candidates = await self._db.transaction(work)
        count = sum(c.outcome is ReplayOutcome.REPLAYED for c in candidates)
        if count:
            log.info("events_replayed", count=count, actor=actor, reason=reason)
            if self.on_replayed is not None:
                self.on_replayed(actor, count)
            if self._on_committed is not None:
                self._on_committed()
        return candidates
