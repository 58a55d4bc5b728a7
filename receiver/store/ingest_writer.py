"""Group commit for ingest: concurrent deliveries share one transaction.

Each ``record()`` call joins the pending list and waits. One flusher task takes up to
``batch_max`` pending events, writes them in one ``BEGIN IMMEDIATE`` … ``COMMIT`` (a multi-row
``INSERT … ON CONFLICT(key) DO NOTHING RETURNING``, their payloads and jobs, and the duplicate
bookkeeping) and only then resolves every waiter. While one batch commits, the next one fills
up, so the number of fsyncs per request falls as load rises.

Dedupe is the UNIQUE constraint, never check-then-insert. A duplicate in the same batch as its
original is answered after that batch commits; one in a later batch finds the committed row.

Every event is answered within ``answer_within_s`` (a little over the storage budget): one
still waiting for its commit then is answered 503, whether its batch is stuck (on a lock, on a
disk that does not return) or queued behind batches that are. One not yet in a batch is
withdrawn (the provider retries it); one whose batch is writing may still commit, and then the
provider's retry is a duplicate.
"""

from __future__ import annotations

__all__ = ["IngestWriter"]

import asyncio
import functools
import itertools
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import orjson
import structlog

from receiver.errors import StorageUnavailable
from receiver.models import Accepted, Duplicate, EventStatus, IngestOutcome, JobStatus, NewEvent
from receiver.store.database import Database
from receiver.store.recent import RecentKeys

log = structlog.get_logger("receiver.store")

_EVENT_COLUMNS = (
    "provider, key, provider_event_id, event_type, fingerprint, content_type, remote_addr, "
    "status, serialize_key, received_at, last_seen_at, requeue_dead, payload_expires_at, "
    "dedupe_expires_at"
)
_EVENT_PLACEHOLDERS = "(" + ",".join("?" * 14) + ")"


# How long a failed group commit keeps readiness off without a successful one since.
_FAILING_FOR_S = 10.0
# How soon duplicate counts whose write failed are tried again when nothing else comes.
_TOUCHES_RETRY_S = 1.0


@dataclass(slots=True)
class _Pending:
    event: NewEvent
    future: asyncio.Future[IngestOutcome]
    deadline: float  # loop time by which it is answered, committed or not


def _headers_json(ev: NewEvent) -> str:
    return orjson.dumps(dict(ev.headers)).decode("utf-8")


def _arrival_status(ev: NewEvent) -> EventStatus:
    return EventStatus.QUEUED if ev.has_handler else EventStatus.RECEIVED


def _event_row(ev: NewEvent) -> tuple[object, ...]:
    return (
        ev.provider,
        ev.key,
        ev.provider_event_id,
        ev.event_type,
        ev.fingerprint,
        ev.content_type,
        ev.remote,
        str(_arrival_status(ev)),
        ev.serialize_key,
        ev.received_at_s,
        ev.received_at_s,
        int(ev.requeue_dead),
        ev.payload_expires_at_s,
        ev.dedupe_expires_at_s,
    )


class IngestWriter:
    """Batches ``record()`` calls into group commits on the database's single writer."""

    def __init__(
        self,
        db: Database,
        *,
        clock: Callable[[], float],
        batch_max: int = 256,
        on_batch: Callable[[int], None] | None = None,
        on_committed: Callable[[], None] | None = None,
        recent_max: int = 100_000,
        answer_within_s: float = 2.0,
    ) -> None:
        self._db = db
        self.answer_within_s = answer_within_s
        self._clock = clock
        self._batch_max = batch_max
        self._on_batch = on_batch
        self._on_committed = on_committed
        self._pending: list[_Pending] = []
        self._committing: Sequence[_Pending] = ()
        self._deadline_timer: asyncio.TimerHandle | None = None
        # The last commit failed for the storage: when, and why.
        self._failed: tuple[float, str] | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._is_closed = False
        self.recent = RecentKeys(recent_max)
        self._settle_waiters: list[asyncio.Future[None]] = []

    def _start_flusher(self) -> asyncio.Task[None]:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="receiver-group-commit")
        return self._flusher

    def _retry_touches(self) -> None:
        if not self._is_closed and self.recent.has_touches:
            self._start_flusher()

    async def record(self, event: NewEvent) -> IngestOutcome:
        if self._is_closed:
            raise StorageUnavailable(
                "the receiver is shutting down", retry_after_s=self._db.retry_after_s
            )
        if self._db.lost is not None:  # what memory knows was committed to a file now gone
            self._db.check_file()
        known = self.recent.duplicate(event.key, event.fingerprint, now_s=self._clock())
        if known is not None:
            self._start_flusher()  # writes the duplicate count soon, off the answer's path
            return known
        loop = asyncio.get_running_loop()
        future: asyncio.Future[IngestOutcome] = loop.create_future()
        self._pending.append(_Pending(event, future, loop.time() + self.answer_within_s))
        self._start_flusher()
        # Armed here too, not only when a batch starts: behind a commit that never returns (a
        # disk that hangs) no batch starts, and a delivery arriving then waited for it.
        self._watch_deadlines()
        # The future only reports: a cancelled caller cancels it, never the batch's commit (the
        # flusher is its own task and skips futures that are already done).
        return await future

    @property
    def failure(self) -> str | None:
        """Why the last group commit failed for the storage (disk full, locked, I/O), if it did
        less than ``_FAILING_FOR_S`` ago. Bounded, so that readiness turned off for lack of
        traffic does not stay off: after that the readiness probe's own write decides again."""
        if self._failed is None or time.monotonic() - self._failed[0] >= _FAILING_FOR_S:
            return None
        return self._failed[1]

    async def settle(self) -> None:
        """Wait until duplicate counts answered from memory so far are written (for readers
        that want to see them: the admin API). Returns at once when nothing is pending."""
        if not self.recent.has_touches and (self._flusher is None or self._flusher.done()):
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._settle_waiters.append(waiter)
        self._start_flusher()
        await waiter

    async def _flush(self) -> None:
        batch: Sequence[_Pending] = ()
        try:
            while self._pending or self.recent.has_touches:
                batch = self._pending[: self._batch_max]
                del self._pending[: self._batch_max]
                waiters, self._settle_waiters = self._settle_waiters, []
                self._committing = batch
                self._watch_deadlines()
                try:
                    is_written = await self._commit(batch)
                finally:
                    self._committing = ()
                    for waiter in waiters:
                        if not waiter.done():
                            waiter.set_result(None)
                if not is_written and not self._pending:
                    # The counts kept for later must not retry in a loop on a failing disk: once
                    # more in a while, even if no delivery comes to carry them.
                    if not self._is_closed:
                        loop = asyncio.get_running_loop()
                        loop.call_later(_TOUCHES_RETRY_S, self._retry_touches)
                    break
        except Exception:
            # A fault of ours, not the storage's: the batch in hand is answered, not stranded
            # (the deadline timer goes with this task), and the flusher's end is logged, not
            # left to a task nobody awaits.
            log.exception("ingest_flusher_failed")
            self._fail(
                batch, StorageUnavailable("the write failed", retry_after_s=self._db.retry_after_s)
            )
            if self._pending and not self._is_closed:  # joined meanwhile: a new flusher
                asyncio.get_running_loop().call_soon(self._start_flusher)
        finally:
            if self._deadline_timer is not None:
                self._deadline_timer.cancel()
                self._deadline_timer = None
        for waiter in self._settle_waiters:  # registered while the last commit ran
            if not waiter.done():
                waiter.set_result(None)
        self._settle_waiters.clear()

    def _watch_deadlines(self) -> None:
        """Arm one timer for the oldest event still waiting (arrival order is deadline order)."""
        if self._deadline_timer is not None:
            return
        waiting = (
            p for p in itertools.chain(self._committing, self._pending) if not p.future.done()
        )
        oldest = next(waiting, None)
        if oldest is not None:
            loop = asyncio.get_running_loop()
            self._deadline_timer = loop.call_at(oldest.deadline, self._answer_overdue)

    def _answer_overdue(self) -> None:
        self._deadline_timer = None
        now = asyncio.get_running_loop().time()
        overdue = [
            p
            for p in itertools.chain(self._committing, self._pending)
            if p.deadline <= now and not p.future.done()
        ]
        if overdue:
            log.warning("ingest_commit_overdue", events=len(overdue), budget_s=self.answer_within_s)
            self._fail(
                overdue,
                StorageUnavailable(
                    f"the event was not committed within {self.answer_within_s:g} s"
                    " (the database is busy or locked)",
                    retry_after_s=self._db.retry_after_s,
                ),
            )
            # Those not yet in a batch are withdrawn: answered 503, their providers retry
            # them. Kept, each body stayed in memory (past ``body_memory_bytes``, which no
            # longer counts an answered request) for as long as the storage stayed slow.
            self._pending = [p for p in self._pending if not p.future.done()]
        self._watch_deadlines()

    def _fail(self, batch: Sequence[_Pending], error: StorageUnavailable) -> None:
        for item in batch:
            if not item.future.done():
                item.future.set_exception(error)

    async def _commit(self, batch: Sequence[_Pending]) -> bool:
        """Write ``batch`` and the pending duplicate counts; False when nothing was written (the
        counts are kept for the next commit, the batch's events answered 503)."""
        touches = self.recent.take_touches()  # duplicates answered from memory since the last one
        write = functools.partial(
            _write_batch, events=[item.event for item in batch], touches=touches, now=self._clock()
        )
        try:
            # Events wait for the disk. Duplicate counts alone do not: the next commit of events
            # flushes them along (the WAL is synced whole), and a power cut may lose a few
            # increments, never an event.
            written = await self._db.transaction_sync(write, is_flushed=bool(batch))
        except StorageUnavailable as exc:
            self.recent.give_back(touches)
            if self._db.is_open:  # not a store still opening (migrating), or closed
                self._failed = (time.monotonic(), exc.detail)
            self._fail(batch, exc)
            return False
        except Exception:
            self.recent.give_back(touches)
            if len(batch) > 1:
                # Not the storage but one event's data: commit each alone, so only it fails.
                results = [await self._commit([item]) for item in batch]
                return any(results)
            log.exception("ingest_write_failed")
            self._fail(
                batch,
                StorageUnavailable(
                    "the database refused the write", retry_after_s=self._db.retry_after_s
                ),
            )
            return False
        except BaseException:
            self.recent.give_back(touches)
            self._fail(
                batch,
                StorageUnavailable(
                    "the receiver is shutting down", retry_after_s=self._db.retry_after_s
                ),
            )
            raise
        self._failed = None
        if not batch:
            return True
        uncounted: list[tuple[int, float, int]] = []
        for item, outcome in zip(batch, written.outcomes, strict=True):
            if not item.future.done():
                item.future.set_result(outcome)
            elif isinstance(outcome, Duplicate):
                # Answered 503 while its batch waited (past the budget), yet counted as a
                # duplicate when the batch committed: its retry will count. Undone with the
                # next write of counts.
                uncounted.append((-1, item.event.received_at_s, outcome.id))
        # Answered first (no answer leaves before this call returns): the bookkeeping below
        # is not the events' to fail.
        self._after_commit(batch, written, uncounted)
        return True

    def _after_commit(
        self,
        batch: Sequence[_Pending],
        written: _Written,
        uncounted: list[tuple[int, float, int]],
    ) -> None:
        if self._on_batch is not None:
            self._on_batch(len(batch))
        for entry in written.committed_keys:  # on disk now: redeliveries may skip the store
            self.recent.remember(*entry)
        if uncounted:
            self.recent.give_back(uncounted)
        if self._on_committed is not None and any(
            isinstance(o, Accepted) or o.requeued for o in written.outcomes
        ):
            self._on_committed()

    async def close(self) -> None:
        """Stop taking new events and wait for the pending ones to commit; duplicate counts
        still unwritten (an earlier write of them failed) get one last try."""
        self._is_closed = True
        flusher = self._flusher
        if flusher is not None and not flusher.done():
            await asyncio.wait({flusher})
        if self.recent.has_touches:
            await asyncio.wait({self._start_flusher()})


# ----------------------------------------------------------------------------- on the writer thread
# Plain sqlite3 code run by Database.transaction_sync: one batch, BEGIN to COMMIT, in one call.


@dataclass(frozen=True, slots=True)
class _Written:
    outcomes: list[IngestOutcome]
    # (key, event id, fingerprint, dedupe expiry) of every event now known committed.
    committed_keys: list[tuple[str, int, str, float]]


_INSERT_JOB = (
    "INSERT INTO jobs (event_id, provider, status, run_at, enqueued_at, serialize_key,"
    f" updated_at) VALUES (?, ?, '{JobStatus.QUEUED}', ?, ?, ?, ?)"
)


@functools.lru_cache(maxsize=64)
def _insert_events_sql(rows: int) -> str:
    return (
        f"INSERT INTO events ({_EVENT_COLUMNS}) VALUES "
        + ",".join([_EVENT_PLACEHOLDERS] * rows)
        + " ON CONFLICT(key) DO NOTHING RETURNING id, key"
    )


@functools.lru_cache(maxsize=64)
def _insert_payloads_sql(rows: int) -> str:
    # One statement for the batch: the full-text index's trigger runs in it at no extra cost.
    return "INSERT INTO payloads (event_id, body, headers) VALUES " + ",".join(["(?, ?, ?)"] * rows)


def _store_payloads(conn: sqlite3.Connection, payloads: Sequence[tuple[int, NewEvent]]) -> None:
    if payloads:
        conn.execute(
            _insert_payloads_sql(len(payloads)),
            [v for event_id, ev in payloads for v in (event_id, ev.body, _headers_json(ev))],
        )


def _write_batch(
    conn: sqlite3.Connection,
    *,
    events: Sequence[NewEvent],
    touches: Sequence[tuple[int, float, int]],
    now: float,
) -> _Written:
    if touches:
        conn.executemany(
            "UPDATE events SET duplicate_count = duplicate_count + ?,"
            " last_seen_at = MAX(last_seen_at, ?) WHERE id = ?",
            touches,
        )
    committed: list[tuple[str, int, str, float]] = []
    if not events:
        return _Written([], committed)
    # The first occurrence of each key in the batch is the candidate for insertion.
    firsts: dict[str, NewEvent] = {}
    for ev in events:
        firsts.setdefault(ev.key, ev)
    candidates = list(firsts.values())
    params = [value for ev in candidates for value in _event_row(ev)]
    inserted: dict[str, int] = {
        key: event_id
        for event_id, key in conn.execute(_insert_events_sql(len(candidates)), params).fetchall()
    }
    if inserted:
        _store_payloads(conn, [(inserted[ev.key], ev) for ev in candidates if ev.key in inserted])
        conn.executemany(
            _INSERT_JOB,
            [
                (
                    inserted[ev.key],
                    ev.provider,
                    ev.received_at_s,
                    ev.received_at_s,
                    ev.serialize_key,
                    now,
                )
                for ev in candidates
                if ev.key in inserted
            ],
        )
    # Everything else in the batch is a redelivery of a committed (or same-batch) event.
    claimed: set[str] = set()
    is_original: list[bool] = []
    for ev in events:
        first = ev.key in inserted and ev.key not in claimed
        if first:
            claimed.add(ev.key)
        is_original.append(first)
    duplicates = [ev for ev, first in zip(events, is_original, strict=True) if not first]
    dup_outcomes = iter(_record_duplicates(conn, duplicates, inserted, now, committed))
    outcomes: list[IngestOutcome] = []
    for ev, first in zip(events, is_original, strict=True):
        if first:
            outcomes.append(Accepted(id=inserted[ev.key], key=ev.key))
            committed.append((ev.key, inserted[ev.key], ev.fingerprint, ev.dedupe_expires_at_s))
        else:
            outcomes.append(next(dup_outcomes))
    return _Written(outcomes, committed)


def _record_duplicates(
    conn: sqlite3.Connection,
    duplicates: Sequence[NewEvent],
    inserted: dict[str, int],
    now: float,
    committed: list[tuple[str, int, str, float]],
) -> list[Duplicate]:
    if not duplicates:
        return []
    keys = sorted({ev.key for ev in duplicates})
    originals: dict[str, tuple[int, str, str, int, bool]] = {}
    for start in range(0, len(keys), 500):
        chunk = keys[start : start + 500]
        rows = conn.execute(
            "SELECT id, key, fingerprint, status, requeue_dead, dedupe_expires_at,"
            " payload_purged_at IS NOT NULL FROM events WHERE key IN ("
            + ",".join("?" * len(chunk))
            + ")",
            chunk,
        ).fetchall()
        for row in rows:
            originals[row[1]] = (row[0], row[2], row[3], row[4], bool(row[6]))
            if row[3] != EventStatus.DEAD:
                committed.append((row[1], row[0], row[2], row[5]))
    results: list[Duplicate] = []
    counts: dict[int, tuple[int, int]] = {}
    conflicts: list[tuple[int, str, float]] = []
    requeue: dict[int, NewEvent] = {}
    restore: list[tuple[int, NewEvent]] = []
    inserted_ids = set(inserted.values())
    for ev in duplicates:
        original = originals.get(ev.key)
        if original is None:  # purged between the insert and now: cannot happen in one txn
            raise StorageUnavailable("the original event vanished", retry_after_s=1)
        event_id, fingerprint, status, requeue_dead, is_purged = original
        is_conflict = fingerprint != ev.fingerprint
        dup, conf = counts.get(event_id, (0, 0))
        counts[event_id] = (dup + 1, conf + int(is_conflict))
        if is_conflict:
            conflicts.append((event_id, ev.fingerprint, now))
        is_requeued = (
            status == EventStatus.DEAD
            and bool(requeue_dead)
            and ev.requeue_dead
            and event_id not in requeue
            and event_id not in inserted_ids
            # A purged payload comes back with the same bytes re-sent; without them (another
            # body) there would be nothing to run: it stays dead.
            and not (is_purged and is_conflict)
        )
        if is_requeued:
            requeue[event_id] = ev
            if is_purged:
                restore.append((event_id, ev))
        results.append(
            Duplicate(id=event_id, key=ev.key, is_conflict=is_conflict, requeued=is_requeued)
        )
    conn.executemany(
        "UPDATE events SET duplicate_count = duplicate_count + ?,"
        " conflict_count = conflict_count + ?, last_seen_at = ? WHERE id = ?",
        [(dup, conf, now, event_id) for event_id, (dup, conf) in counts.items()],
    )
    if conflicts:
        conn.executemany(
            "INSERT INTO conflicts (event_id, fingerprint, seen_at) VALUES (?, ?, ?)", conflicts
        )
    if restore:
        _store_payloads(conn, restore)
        conn.executemany(
            "UPDATE events SET content_type = ?, payload_expires_at = ?,"
            " payload_restored_at = ?, payload_purged_at = NULL WHERE id = ?",
            [
                (ev.content_type, ev.payload_expires_at_s, ev.received_at_s, event_id)
                for event_id, ev in restore
            ],
        )
    if requeue:
        _requeue_dead(conn, requeue, now)
    return results


def _requeue_dead(conn: sqlite3.Connection, events: Mapping[int, NewEvent], now: float) -> None:
    """A provider redelivering a dead event says it still matters: queue it again (its event
    ``received`` when its provider has no handler now, as a new one would be)."""
    event_ids = list(events)
    conn.executemany(
        # Not a replay any more: its provider sent it (Receiver-Replay: false), whatever ran before.
        "UPDATE jobs SET status = 'queued', attempts = 0, is_replay = 0, run_at = ?,"
        " enqueued_at = ?, lease_token = NULL, lease_expires_at = NULL, updated_at = ?"
        " WHERE event_id = ?",
        [(now, now, now, event_id) for event_id in event_ids],
    )
    conn.executemany(
        "UPDATE events SET status = ? WHERE id = ?",
        [(str(_arrival_status(ev)), event_id) for event_id, ev in events.items()],
    )
    conn.executemany(
        "INSERT INTO requeues (event_id, at, cause) VALUES (?, ?, 'redelivery')",
        [(event_id, now) for event_id in event_ids],
    )
