"""The full-text index of bodies, kept up to date off the ingest path.

Indexing a body in the ingest transaction (an insert trigger) made every group commit also
write and merge FTS5 segments: about a sixth of the CPU of a new event, and WAL growth as the
merges grew with the index. Instead, ``fts_state.last_id`` records how far the index goes,
and this indexer adds the newer rows in batches of its own, every ``interval_s`` and whenever a
search is about to run (:meth:`catch_up`), so a search still sees every committed event.

Rows above ``last_id`` are not in the index yet: the delete and purge triggers leave them alone
(an FTS5 'delete' of content that was never indexed would corrupt the index), and the
indexer picks up whatever body they still have when it gets there. IDs only grow
(``AUTOINCREMENT``), so a row can never appear below ``last_id`` unindexed.
"""

from __future__ import annotations

__all__ = ["FtsIndexer"]

import asyncio
import contextlib
import sqlite3

import structlog

from receiver.errors import StorageUnavailable
from receiver.store.database import Database

log = structlog.get_logger("receiver.store")


def index_batch(conn: sqlite3.Connection, limit: int) -> int:
    """Index up to ``limit`` rows past ``last_id`` (on the writer thread); returns how many
    rows it moved past (with or without a body)."""
    (last_id,) = conn.execute("SELECT last_id FROM fts_state").fetchone()
    count, upto = conn.execute(
        "SELECT COUNT(*), MAX(id) FROM (SELECT id FROM events WHERE id > ? ORDER BY id LIMIT ?)",
        (last_id, limit),
    ).fetchone()
    if not count:
        return 0
    conn.execute(
        "INSERT INTO events_fts (rowid, body) SELECT id, CAST(body AS TEXT) FROM events"
        " WHERE id > ? AND id <= ? AND body IS NOT NULL",
        (last_id, upto),
    )
    conn.execute("UPDATE fts_state SET last_id = ?", (upto,))
    return int(count)


class FtsIndexer:
    def __init__(self, db: Database, *, batch_size: int = 2_000, interval_s: float = 1.0) -> None:
        self._db = db
        self._batch_size = batch_size
        self._interval_s = interval_s
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._has_new_rows = True  # rows committed before this process started

    @property
    def is_running(self) -> bool:
        return self._task is not None

    def note_new_rows(self) -> None:
        """Events were committed (wired to the store's commit notification)."""
        self._has_new_rows = True

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="receiver-fts-indexer")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()  # between batches (a batch in progress runs to its commit)
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def catch_up(self) -> None:
        """Index everything committed so far. Storage trouble is left to the caller's own query
        (which reports it) and to the next round."""
        async with self._lock:
            if not self._has_new_rows:
                return
            self._has_new_rows = False  # set again by commits made while this runs
            while True:
                # The index can be rebuilt from the rows: no fsync of its own (the next commit
                # of events syncs it along; a power cut only sends the indexer back a little).
                done = await self._db.transaction_sync(
                    lambda conn: index_batch(conn, self._batch_size), is_flushed=False
                )
                if done < self._batch_size:
                    return

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self.catch_up()
            except StorageUnavailable as exc:
                log.warning("fts_index_failed", error=exc.detail)
