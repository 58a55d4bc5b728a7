"""The SQLite store: the database, the group-commit ingest writer and the reads."""

from __future__ import annotations

__all__ = ["SqliteStore"]

import asyncio
import time
from collections.abc import Callable, Collection, Mapping
from pathlib import Path

from receiver.models import IngestOutcome, NewEvent
from receiver.store.base import StoredEvent
from receiver.store.database import Database
from receiver.store.ingest_writer import IngestWriter
from receiver.store.queries import EVENT_WITH_PAYLOAD, EventQueries, row_to_event
from receiver.store.rejections import RejectionJournal
from receiver.store.replay import Replayer
from receiver.store.retention import Retention, RetentionPolicy


class SqliteStore:
    def __init__(
        self,
        path: Path,
        *,
        clock: Callable[[], float] = time.time,
        busy_timeout_s: float = 2.0,
        synchronous: str = "FULL",
        batch_max: int = 256,
        retry_after_s: int = 5,
        search_index: bool = True,
        on_batch: Callable[[int], None] | None = None,
        handled_providers: Collection[str] | None = None,
        retention_policies: Mapping[str, RetentionPolicy] | None = None,
        retention_clock: Callable[[], float] | None = None,
    ) -> None:
        self.clock = clock
        self.db = Database(
            path,
            busy_timeout_s=busy_timeout_s,
            synchronous=synchronous,
            retry_after_s=retry_after_s,
            search_index=search_index,
        )
        self._on_committed: list[Callable[[], None]] = []
        handled = None if handled_providers is None else frozenset(handled_providers)
        self.writer = IngestWriter(
            self.db,
            clock=clock,
            batch_max=batch_max,
            on_batch=on_batch,
            on_committed=self._notify_committed,
            # A quarter more than the lock wait: a batch stuck on the lock fails (and is
            # answered) on its own first; this bounds the deliveries queued behind it.
            answer_within_s=busy_timeout_s * 1.25,
        )
        # Operator components: reads on the reader, writes on the same single writer as ingest.
        self.queries = EventQueries(
            self.db, clock=clock, settle=self.writer.settle, handled=handled
        )
        self.replayer = Replayer(
            self.db,
            self.queries,
            clock=clock,
            on_committed=self._notify_committed,
            handled=handled,
        )
        self.retention = Retention(
            self.db,
            clock=retention_clock or clock,
            policies=retention_policies,
            on_policy_applied=self.writer.recent.clear,
            handled=handled or (),
        )
        self.rejections = RejectionJournal(self.db, clock=clock)
        # The readiness write in flight, shared by the probes that come while it waits.
        self._probe: asyncio.Task[str | None] | None = None
        self._probe_started = 0.0

    def on_committed(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` after a commit that queued new work (wakes the worker)."""
        self._on_committed.append(callback)

    def _notify_committed(self) -> None:
        for callback in self._on_committed:
            callback()

    async def open(self, *, serving: bool = True) -> None:
        """Open (creating or migrating) the database, and fill ingest's memory of committed
        keys. Not ``serving`` (a one-off command), nothing is filled (it ingests nothing) and
        an older schema is refused rather than migrated (see :meth:`Database.open`)."""
        await self.db.open(migrate=serving)
        if not serving:
            return
        try:
            await self._warm_recent_keys()
        except BaseException:
            await self.db.close()
            raise

    async def _warm_recent_keys(self) -> None:
        """After a restart, redeliveries of the newest events (a provider's retry storm) are
        answered from memory again: every row read here is committed."""
        limit = self.writer.recent.max_keys
        async with (
            self.db.reading() as conn,
            conn.execute(
                "SELECT key, id, fingerprint, dedupe_expires_at FROM events"
                " WHERE status != 'dead' ORDER BY id DESC LIMIT ?",
                (limit,),
            ) as cur,
        ):
            rows = list(await cur.fetchall())
        for key, event_id, fingerprint, expires_at in reversed(rows):
            self.writer.recent.remember(key, event_id, fingerprint, expires_at)

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()  # its write runs to its end all the same (Database.transaction)
        await self.rejections.close()
        await self.writer.close()
        await self.db.close()

    async def record(self, event: NewEvent) -> IngestOutcome:
        return await self.writer.record(event)

    async def get_event(self, event_id: int) -> StoredEvent | None:
        await self.writer.settle()
        async with (
            self.db.reading() as conn,
            conn.execute(EVENT_WITH_PAYLOAD, (event_id,)) as cur,
        ):
            row = await cur.fetchone()
        return row_to_event(row) if row is not None else None

    async def unwritable_reason(self) -> str | None:
        """Ready to store: ingest's last commit did not just fail, and a write commits now (the
        probe alone can pass on a full disk: one page still fits in the WAL)."""
        if (failure := self.writer.failure) is not None:
            return f"ingest's last group commit failed: {failure}"
        # Bounded: behind a lock another process holds, or on a disk that stopped answering,
        # the write waits in the writer's queue (behind ingest's and the worker's own, each
        # waiting out the busy timeout), and a probe that hangs past its own timeout tells
        # the orchestrator nothing; nor may each probe queue another write behind the first.
        if self._probe is None or self._probe.done():
            self._probe_started = time.monotonic()
            self._probe = asyncio.create_task(
                self.db.unwritable_reason(), name="receiver-readiness-write"
            )
        try:
            # As long as ingest gives a delivery (a lock's own error comes first, with its
            # words): see answer_within_s above. Counted from when the shared write began, so
            # a probe that waited behind another one's is answered at once.
            answer_by = self._probe_started + self.writer.answer_within_s
            async with asyncio.timeout(max(0.0, answer_by - time.monotonic())):
                return await asyncio.shield(self._probe)
        except TimeoutError:
            waited_s = time.monotonic() - self._probe_started
            return (
                f"a write has waited {waited_s:.1f} s to commit (the database is locked, or"
                " the disk is slow)"
            )
