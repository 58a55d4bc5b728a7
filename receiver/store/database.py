"""The SQLite database: connections, pragmas, migrations, and the single writer.

One writer connection serialises every write (ingest batches, worker claims, purges) behind an
``asyncio.Lock``; a separate reader connection serves queries, so admin reads never wait for
a commit (WAL). Driver errors are translated into :class:`~receiver.errors.StorageUnavailable`
here and nowhere else.
"""

from __future__ import annotations

__all__ = ["SCHEMA_VERSION", "Database", "storage_error"]

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import TypeVar

import aiosqlite

from receiver.errors import StorageUnavailable

T = TypeVar("T")

SCHEMA_VERSION = 1


def _migrations() -> dict[int, str]:
    """Forward migrations by target version. Version 1 is the whole schema."""
    schema = resources.files("receiver.store").joinpath("schema.sql").read_text("utf-8")
    return {1: schema}


def storage_error(exc: BaseException, *, retry_after_s: int) -> StorageUnavailable:
    """A driver error in plain words, without SQL or values."""
    text = str(exc).lower()
    if "full" in text:
        detail = "the database is full"
    elif "locked" in text or "busy" in text:
        detail = "the database is locked by another writer"
    elif "i/o" in text or "disk" in text:
        detail = "the database had an I/O error"
    elif "readonly" in text or "read-only" in text:
        detail = "the database is read-only"
    else:
        detail = "the database refused the write"
    return StorageUnavailable(detail, retry_after_s=retry_after_s)


class Database:
    """Owns the connections. ``open()`` creates/migrates; ``close()`` is idempotent."""

    def __init__(
        self,
        path: Path,
        *,
        busy_timeout_s: float = 2.0,
        synchronous: str = "FULL",
        retry_after_s: int = 5,
    ) -> None:
        self.path = path
        self.busy_timeout_s = busy_timeout_s
        self.synchronous = synchronous
        self.retry_after_s = retry_after_s
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()
        self._read_lock = asyncio.Lock()
        self.has_fts = False

    async def _connect(self) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(self.path, isolation_level=None, timeout=self.busy_timeout_s)
        conn.row_factory = aiosqlite.Row
        await conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
        await conn.execute("PRAGMA foreign_keys = ON")
        return conn

    async def open(self) -> None:
        if self._writer is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            writer = await self._connect()
            try:
                await writer.execute("PRAGMA journal_mode = WAL")
                await writer.execute(f"PRAGMA synchronous = {self.synchronous}")
                await self._migrate(writer)
                self.has_fts = await self._probe_fts(writer)
                self._reader = await self._connect()
                await self._reader.execute("PRAGMA query_only = ON")
            except BaseException:
                await writer.close()
                raise
        except sqlite3.Error as exc:
            raise storage_error(exc, retry_after_s=self.retry_after_s) from exc
        self._writer = writer

    async def _probe_fts(self, conn: aiosqlite.Connection) -> bool:
        try:
            await conn.execute("CREATE VIRTUAL TABLE temp.fts_probe USING fts5(x)")
            await conn.execute("DROP TABLE temp.fts_probe")
        except sqlite3.OperationalError:
            return False
        return True

    async def _migrate(self, conn: aiosqlite.Connection) -> None:
        async with conn.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        current = int(row[0]) if row else 0
        if current > SCHEMA_VERSION:
            raise RuntimeError(
                f"database schema version {current} is newer than this receiver "
                f"({SCHEMA_VERSION}); upgrade receiver"
            )
        for version, script in sorted(_migrations().items()):
            if version <= current:
                continue
            await conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in _split_sql(script):
                    await conn.execute(statement)
                await conn.execute(f"PRAGMA user_version = {version}")
                await conn.execute("COMMIT")
            except BaseException:
                await conn.execute("ROLLBACK")
                raise

    async def close(self) -> None:
        writer, reader = self._writer, self._reader
        self._writer = self._reader = None
        for conn in (reader, writer):
            if conn is not None:
                # Closing a broken connection: nothing is left to save.
                with contextlib.suppress(sqlite3.Error):
                    await conn.close()

    @property
    def is_open(self) -> bool:
        return self._writer is not None

    def _require(self, conn: aiosqlite.Connection | None) -> aiosqlite.Connection:
        if conn is None:
            raise StorageUnavailable("the store is closed", retry_after_s=self.retry_after_s)
        return conn

    async def transaction(self, work: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        """Run ``work`` in one ``BEGIN IMMEDIATE`` transaction on the writer; commit or roll back.

        Any driver error becomes StorageUnavailable; nothing half-written survives.
        """
        async with self._write_lock:
            conn = self._require(self._writer)
            try:
                await conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise storage_error(exc, retry_after_s=self.retry_after_s) from exc
            try:
                result = await work(conn)
                await conn.execute("COMMIT")
            except BaseException as exc:
                await self._rollback(conn)
                if isinstance(exc, sqlite3.Error):
                    raise storage_error(exc, retry_after_s=self.retry_after_s) from exc
                raise
            return result

    async def _rollback(self, conn: aiosqlite.Connection) -> None:
        try:
            if conn.in_transaction:
                await conn.execute("ROLLBACK")
        except sqlite3.Error:  # already rolled back by SQLite itself (e.g. after SQLITE_FULL)
            pass

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[aiosqlite.Connection]:
        """The reader connection, for queries. Driver errors become StorageUnavailable."""
        async with self._read_lock:
            conn = self._require(self._reader)
            try:
                yield conn
            except sqlite3.Error as exc:
                raise storage_error(exc, retry_after_s=self.retry_after_s) from exc

    async def check_writable(self) -> bool:
        """True when a write transaction can be opened now (for /readyz)."""
        try:
            await self.transaction(_noop)
        except Exception:  # any failure means "not ready"; the reason is logged by the caller
            return False
        return True


async def _noop(conn: aiosqlite.Connection) -> None:
    return None


def _split_sql(script: str) -> list[str]:
    """Split a schema file into statements (it has no triggers or string literals with ';')."""
    lines = [line.split("--", 1)[0] for line in script.splitlines()]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
