"""Retention: payloads go first, keys later, and the rejection journal stays capped.

* After ``payload_expires_at`` the payload (body and headers) is deleted, ``payload_purged_at``
  set; the key, fingerprint and status stay, so a late redelivery is still recognised as a
  duplicate.
* After ``dedupe_expires_at`` the row (and its job, attempts, conflicts, requeues) is deleted, so
  a redelivery after that is a new event again.
* An event a worker will still run (``queued``, ``processing``, ``retrying``, or ``received``
  once its provider has a handler) keeps its payload and key past their expiry until its run
  ends: retention never takes what a job still needs (a replay queued near the end of the
  window, a backlog behind a handler outage). The job's attempts and backoff bound the wait.
* The rejections table is cut back to its newest ``keep_rejections`` rows.
* A provider's windows are fixed on each event when it is received; when the configured
  windows change, the server's first purge after it moves the expiry of that provider's stored
  events to the new windows (shorter or longer), so a shortened payload retention reaches the
  bodies already stored (a payload a redelivery brought back counts from then, not from its
  first arrival). ``retention_applied`` remembers what was applied. A one-off
  ``receiver purge`` is given no windows: it purges by the stored expiries.

Each step works in small batches, one short transaction each, and rests after each batch as
long as the batch took: a large purge (hundreds of thousands of rows, the full-text index
updated for each) takes at most about half of the single writer's time, and an ingest commit
waits behind at most one small batch. The clock is injected.
"""

from __future__ import annotations

__all__ = ["PurgeReport", "PurgeTask", "Retention", "RetentionPolicy", "policies_of"]

import asyncio
import contextlib
import functools
import math
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import aiosqlite
import orjson
import structlog

from receiver.durations import format_duration
from receiver.errors import StorageUnavailable
from receiver.models import EventStatus
from receiver.store.database import Database
from receiver.store.rejections import DEFAULT_KEEP_REJECTIONS, trim_rejections

log = structlog.get_logger("receiver.retention")

# A payload's window counts from its arrival, or from the redelivery that brought it back.
_PAYLOAD_KEPT_FROM = "coalesce(payload_restored_at, received_at)"
# Events a worker will still run: their payload and key outlive their expiry. That is every
# event queued, processing or retrying, and one received (stored while its provider had no
# handler) once its provider has one. (The worker relabels the events of a provider with no
# handler ``received`` at start, and those of one with a handler ``queued``.)
_RUN_PENDING = (EventStatus.QUEUED, EventStatus.PROCESSING, EventStatus.RETRYING)
_NO_RUN_PENDING = (
    "status NOT IN ({})".format(", ".join(f"'{s}'" for s in _RUN_PENDING))
    + f" AND NOT (status = '{EventStatus.RECEIVED}' AND provider IN (SELECT value FROM"
    " json_each(?)))"
)


@dataclass(frozen=True, slots=True)
class _Expiry:
    """One expiry an event can pass: which rows have it due (walked on the reader in the order
    of its index, ``column`` then id, each step a seek) and what is done to them (on the
    writer, where every condition is checked again)."""

    column: str
    also: str  # the index's own condition, "" when it has none
    # An UPDATE or DELETE whose WHERE ends "id IN ({ids})" (the marks filled in) RETURNING id
    act: str
    act_params: Callable[[float], tuple[object, ...]]
    then: str | None = None  # and what follows for the ids it acted on, "{ids}" likewise

    def same_expiry(self) -> str:
        """Rows past the walk's place that share its expiry (a batch's events do)."""
        return (
            f"SELECT id, {self.column}, status, provider FROM events"
            f" WHERE {self.also}{self.column} = ? AND id > ? ORDER BY id LIMIT ?"
        )

    def later_expiry(self) -> str:
        return (
            f"SELECT id, {self.column}, status, provider FROM events"
            f" WHERE {self.also}{self.column} > ? AND {self.column} <= ?"
            f" ORDER BY {self.column}, id LIMIT ?"
        )


_PAYLOAD_EXPIRY = _Expiry(
    column="payload_expires_at",
    also="payload_purged_at IS NULL AND ",
    act="UPDATE events SET payload_purged_at = ?"
    f" WHERE payload_purged_at IS NULL AND payload_expires_at <= ? AND {_NO_RUN_PENDING}"
    " AND id IN ({ids}) RETURNING id",
    act_params=lambda now: (now, now),
    then="DELETE FROM payloads WHERE event_id IN ({ids})",
)
_DEDUPE_EXPIRY = _Expiry(
    column="dedupe_expires_at",
    also="",
    act=f"DELETE FROM events WHERE dedupe_expires_at <= ? AND {_NO_RUN_PENDING}"
    " AND id IN ({ids}) RETURNING id",  # their payloads, jobs and history go with them
    act_params=lambda now: (now,),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class RetentionPolicy:
    """One provider's effective windows (from its scheme preset or its config)."""

    payload_retention_s: float
    dedupe_retention_s: float

    @property
    def windows(self) -> tuple[float, float]:
        return (self.payload_retention_s, self.dedupe_retention_s)

    def as_json(self) -> dict[str, object]:
        return {
            "payload_retention_s": self.payload_retention_s,
            "payload_retention": format_duration(self.payload_retention_s),
            "dedupe_retention_s": self.dedupe_retention_s,
            "dedupe_retention": format_duration(self.dedupe_retention_s),
        }


class _HasRetention(Protocol):
    @property
    def payload_retention_s(self) -> float: ...
    @property
    def dedupe_retention_s(self) -> float: ...


def policies_of(providers: Mapping[str, _HasRetention]) -> dict[str, RetentionPolicy]:
    """Each configured provider's windows, as retention and the admin API use them."""
    return {
        name: RetentionPolicy(
            payload_retention_s=p.payload_retention_s, dedupe_retention_s=p.dedupe_retention_s
        )
        for name, p in providers.items()
    }


@dataclass(frozen=True, slots=True, kw_only=True)
class PurgeReport:
    payloads_purged: int = 0
    events_deleted: int = 0
    rejections_deleted: int = 0

    def as_json(self) -> dict[str, int]:
        return {
            "payloads_purged": self.payloads_purged,
            "events_deleted": self.events_deleted,
            "rejections_deleted": self.rejections_deleted,
        }


class Retention:
    def __init__(
        self,
        db: Database,
        *,
        clock: Callable[[], float],
        batch_size: int = 100,
        keep_rejections: int = DEFAULT_KEEP_REJECTIONS,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        policies: Mapping[str, RetentionPolicy] | None = None,
        on_policy_applied: Callable[[], None] | None = None,
        handled: Collection[str] = (),
    ) -> None:
        self._db = db
        self._clock = clock
        self._batch_size = batch_size
        self._keep_rejections = keep_rejections
        self._sleep = sleep
        self._policies = dict(policies or {})
        self._is_policy_applied = not self._policies
        # Told when stored expiries moved (ingest's memory of keys holds the old ones).
        self._on_policy_applied = on_policy_applied
        # The providers with a handler: their received events are waiting for it.
        self._handled = frozenset(handled)
        self._handled_json = orjson.dumps(sorted(self._handled)).decode()
        # Told of each committed batch (the metrics' counters): a purge that fails part-way
        # has removed what its earlier batches removed, and its report never comes.
        self.on_progress: Callable[[PurgeReport], None] | None = None

    async def purge_once(self, *, is_stopping: Callable[[], bool] = lambda: False) -> PurgeReport:
        """Run every step until nothing more is due at the moment the run started.

        ``is_stopping`` is checked between batches, so a shutdown never waits for a long purge.
        """
        if not self._is_policy_applied:
            await self._apply_policies(is_stopping)
        now = self._clock()
        payloads = await self._in_batches(
            _PAYLOAD_EXPIRY, now, is_stopping, lambda n: PurgeReport(payloads_purged=n)
        )
        events = await self._in_batches(
            _DEDUPE_EXPIRY, now, is_stopping, lambda n: PurgeReport(events_deleted=n)
        )
        rejections = await self._trim_rejections(is_stopping)
        report = PurgeReport(
            payloads_purged=payloads, events_deleted=events, rejections_deleted=rejections
        )
        if payloads or events or rejections:
            log.info("retention_purged", **report.as_json())
        return report

    async def _in_batches(
        self,
        expiry: _Expiry,
        now: float,
        is_stopping: Callable[[], bool],
        as_report: Callable[[int], PurgeReport],
    ) -> int:
        """Act on every event ``expiry`` has due at ``now``, a batch per short transaction.
        The events a worker will still run are walked past on the reader, once per run, one
        short query at a time, however many wait (a backlog behind a handler outage)."""
        total = 0
        after: tuple[float, int] = (-math.inf, 0)
        while not is_stopping():
            ids, after, is_done = await self._next_due(expiry, now, after)
            took = 0.0
            if ids:
                started = time.monotonic()
                params = (*expiry.act_params(now), self._handled_json, *ids)
                done = await self._db.transaction(
                    functools.partial(_act, expiry=expiry, ids=ids, params=params)
                )
                self._progress(as_report(done))
                total += done
                took = time.monotonic() - started
            if is_done:
                break
            # Rest as long as the write took: ingest gets the writer at least half the time.
            await self._sleep(took)
        return total

    def _progress(self, batch: PurgeReport) -> None:
        if self.on_progress is not None and batch != PurgeReport():
            self.on_progress(batch)

    def _is_pending(self, row: Sequence[object]) -> bool:
        status, provider = row[2], row[3]
        return status in _RUN_PENDING or (
            status == EventStatus.RECEIVED and provider in self._handled
        )

    async def _next_due(
        self, expiry: _Expiry, now: float, after: tuple[float, int]
    ) -> tuple[list[int], tuple[float, int], bool]:
        """The next batch of due events no run is pending for (at most ``batch_size``), where
        the walk got to, and whether it reached the end."""
        ids: list[int] = []
        limit = self._batch_size
        while True:
            async with self._db.reading() as conn:  # a query at a time: others read between
                rows = list(await conn.execute_fetchall(expiry.same_expiry(), (*after, limit)))
                if len(rows) < limit:
                    rows += await conn.execute_fetchall(
                        expiry.later_expiry(), (after[0], now, limit - len(rows))
                    )
            for row in rows:
                after = (float(row[1]), int(row[0]))
                if not self._is_pending(row):
                    ids.append(int(row[0]))
                    if len(ids) == limit:
                        return ids, after, False
            if len(rows) < limit:
                return ids, after, True

    async def _trim_rejections(self, is_stopping: Callable[[], bool]) -> int:
        total = 0
        while not is_stopping():
            started = time.monotonic()
            trimmed = await self._db.transaction(
                lambda conn: trim_rejections(
                    conn, keep=self._keep_rejections, limit=self._batch_size
                )
            )
            self._progress(PurgeReport(rejections_deleted=trimmed))
            total += trimmed
            if trimmed < self._batch_size:
                break
            await self._sleep(time.monotonic() - started)
        return total

    async def _apply_policies(self, is_stopping: Callable[[], bool]) -> None:
        """Move the stored expiries of every provider whose windows changed since they were last
        applied (in id ranges, one short transaction each, resting like the purge)."""
        async with self._db.reading() as conn:
            rows = await conn.execute_fetchall(
                "SELECT provider, payload_retention_s, dedupe_retention_s FROM retention_applied"
            )
        applied = {row[0]: (float(row[1]), float(row[2])) for row in rows}
        total = 0
        for name, policy in sorted(self._policies.items()):
            if applied.get(name) == policy.windows:
                continue
            moved = 0
            if await self._differs(name, policy):  # one read first, not a walk of writes
                walked = await self._reexpire_all(name, policy, is_stopping)
                if walked is None:
                    return  # stopped: not recorded, so the next run goes on from the start
                moved = walked
            await self._db.transaction(functools.partial(_record, provider=name, policy=policy))
            if moved:
                log.info("retention_policy_applied", provider=name, events=moved)
            total += moved
        self._is_policy_applied = True
        if total and self._on_policy_applied is not None:
            self._on_policy_applied()

    async def _reexpire_all(
        self, provider: str, policy: RetentionPolicy, is_stopping: Callable[[], bool]
    ) -> int | None:
        """Walk ``provider``'s events in id ranges; how many changed (None: asked to stop)."""
        after_id, moved = 0, 0
        while not is_stopping():
            started = time.monotonic()
            last = await self._db.transaction(
                functools.partial(_reexpire, provider=provider, policy=policy, after_id=after_id)
            )
            if last is None:
                return moved
            after_id, count = last
            moved += count
            await self._sleep(time.monotonic() - started)
        return None

    async def _differs(self, provider: str, policy: RetentionPolicy) -> bool:
        """Whether any stored event of ``provider`` has other windows than ``policy`` (after an
        upgrade, no record says; usually none does, and one scan on the reader tells)."""
        async with self._db.reading() as conn:
            rows = await conn.execute_fetchall(
                "SELECT EXISTS (SELECT 1 FROM events WHERE provider = ?"
                " AND (dedupe_expires_at != received_at + ?"
                " OR (payload_purged_at IS NULL"
                f" AND payload_expires_at != {_PAYLOAD_KEPT_FROM} + ?)))",
                (provider, policy.dedupe_retention_s, policy.payload_retention_s),
            )
        return bool(next(iter(rows))[0])


def _marks(n: int) -> str:
    return ",".join("?" * n)


async def _act(
    conn: aiosqlite.Connection, *, expiry: _Expiry, ids: Sequence[int], params: Sequence[object]
) -> int:
    """``expiry``'s act on ``ids`` (each condition checked again), then its follow-up on those
    it took; how many it took."""
    rows = await conn.execute_fetchall(expiry.act.format(ids=_marks(len(ids))), params)
    acted = [int(row[0]) for row in rows]
    if acted and expiry.then is not None:
        await conn.execute(expiry.then.format(ids=_marks(len(acted))), acted)
    return len(acted)


_REEXPIRE_RANGE = 2000


async def _reexpire(
    conn: aiosqlite.Connection, *, provider: str, policy: RetentionPolicy, after_id: int
) -> tuple[int, int] | None:
    """The next id range of ``provider``'s events, their expiries moved to ``policy``: the
    range's last id and how many events changed, or None when there is none left."""
    rows = await conn.execute_fetchall(
        "SELECT id FROM events WHERE provider = ? AND id > ? ORDER BY id LIMIT ?",
        (provider, after_id, _REEXPIRE_RANGE),
    )
    ids = [int(row[0]) for row in rows]
    if not ids:
        return None
    payload_s, dedupe_s = policy.payload_retention_s, policy.dedupe_retention_s
    # One statement, so an event whose two windows both change is written (and counted) once.
    changed = await conn.execute(
        "UPDATE events SET dedupe_expires_at = received_at + :dedupe,"
        " payload_expires_at = CASE WHEN payload_purged_at IS NULL"
        f" THEN {_PAYLOAD_KEPT_FROM} + :payload ELSE payload_expires_at END"
        " WHERE provider = :provider AND id > :after AND id <= :last"
        " AND (dedupe_expires_at != received_at + :dedupe OR (payload_purged_at IS NULL"
        f" AND payload_expires_at != {_PAYLOAD_KEPT_FROM} + :payload))",
        {
            "dedupe": dedupe_s,
            "payload": payload_s,
            "provider": provider,
            "after": after_id,
            "last": ids[-1],
        },
    )
    return ids[-1], max(changed.rowcount, 0)


async def _record(conn: aiosqlite.Connection, *, provider: str, policy: RetentionPolicy) -> None:
    await conn.execute(
        "INSERT INTO retention_applied (provider, payload_retention_s, dedupe_retention_s)"
        " VALUES (?, ?, ?) ON CONFLICT (provider) DO UPDATE SET"
        " payload_retention_s = excluded.payload_retention_s,"
        " dedupe_retention_s = excluded.dedupe_retention_s",
        (provider, *policy.windows),
    )


class PurgeTask:
    """Runs :meth:`Retention.purge_once` every ``interval_s`` in one named, owned task."""

    def __init__(
        self,
        retention: Retention,
        *,
        interval_s: float = 60.0,
        on_report: Callable[[PurgeReport], None] | None = None,
        on_failure: Callable[[], None] | None = None,
    ) -> None:
        self._retention = retention
        self._interval_s = interval_s
        self._on_report = on_report
        self._on_failure = on_failure
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._stopping.clear()
            self._task = asyncio.create_task(self._run(), name="receiver-retention-purge")

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                report = await self._retention.purge_once(is_stopping=self._stopping.is_set)
            except StorageUnavailable as exc:
                log.warning("retention_purge_failed", cause=exc.detail)
                self._failed()
            except Exception as exc:  # any other: the purge must run again, not end for good
                log.error("retention_purge_failed", cause=type(exc).__name__, exc_info=exc)
                self._failed()
            else:
                if self._on_report is not None:
                    self._on_report(report)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval_s):
                    await self._stopping.wait()

    def _failed(self) -> None:
        if self._on_failure is not None:
            self._on_failure()

    async def stop(self) -> None:
        """Let a running batch finish its transaction, then return."""
        self._stopping.set()
        task, self._task = self._task, None
        if task is not None and not task.done():
            await asyncio.wait({task})
