"""The rejected-request journal: cause, provider, remote address, time and body size, never a body.

``record()`` is synchronous and only appends to a bounded in-memory buffer, so ingest never
waits for it. A named flusher task writes the buffer in one small transaction every
``flush_interval_s`` and trims the table to its newest ``keep`` rows in the same transaction.
When a flood outruns the buffer, the excess is dropped and counted rather than queued: the
journal is for spotting a misconfigured sender, not an exhaustive log (metrics count every
rejection).
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_KEEP_REJECTIONS",
    "Rejection",
    "RejectionJournal",
    "list_rejections",
    "trim_rejections",
]

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import aiosqlite
import structlog

from receiver.errors import StorageUnavailable
from receiver.store.database import Database
from receiver.store.filters import encode_cursor, iso_time
from receiver.store.queries import Page

log = structlog.get_logger("receiver.store")

DEFAULT_KEEP_REJECTIONS = 10_000
_PROVIDER_CHARS = 64


@dataclass(frozen=True, slots=True, kw_only=True)
class Rejection:
    id: int | None
    at_s: float
    provider: str | None
    cause: str
    remote_addr: str | None
    body_bytes: int | None

    def as_json(self) -> dict[str, object]:
        return {
            "id": str(self.id) if self.id is not None else None,
            "at": iso_time(self.at_s),
            "provider": self.provider,
            "cause": self.cause,
            "remote_addr": self.remote_addr,
            "body_bytes": self.body_bytes,
        }


async def trim_rejections(conn: aiosqlite.Connection, *, keep: int, limit: int) -> int:
    """Delete up to ``limit`` of the oldest rows beyond the newest ``keep``; returns how many."""
    rows = list(
        await conn.execute_fetchall(
            "SELECT id FROM rejections ORDER BY id DESC LIMIT 1 OFFSET ?", (keep,)
        )
    )
    if not rows:
        return 0
    cursor = await conn.execute(
        "DELETE FROM rejections WHERE id IN"
        " (SELECT id FROM rejections WHERE id <= ? ORDER BY id LIMIT ?)",
        (rows[0][0], limit),
    )
    return max(cursor.rowcount, 0)


class RejectionJournal:
    def __init__(
        self,
        db: Database,
        *,
        clock: Callable[[], float],
        flush_interval_s: float = 0.5,
        max_pending: int = 1000,
        keep: int = DEFAULT_KEEP_REJECTIONS,
        on_dropped: Callable[[int], None] | None = None,
    ) -> None:
        self._db = db
        self._clock = clock
        self._flush_interval_s = flush_interval_s
        self._max_pending = max_pending
        self._keep = keep
        self.on_dropped = on_dropped
        self._pending: list[Rejection] = []
        self._flusher: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()
        self.dropped = 0

    def record(
        self, *, cause: str, provider: str | None, remote_addr: str | None, body_bytes: int | None
    ) -> None:
        """Note one rejection. Never blocks, never raises, never grows past ``max_pending``."""
        if self._closing.is_set() or len(self._pending) >= self._max_pending:
            self._drop(1)
            return
        self._pending.append(
            Rejection(
                id=None,
                at_s=self._clock(),
                provider=provider[:_PROVIDER_CHARS] if provider else None,
                cause=cause,
                remote_addr=remote_addr or None,
                body_bytes=body_bytes,
            )
        )
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._run(), name="receiver-rejection-journal")

    def _drop(self, count: int) -> None:
        self.dropped += count
        if self.on_dropped is not None:
            self.on_dropped(count)

    async def _run(self) -> None:
        while self._pending:
            # Gather a batch for one interval (or until close) so a flood costs one commit.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._flush_interval_s):
                    await self._closing.wait()
            await self.flush()
            if self._closing.is_set():
                return

    async def flush(self) -> int:
        """Write what is pending now; returns how many rows were written."""
        batch, self._pending = self._pending, []
        if not batch:
            return 0

        async def write(conn: aiosqlite.Connection) -> None:
            await conn.executemany(
                "INSERT INTO rejections (at, provider, cause, remote_addr, body_bytes)"
                " VALUES (?, ?, ?, ?, ?)",
                [(r.at_s, r.provider, r.cause, r.remote_addr, r.body_bytes) for r in batch],
            )
            await trim_rejections(conn, keep=self._keep, limit=2 * len(batch))

        try:
            await self._db.transaction(write)
        except StorageUnavailable as exc:
            # The journal is best effort: a store that cannot take it must not hold it either.
            log.warning("rejection_journal_dropped", rows=len(batch), cause=exc.detail)
            self._drop(len(batch))
            return 0
        return len(batch)

    async def close(self) -> None:
        """Write what is pending and stop; later ``record()`` calls are dropped."""
        self._closing.set()
        flusher = self._flusher
        if flusher is not None and not flusher.done():
            await asyncio.wait({flusher})
        if self._db.is_open:
            await self.flush()


async def list_rejections(
    db: Database,
    *,
    cause: str | None = None,
    provider: str | None = None,
    since_s: float | None = None,
    until_s: float | None = None,
    before_id: int | None = None,
    limit: int = 50,
    now_s: float,
) -> Page[Rejection]:
    """Newest first, keyset-paginated like events."""
    where: list[str] = []
    params: list[object] = []
    for condition, value in (
        ("cause = ?", cause),
        ("provider = ?", provider),
        ("at >= ?", since_s),
        ("at < ?", until_s),
        ("id < ?", before_id),
    ):
        if value is not None:
            where.append(condition)
            params.append(value)
    sql = "SELECT id, at, provider, cause, remote_addr, body_bytes FROM rejections"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY id DESC LIMIT ?"
    async with db.reading() as conn:
        rows = list(await conn.execute_fetchall(sql, [*params, limit + 1]))
    items = [
        Rejection(
            id=row["id"],
            at_s=row["at"],
            provider=row["provider"],
            cause=row["cause"],
            remote_addr=row["remote_addr"],
            body_bytes=row["body_bytes"],
        )
        for row in rows[:limit]
    ]
    has_more = len(rows) > limit
    last_id = items[-1].id if items else None
    return Page(
        items=items,
        next_cursor=(
            encode_cursor("r", last_id, now_s=now_s) if has_more and last_id is not None else None
        ),
    )
