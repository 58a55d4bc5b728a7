"""The worker queue in SQL: claim with a lease, then finish under that lease.

A job is *ready* when it is ``queued`` with ``run_at <= now``, or ``running`` with an expired
lease (its worker was killed or its handler hung: the job comes back). Claiming takes a random
lease token, counts the attempt and opens an ``attempts`` row, all in one ``BEGIN IMMEDIATE``
on the single writer. Every later step (complete, reschedule, bury, release, renew) names the
token; a stale token changes nothing and the method returns ``False``, so a zombie's late
answer cannot overwrite the work of the worker that took the job over.

``serialize_key``: a job waits while an earlier job (lower ``event_id``) of the same provider and
key is unfinished, or while another job of that key holds a live lease, so events with the same
value run one at a time in the order they were received.

``events.status`` moves in step: processing / retrying / succeeded / dead, and back to queued
when a job is released without an outcome.
"""

from __future__ import annotations

__all__ = ["AttemptRecord", "ClaimedJob", "JobQueue", "QueueStats"]

import secrets
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

import orjson
import structlog

from receiver.models import EventStatus, JobStatus
from receiver.store.database import Database

log = structlog.get_logger("receiver.store")

# Not claimable while an earlier job of the same key is unfinished, or another one is leased.
_NOT_BLOCKED = (
    "(j.serialize_key IS NULL OR NOT EXISTS ("
    " SELECT 1 FROM jobs o WHERE o.serialize_key = j.serialize_key AND o.provider = j.provider"
    " AND o.event_id <> j.event_id"
    " AND ((o.event_id < j.event_id AND o.status IN ('queued', 'running'))"
    " OR (o.status = 'running' AND o.lease_expires_at > :now))))"
)
# Two index range scans (jobs_provider_ready: provider, status, run_at, …), never a scan of the
# finished jobs, which stay in the table for the whole dedupe window: due queued jobs in
# run_at order, and the few running ones whose lease ran out.
_CANDIDATES = (
    "SELECT event_id, run_at FROM ("
    " SELECT j.event_id, j.run_at FROM jobs j"
    " WHERE j.provider = :provider AND j.status = 'queued' AND j.run_at <= :now"
    f" AND {_NOT_BLOCKED} ORDER BY j.run_at LIMIT :limit)"
    " UNION ALL "
    "SELECT event_id, run_at FROM ("
    " SELECT j.event_id, j.run_at FROM jobs j"
    " WHERE j.provider = :provider AND j.status = 'running' AND j.lease_expires_at <= :now"
    f" AND {_NOT_BLOCKED} LIMIT :limit)"
    " ORDER BY run_at, event_id LIMIT :limit"
)
_LEASE_LOST = "lease expired before the attempt finished (the worker stopped or the handler hung)"


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimedJob:
    """A job this worker holds a lease on, with what its handler needs."""

    event_id: int
    provider: str
    key: str
    event_type: str | None
    body: bytes | None  # None when the payload was purged
    headers: Mapping[str, str]
    content_type: str | None
    serialize_key: str | None
    attempt: int  # 1-based, counted at claim
    is_replay: bool
    # How the attempt before this one ended (its error, or that its lease ran out); None
    # for a first attempt or after a success or replay.
    previous_error: str | None
    lease_token: str
    attempt_id: int
    claimed_at_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class AttemptRecord:
    """How an attempt ended, for the ``attempts`` row. ``error`` is a short summary."""

    finished_at_s: float
    duration_s: float | None = None
    http_status: int | None = None
    exit_code: int | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueStats:
    provider: str
    queued: int  # waiting, including those scheduled for a later retry
    running: int
    oldest_ready_age_s: float  # how long the oldest due job has waited for a worker (0: none)
    # How long the oldest job not yet finished has been queued (received, redelivered after it
    # went dead, or replayed), its retries included (0: none).
    oldest_unfinished_age_s: float


def _in(names: Sequence[str]) -> tuple[str, dict[str, str]]:
    params = {f"p{i}": name for i, name in enumerate(names)}
    return "(" + ",".join(f":{k}" for k in params) + ")", params


@dataclass(frozen=True, slots=True, kw_only=True)
class Relabelled:
    """What :meth:`JobQueue.requeue_unclaimable` changed."""

    requeued: int  # jobs left running by a provider with no handler now, queued again
    to_received: int  # events such a provider left queued or retrying
    to_queued: int  # events stored received whose provider has a handler now
    still_leased: bool  # others are leased yet: look again later


class JobQueue:
    """Queue operations over a :class:`Database`. Times are passed in (``now``), never read;
    only what a count costs is measured (``last_stats_cost_s``, for pacing the next one)."""

    def __init__(self, db: Database, *, on_dead: Callable[[int], None] | None = None) -> None:
        self._db = db
        self.last_stats_cost_s = 0.0
        # Told about every event that goes dead (ingest's memory of committed keys must not
        # answer a redelivery of a dead event: that one re-queues it).
        self._on_dead = on_dead

    async def claim(
        self,
        *,
        caps: Mapping[str, int | None],
        limit: int,
        now: float,
        lease_s: float,
        running_here: Collection[int] = (),
    ) -> list[ClaimedJob]:
        """Lease up to ``limit`` ready jobs of the providers in ``caps`` (name -> concurrency
        limit, None for none), oldest ``run_at`` first, within each provider's limit.
        ``running_here``: the events this worker still runs. A lease of theirs that ran out
        (a clock step, a lock held past the renewal) does not make them claimable again by
        this worker, and they still count against their provider's limit."""
        if limit <= 0 or not caps:
            return []
        running = frozenset(running_here)

        def work(conn: sqlite3.Connection) -> list[ClaimedJob]:
            return _claim(
                conn, caps=caps, limit=limit, now=now, lease_s=lease_s, running_here=running
            )

        # Urgent: it carries the completions waiting for a transaction (see Database.coalesced).
        return await self._db.coalesced(work)

    async def _finish(
        self,
        job: ClaimedJob,
        *,
        job_set: str,
        job_params: tuple[object, ...],
        event_status: EventStatus,
        outcome: str,
        record: AttemptRecord,
        is_urgent: bool = False,
    ) -> bool:
        """Close the job's attempt under its lease. Not urgent by default: the handler is done
        and the lease still holds the job, so the write joins the worker's next claim."""

        def work(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                f"UPDATE jobs SET {job_set}, lease_token = NULL, lease_expires_at = NULL,"
                " updated_at = ? WHERE event_id = ? AND lease_token = ? AND status = 'running'",
                (*job_params, record.finished_at_s, job.event_id, job.lease_token),
            )
            if cur.rowcount != 1:
                return False  # a stale lease: someone else owns this job now
            conn.execute(
                "UPDATE attempts SET finished_at = ?, outcome = ?, http_status = ?,"
                " exit_code = ?, error = ?, duration_s = ? WHERE id = ?",
                (
                    record.finished_at_s,
                    outcome,
                    record.http_status,
                    record.exit_code,
                    record.error,
                    record.duration_s,
                    job.attempt_id,
                ),
            )
            conn.execute(
                "UPDATE events SET status = ? WHERE id = ?", (str(event_status), job.event_id)
            )
            return True

        return await self._db.coalesced(work, is_urgent=is_urgent)

    async def complete(self, job: ClaimedJob, record: AttemptRecord) -> bool:
        return await self._finish(
            job,
            job_set="status = ?, last_error = NULL",
            job_params=(str(JobStatus.SUCCEEDED),),
            event_status=EventStatus.SUCCEEDED,
            outcome="succeeded",
            record=record,
        )

    async def reschedule(self, job: ClaimedJob, record: AttemptRecord, *, run_at: float) -> bool:
        """The attempt failed; try again at ``run_at``."""
        return await self._finish(
            job,
            job_set="status = ?, run_at = ?, last_error = ?",
            job_params=(str(JobStatus.QUEUED), run_at, record.error),
            event_status=EventStatus.RETRYING,
            outcome="retry",
            record=record,
        )

    async def bury(self, job: ClaimedJob, record: AttemptRecord) -> bool:
        """Give up: permanent failure or out of attempts. The last error is kept."""
        if self._on_dead is not None:
            self._on_dead(job.event_id)
        is_buried = await self._finish(
            job,
            job_set="status = ?, last_error = ?",
            job_params=(str(JobStatus.DEAD), record.error),
            event_status=EventStatus.DEAD,
            outcome="dead",
            record=record,
        )
        if self._on_dead is not None:
            self._on_dead(job.event_id)
        return is_buried

    async def requeue_unclaimable(self, handled: Sequence[str], *, now: float) -> Relabelled:
        """Jobs left running, their lease expired, by a provider with no handler now (removed
        from the config, or its handler taken away): no worker would ever claim them again,
        so they would show as processing for ever. Their jobs go back to queued (where
        ``waiting_for_a_handler`` counts them) and their events to received, like every event
        of a provider without a handler; the open attempt is closed as a lost lease. Events
        such a provider left queued or retrying read received too: no run is pending for them
        here, and retention purges them on time. The other way, the events a provider with a
        handler now had stored received wait for it: queued (retrying after an attempt).
        Also says whether others are still leased (a look later will find them)."""

        def work(conn: sqlite3.Connection) -> Relabelled:
            placeholders, params = _in(handled)
            unhandled = f" AND provider NOT IN {placeholders}" if handled else ""
            still_leased = conn.execute(
                "SELECT EXISTS (SELECT 1 FROM jobs WHERE status = 'running'"
                f" AND lease_expires_at > :now{unhandled})",
                {"now": now, **params},
            ).fetchone()[0]
            ids = [
                int(row[0])
                for row in conn.execute(
                    "SELECT event_id FROM jobs WHERE status = 'running'"
                    f" AND lease_expires_at <= :now{unhandled}",
                    {"now": now, **params},
                )
            ]
            for start in range(0, len(ids), 500):  # within SQLite's bound parameters
                chunk = ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                conn.execute(
                    "UPDATE attempts SET finished_at = ?, outcome = 'retry', error = ?"
                    f" WHERE event_id IN ({marks}) AND outcome IS NULL",
                    (now, _LEASE_LOST, *chunk),
                )
                conn.execute(
                    "UPDATE jobs SET status = 'queued', lease_token = NULL, last_error = ?,"
                    f" lease_expires_at = NULL, updated_at = ? WHERE event_id IN ({marks})",
                    (_LEASE_LOST, now, *chunk),
                )
                conn.execute(
                    f"UPDATE events SET status = ? WHERE id IN ({marks})",
                    (str(EventStatus.RECEIVED), *chunk),
                )
            statuses = {
                "received": str(EventStatus.RECEIVED),
                "queued": str(EventStatus.QUEUED),
                "retrying": str(EventStatus.RETRYING),
            }
            unrun = conn.execute(
                "UPDATE events SET status = :received WHERE status IN (:queued, :retrying)"
                f"{unhandled}",
                {**statuses, **params},
            ).rowcount
            ready = 0
            if handled:
                ready = conn.execute(
                    "UPDATE events SET status = CASE WHEN (SELECT attempts FROM jobs"
                    " WHERE event_id = events.id) > 0 THEN :retrying ELSE :queued END"
                    " WHERE status = :received AND id IN (SELECT event_id FROM jobs"
                    f" WHERE status = 'queued' AND provider IN {placeholders})",
                    {**statuses, **params},
                ).rowcount
            return Relabelled(
                requeued=len(ids),
                to_received=max(unrun, 0),
                to_queued=max(ready, 0),
                still_leased=bool(still_leased),
            )

        return await self._db.transaction_sync(work, is_flushed=False)

    async def release(self, job: ClaimedJob, *, now: float) -> bool:
        """Hand the job back without an outcome (shutdown): the attempt does not count."""
        return await self._finish(
            job,
            job_set="status = ?, attempts = MAX(attempts - 1, 0)",
            job_params=(str(JobStatus.QUEUED),),
            event_status=EventStatus.QUEUED,
            outcome="interrupted",
            record=AttemptRecord(
                finished_at_s=now,
                duration_s=now - job.claimed_at_s,
                error="interrupted by shutdown",
            ),
            is_urgent=True,  # shutting down: nothing else is coming to carry it
        )

    async def renew(self, job: ClaimedJob, *, now: float, lease_s: float) -> bool:
        """Extend the lease of a long-running handler. False: the lease was lost."""
        return job.event_id in await self.renew_many([job], now=now, lease_s=lease_s)

    async def renew_many(
        self, jobs: Sequence[ClaimedJob], *, now: float, lease_s: float
    ) -> set[int]:
        """Extend the leases of several running jobs at once; returns the event IDs whose lease
        is still this worker's (the others were lost: expired and taken over, or finished)."""

        def work(conn: sqlite3.Connection) -> set[int]:
            held: set[int] = set()
            for job in jobs:
                cur = conn.execute(
                    "UPDATE jobs SET lease_expires_at = ?, updated_at = ?"
                    " WHERE event_id = ? AND lease_token = ? AND status = 'running'",
                    (now + lease_s, now, job.event_id, job.lease_token),
                )
                if cur.rowcount == 1:
                    held.add(job.event_id)
            return held

        return await self._db.coalesced(work)

    async def shift_schedules(self, step_s: float) -> int:
        """Move every waiting job's schedule, every running job's lease and both's queueing time
        by ``step_s`` (the wall clock stepped back by as much): what was due in a minute is
        due in a minute again, not in an hour. A job the worker wrote after the step and before
        it was noticed moves too: it runs (or its lease ends) a little early, never late. One
        pass over the jobs table, once per step."""

        def work(conn: sqlite3.Connection) -> int:
            waiting = conn.execute(
                "UPDATE jobs SET run_at = run_at + :step, enqueued_at = enqueued_at + :step"
                " WHERE status = 'queued'",
                {"step": step_s},
            ).rowcount
            running = conn.execute(
                "UPDATE jobs SET lease_expires_at = lease_expires_at + :step,"
                " enqueued_at = enqueued_at + :step WHERE status = 'running'",
                {"step": step_s},
            ).rowcount
            return max(waiting, 0) + max(running, 0)

        return await self._db.transaction_sync(work, is_flushed=False)

    async def next_change_at(self, providers: Sequence[str], *, now: float) -> float | None:
        """The earliest moment a job of ``providers`` may become ready (a retry falls due or a
        lease runs out; a queued job already due answers its past ``run_at``), or None when
        nothing is waiting at all."""
        if not providers:
            return None
        placeholders, params = _in(providers)
        async with self._db.reading() as conn:
            rows = await conn.execute_fetchall(
                "SELECT MIN(t) FROM ("
                # No "run_at > now" here: a retry that fell due since the last claim still counts.
                " SELECT MIN(run_at) AS t FROM jobs WHERE status = 'queued'"
                f" AND provider IN {placeholders}"
                " UNION ALL"
                " SELECT MIN(lease_expires_at) FROM jobs WHERE status = 'running'"
                f" AND lease_expires_at > :now AND provider IN {placeholders})",
                {"now": now, **params},
            )
        value = next(iter(rows))[0]
        return float(value) if value is not None else None

    async def stats(self, providers: Sequence[str], *, now: float) -> list[QueueStats]:
        """Queue depth and lag per provider (for metrics and health)."""
        if not providers:
            return []
        placeholders, params = _in(providers)
        async with self._db.reading() as conn:
            started = time.monotonic()  # the reader is ours: a wait for it is not the cost
            rows = await conn.execute_fetchall(
                "SELECT provider, SUM(status = 'queued'), SUM(status = 'running'),"
                " MIN(CASE WHEN status = 'queued' AND run_at <= :now THEN run_at END),"
                " MIN(enqueued_at) FROM jobs WHERE status IN ('queued', 'running')"
                f" AND provider IN {placeholders} GROUP BY provider",
                {"now": now, **params},
            )
            self.last_stats_cost_s = time.monotonic() - started
        found = {
            row[0]: QueueStats(
                provider=row[0],
                queued=int(row[1]),
                running=int(row[2]),
                oldest_ready_age_s=_age(row[3], now),
                oldest_unfinished_age_s=_age(row[4], now),
            )
            for row in rows
        }
        return [
            found.get(
                name,
                QueueStats(
                    provider=name,
                    queued=0,
                    running=0,
                    oldest_ready_age_s=0.0,
                    oldest_unfinished_age_s=0.0,
                ),
            )
            for name in providers
        ]


def _age(since: float | None, now: float) -> float:
    return max(0.0, now - float(since)) if since is not None else 0.0


# ----------------------------------------------------------------------------- on the writer thread
# Plain sqlite3, run by Database.coalesced: a claim is one hand-off to the writer thread.


def _claim(
    conn: sqlite3.Connection,
    *,
    caps: Mapping[str, int | None],
    limit: int,
    now: float,
    lease_s: float,
    running_here: frozenset[int],
) -> list[ClaimedJob]:
    names = sorted(caps)
    placeholders, params = _in(names)
    busy: Counter[str] = Counter()
    for provider, event_id, expires_at in conn.execute(
        "SELECT provider, event_id, lease_expires_at FROM jobs WHERE status = 'running'"
        f" AND provider IN {placeholders}",
        params,
    ):
        if (expires_at is not None and expires_at > now) or event_id in running_here:
            busy[provider] += 1
    candidates: list[tuple[float, int]] = []
    for name in names:
        cap = caps[name]
        room = limit if cap is None else min(limit, cap - busy[name])
        if room <= 0:
            continue
        # Asked for as many more as this worker runs: its own lapsed leases may be among the
        # rows, and are dropped, not counted against the room.
        limit_rows = room + len(running_here)
        rows = conn.execute(_CANDIDATES, {"provider": name, "now": now, "limit": limit_rows})
        mine = [(float(row[1]), int(row[0])) for row in rows if int(row[0]) not in running_here]
        candidates.extend(mine[:room])
    chosen = [event_id for _, event_id in sorted(candidates)[:limit]]
    return _lease(conn, chosen, now=now, lease_s=lease_s)


def _drop_orphans(
    conn: sqlite3.Connection, event_ids: Sequence[int], *, found: Collection[int]
) -> list[int]:
    """Delete the jobs whose event is gone (deleted by hand, with SQLite's foreign keys off, as
    the ``sqlite3`` shell has them): they can never run, and leasing one failed the whole
    claim, so the worker stopped for every provider. The others are returned."""
    orphans = [event_id for event_id in event_ids if event_id not in found]
    conn.execute(
        f"DELETE FROM jobs WHERE event_id IN ({','.join('?' * len(orphans))})", tuple(orphans)
    )
    log.warning("orphan_jobs_removed", count=len(orphans), event_ids=orphans[:20])
    return [event_id for event_id in event_ids if event_id in found]


def _lease(
    conn: sqlite3.Connection, event_ids: Sequence[int], *, now: float, lease_s: float
) -> list[ClaimedJob]:
    """Lease the chosen jobs with set-based statements (a handful per claim, not per job).
    One token per claim: every later step names its own job *and* the token."""
    if not event_ids:
        return []
    events = {
        int(row["id"]): row
        for row in conn.execute(
            "SELECT e.id, e.provider, e.key, e.event_type, p.body, p.headers, e.content_type"
            " FROM events e LEFT JOIN payloads p ON p.event_id = e.id"
            f" WHERE e.id IN ({','.join('?' * len(event_ids))})",
            tuple(event_ids),
        )
    }
    if len(events) < len(event_ids):
        event_ids = _drop_orphans(conn, event_ids, found=events)
        if not event_ids:
            return []
    token = secrets.token_hex(16)
    marks = ",".join("?" * len(event_ids))
    # A previous run whose lease ran out never reported: close its attempt row.
    lost = {
        int(row[0])
        for row in conn.execute(
            "UPDATE attempts SET finished_at = ?, outcome = 'retry', error = ?"
            f" WHERE event_id IN ({marks}) AND outcome IS NULL RETURNING event_id",
            (now, _LEASE_LOST, *event_ids),
        )
    }
    jobs = {
        int(row[0]): row
        for row in conn.execute(
            "UPDATE jobs SET status = 'running', attempts = attempts + 1, lease_token = ?,"
            f" lease_expires_at = ?, updated_at = ? WHERE event_id IN ({marks})"
            " RETURNING event_id, attempts, is_replay, serialize_key, last_error",
            (token, now + lease_s, now, *event_ids),
        )
    }
    attempt_ids = {
        int(row[1]): int(row[0])
        for row in conn.execute(
            "INSERT INTO attempts (event_id, number, is_replay, started_at) VALUES "
            + ",".join(["(?, ?, ?, ?)"] * len(event_ids))
            + " RETURNING id, event_id",
            [v for e in event_ids for v in (e, jobs[e][1], jobs[e][2], now)],
        )
    }
    conn.execute(
        f"UPDATE events SET status = ? WHERE id IN ({marks})",
        (str(EventStatus.PROCESSING), *event_ids),
    )
    claimed: list[ClaimedJob] = []
    for event_id in event_ids:
        _, attempt, is_replay, serialize_key, last_error = jobs[event_id]
        ev = events[event_id]
        claimed.append(
            ClaimedJob(
                event_id=event_id,
                provider=ev["provider"],
                key=ev["key"],
                event_type=ev["event_type"],
                body=bytes(ev["body"]) if ev["body"] is not None else None,
                headers=_stored_headers(ev["headers"], event_id),
                content_type=ev["content_type"],
                serialize_key=serialize_key,
                attempt=int(attempt),
                is_replay=bool(is_replay),
                previous_error=_LEASE_LOST if event_id in lost else last_error,
                lease_token=token,
                attempt_id=attempt_ids[event_id],
                claimed_at_s=now,
            )
        )
    return claimed


def _stored_headers(text: str | None, event_id: int) -> dict[str, str]:
    """An event's stored headers; unreadable ones (a row edited by hand) are none, said once
    per claim, rather than an error that stopped the worker for every provider."""
    if text is None:
        return {}
    try:
        headers = orjson.loads(text)
    except orjson.JSONDecodeError:
        headers = None
    if not isinstance(headers, dict):
        log.warning("event_headers_unreadable", event_id=event_id)
        return {}
    return headers
