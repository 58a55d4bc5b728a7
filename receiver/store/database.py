"""The SQLite database: connections, pragmas, running the migrations, and the single writer.

One writer connection serialises every write (ingest batches, worker claims, purges) behind an
``asyncio.Lock``; a separate reader connection serves queries, so admin reads never wait for
a commit (WAL). Driver errors are translated into :class:`~receiver.errors.StorageUnavailable`
here and nowhere else.
"""

from __future__ import annotations

__all__ = ["WAL_SIZE_LIMIT_BYTES", "Database", "storage_error"]

import asyncio
import contextlib
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar, cast

import aiosqlite
import structlog

from receiver.errors import StartupError, StorageUnavailable
from receiver.store import search_index
from receiver.store.migrations import SCHEMA_VERSION, migrations, split_sql

log = structlog.get_logger("receiver.store")

T = TypeVar("T")
_Coalesced = tuple[Callable[[sqlite3.Connection], Any], "asyncio.Future[object]"]

# How long a deferrable coalesced write (a job's completion) waits for an urgent one (a claim) to
# share its transaction, when nothing urgent is queued yet.
DEFER_S = 0.01
# SQLite checkpoints the WAL at 1 000 pages (4 MiB with 4 KiB pages): the file's usual size.
WAL_SIZE_LIMIT_BYTES = 4 * 1024 * 1024


def storage_error(exc: BaseException, *, retry_after_s: int) -> StorageUnavailable:
    """A driver error in plain words, without SQL or values."""
    text = str(exc).lower()
    if "malformed" in text or "not a database" in text:
        detail = "the database file is damaged (not a SQLite database, or corrupt)"
    elif "full" in text:
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
        search_index: bool = True,
    ) -> None:
        self.path = path
        self.search_index = search_index  # wanted; built or dropped when a server opens the file
        self.busy_timeout_s = busy_timeout_s
        self.synchronous = synchronous
        self.retry_after_s = retry_after_s
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()
        self._read_lock = asyncio.Lock()
        self.has_fts = False
        self._coalesce_queue: list[_Coalesced] = []
        self._coalescer: asyncio.Task[None] | None = None
        self._has_urgent = asyncio.Event()
        self._identity: tuple[int, int] | None = None  # (device, inode) of the file opened
        self._wal_identity: tuple[int, int] | None = None  # and of its WAL, once there is one
        self.lost: str | None = None  # why the file opened is no longer at ``path``
        self.was_created = False  # the last open made a new, empty file
        self._opening = False  # open() is running (migrating, perhaps, for minutes)
        self._opening_writer: aiosqlite.Connection | None = None
        self._is_abandoned = False  # a stop asked for while opening: give up, roll back
        self._step: str | None = None  # what a stop while opening rolls back, in words
        self.wal_path = _wal_of(path)  # as SQLite names it: after the file a symlink points to

    async def _connect(self) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(self.path, isolation_level=None, timeout=self.busy_timeout_s)
        conn.row_factory = aiosqlite.Row
        await conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
        await conn.execute("PRAGMA foreign_keys = ON")
        return conn

    async def open(self, *, migrate: bool = True) -> None:
        """Open the database, creating its schema in a new file. An older schema is migrated,
        or, without ``migrate`` (an operations command), refused: a one-off read must not
        upgrade the file under a running older server, which could then not restart on it."""
        if self._writer is not None:
            return
        if migrate:  # a server: the file is made here when new
            _create_private(self.path)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._opening = True
        try:
            await self._open(migrate=migrate)
        finally:
            self._opening = False

    async def _open(self, *, migrate: bool) -> None:
        try:
            if migrate:
                await asyncio.to_thread(_refuse_upgrade_while_open_elsewhere, self.path)
            writer = self._opening_writer = await self._connect()
            try:
                if not migrate:  # an operations command: refuse another file before writing
                    await self._migrate(writer, is_allowed=False)
                await writer.execute("PRAGMA journal_mode = WAL")
                await writer.execute(f"PRAGMA synchronous = {self.synchronous}")
                # After a checkpoint, cut the WAL file back to its usual size: a spike (a large
                # full-text merge, a reader holding a snapshot) must not keep the disk space.
                await writer.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT_BYTES}")
                is_new = False
                if migrate:
                    is_new = await self._migrate(writer, is_allowed=True)
                    self.was_created = is_new
                    await _probe_write(writer)  # refuse to start on a file it cannot write
                self.has_fts = await self._probe_fts(writer)
                if migrate:
                    await self._settle_search_index(writer, is_new=is_new)
                self._reader = await self._connect()
                await self._reader.execute("PRAGMA query_only = ON")
            except BaseException:
                self._opening_writer = None  # closed next: nothing left to interrupt
                self._writer = writer
                await self.close()  # both connections: their threads would outlive the error
                raise
        except sqlite3.Error as exc:
            if self._is_abandoned:
                raise _abandoned(self.path, self._step) from None
            detail = storage_error(exc, retry_after_s=self.retry_after_s).detail
            # The path, for the operator: this runs at start only, never in an answer.
            raise StorageUnavailable(
                f"{detail}: {self.path}", retry_after_s=self.retry_after_s
            ) from exc
        finally:
            self._opening_writer = None
        self._writer = writer
        self._identity = _identity(self.path)
        self._wal_identity = _identity_or_none(self.wal_path)

    async def abandon_open(self) -> None:
        """Give up an ``open()`` in progress (a stop asked for during a long migration): the
        statement running is interrupted, its step rolled back, and ``open()`` raises. A
        server stopped mid-upgrade then exits at once, not minutes later or killed."""
        self._is_abandoned = True
        writer = self._opening_writer
        if writer is not None:
            # Closed meanwhile by a failure of its own, whose error is the one to tell.
            with contextlib.suppress(ValueError, sqlite3.ProgrammingError):
                await writer.interrupt()

    def check_file(self) -> None:
        """Raise when the file at ``path``, or its WAL, is no longer the one opened (deleted,
        moved or replaced while serving): SQLite keeps writing to the open files, which nobody
        will find again (a WAL deleted takes every commit not yet checkpointed with it), so
        nothing may be acknowledged from here on. SQLite itself never removes the WAL while a
        connection is open. Once seen, it stays so until a restart opens whatever is there."""
        if self.lost is None and self._identity is not None:
            try:
                now = _identity(self.path)
            except OSError:
                now = None
            if now != self._identity:
                self.lost = (
                    f"the database file {self.path} was deleted, moved or replaced while the"
                    " receiver was running: restart it"
                )
                log.error("database_file_lost", path=str(self.path))
            elif self._wal_identity is not None:
                wal = self.wal_path
                if _identity_or_none(wal) != self._wal_identity:
                    self.lost = (
                        f"the database's write-ahead log {wal} was deleted, moved or replaced"
                        " while the receiver was running: what it held is lost; restart it"
                    )
                    log.error("database_file_lost", path=str(wal))
            else:  # no WAL at open (an operations command that only read): from its first
                self._wal_identity = _identity_or_none(self.wal_path)
        if self.lost is not None:
            raise StorageUnavailable(
                "the database file is gone; the receiver must be restarted",
                retry_after_s=self.retry_after_s,
            )

    async def _probe_fts(self, conn: aiosqlite.Connection) -> bool:
        try:
            await conn.execute("CREATE VIRTUAL TABLE temp.fts_probe USING fts5(x)")
            await conn.execute("DROP TABLE temp.fts_probe")
        except sqlite3.OperationalError:
            return False
        return True

    async def _migrate(self, conn: aiosqlite.Connection, *, is_allowed: bool) -> bool:
        """Bring the schema to this version; True when the file was new (its schema created)."""
        current = await _user_version(conn)
        if current > SCHEMA_VERSION:
            raise StartupError(
                f"the database {self.path} has schema version {current}, newer than this"
                f" receiver's ({SCHEMA_VERSION}): upgrade receiver"
            )
        if current == 0 and not is_allowed:
            raise StartupError(
                f"{self.path} is not a receiver database (it has no schema version):"
                " is storage.path right?"
            )
        if 0 < current < SCHEMA_VERSION and not is_allowed:
            raise StartupError(
                f"the database {self.path} has schema version {current}, older than this"
                f" receiver's ({SCHEMA_VERSION}): `receiver serve` upgrades it when it starts"
            )
        is_upgrade = current > 0  # a new file gets its schema silently
        for version, script in sorted(migrations(search_index=self.search_index).items()):
            if version <= current:
                continue
            started = time.monotonic()
            if is_upgrade:
                log.info("schema_migrating", path=str(self.path), version=version, current=current)
            self._step = (
                f"upgrading the schema of {self.path} to version {version}: that step was rolled"
                f" back, the file is at version {current}, and the next start goes on from there"
            )
            await conn.execute("BEGIN IMMEDIATE")
            try:
                # Another process (a second start) may have applied it while this one waited
                # for the lock: run twice, a step rebuilds an index or fails on its own table.
                if await _user_version(conn) >= version:
                    await conn.execute("ROLLBACK")
                    self._step = None
                    continue
                await self._run_script(conn, script)
                await conn.execute(f"PRAGMA user_version = {version}")
                await conn.execute("COMMIT")
            except BaseException:
                # After a full disk SQLite has rolled back itself: a second ROLLBACK's own
                # error ("no transaction is active") hid the one to tell.
                await self._rollback(conn)
                raise
            self._step = None
            current = version
            if is_upgrade:
                duration_s = round(time.monotonic() - started, 3)
                log.info("schema_migrated", version=version, duration_s=duration_s)
        return not is_upgrade and current > 0  # created just now (an operations command: never)

    async def _settle_search_index(self, conn: aiosqlite.Connection, *, is_new: bool) -> None:
        """Build the full-text index over the stored bodies, or drop it, as ``search_index``
        asks (``storage.search_index`` changed since the last start; a new file's schema
        comes with one). One transaction; a stop meanwhile rolls it back and the next start
        does it again."""
        is_wanted = self.search_index and self.has_fts  # without FTS5: substring search only
        if await search_index.exists(conn) == is_wanted:
            return
        started = time.monotonic()
        doing = "building" if is_wanted else "dropping"
        if not is_new:
            log.info("search_index_changing", path=str(self.path), action=doing)
        self._step = (
            f"{doing} the search index of {self.path} (storage.search_index changed): that was"
            " rolled back, and the next start does it again"
        )
        await conn.execute("BEGIN IMMEDIATE")
        try:
            # Another start may have done it while this one waited for the lock.
            if await search_index.exists(conn) != is_wanted:
                await self._run_script(conn, search_index.BUILD if is_wanted else search_index.DROP)
            await conn.execute("COMMIT")
        except BaseException:
            await self._rollback(conn)
            raise
        self._step = None
        if not is_new:
            duration_s = round(time.monotonic() - started, 3)
            log.info("search_index_changed", action=doing, duration_s=duration_s)

    async def _run_script(self, conn: aiosqlite.Connection, script: str) -> None:
        """A step's statements, inside its transaction; a stop asked for between two of them
        gives up (the caller rolls back)."""
        for statement in split_sql(script):
            if self._is_abandoned:
                raise _abandoned(self.path, self._step)
            await conn.execute(statement)

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
            state = "still opening (an upgrade migrates it first)" if self._opening else "closed"
            raise StorageUnavailable(f"the store is {state}", retry_after_s=self.retry_after_s)
        return conn

    async def transaction(self, work: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        """Run ``work`` in one ``BEGIN IMMEDIATE`` transaction on the writer; commit or roll back.

        Any driver error becomes StorageUnavailable; nothing half-written survives. Cancelling the
        caller does not cancel the transaction: it runs to its COMMIT or ROLLBACK first (a cancel
        landing between BEGIN and ROLLBACK would leave the single writer inside a transaction and
        fail every later write).
        """
        return await _run_to_completion(self._transaction(work))

    async def transaction_sync(
        self, work: Callable[[sqlite3.Connection], T], *, is_flushed: bool = True
    ) -> T:
        """Like :meth:`transaction`, for plain ``sqlite3`` code: ``work`` runs on the writer's own
        thread, and BEGIN, ``work`` and COMMIT (or ROLLBACK) cross from the event loop to that
        thread once instead of once per statement. The ingest path's group commits use it.

        ``is_flushed=False`` commits without waiting for the disk (``synchronous = NORMAL`` for
        this transaction): the commit survives the process being killed, and the next flushed
        commit makes it durable against power loss too (the WAL is one file, synced whole).
        Only for what may be lost to a power cut: job bookkeeping (at-least-once processing runs
        the handler again) and duplicate counts.
        """
        return await _run_to_completion(self._transaction_sync(work, is_flushed=is_flushed))

    async def coalesced(
        self, work: Callable[[sqlite3.Connection], T], *, is_urgent: bool = True
    ) -> T:
        """Like :meth:`transaction_sync`, but small writes issued at the same time share one
        transaction (one commit, one hand-off to the writer thread): the worker's claims, job
        completions and lease renewals. ``work`` must not raise for its own reasons: a failure
        of any fails the whole group (nothing half-written).

        A write that is not ``is_urgent`` (a job's completion: its handler is done, the lease
        still protects the job) waits up to :data:`DEFER_S` for an urgent one (the next claim)
        and commits with it: a commit's cost is mostly its pages, and one transaction for a
        claim and the completions before it writes the shared pages once."""
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self._coalesce_queue.append((work, future))
        if is_urgent:
            self._has_urgent.set()
        if self._coalescer is None or self._coalescer.done():
            self._coalescer = asyncio.create_task(self._run_coalesced(), name="receiver-coalesce")
        # The future only reports: a cancelled caller cancels it, never the group's transaction
        # (the coalescer is its own task and skips futures that are already done).
        return cast(T, await future)

    async def _run_coalesced(self) -> None:
        while self._coalesce_queue:
            if not self._has_urgent.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(DEFER_S):
                        await self._has_urgent.wait()
            self._has_urgent.clear()
            group, self._coalesce_queue = self._coalesce_queue, []

            def run_all(conn: sqlite3.Connection, group: list[_Coalesced] = group) -> list[object]:
                return [work(conn) for work, _ in group]

            try:
                # Claims, completions and renewals: a power cut that loses one makes a handler
                # run again (at least once), never loses an event. No fsync of their own.
                results = await self.transaction_sync(run_all, is_flushed=False)
            except Exception as exc:
                for _, future in group:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(group, results, strict=True):
                if not future.done():
                    future.set_result(result)

    async def _transaction(self, work: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        async with self._write_lock:
            conn = self._require(self._writer)
            self.check_file()
            try:
                await conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise storage_error(exc, retry_after_s=self.retry_after_s) from exc
            try:
                result = await work(conn)
                await conn.execute("COMMIT")
                self.check_file()
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

    async def _transaction_sync(
        self, work: Callable[[sqlite3.Connection], T], *, is_flushed: bool
    ) -> T:
        async with self._write_lock:
            conn = self._require(self._writer)
            self.check_file()
            try:
                # aiosqlite runs each call on the connection's thread; ``_execute`` is the one
                # entry point that takes a whole function rather than one statement.
                run_on_thread: Callable[..., Awaitable[T]] = conn._execute
                return await run_on_thread(self._in_writer_thread, conn, work, is_flushed)
            except sqlite3.Error as exc:
                raise storage_error(exc, retry_after_s=self.retry_after_s) from exc

    def _in_writer_thread(
        self,
        conn: aiosqlite.Connection,
        work: Callable[[sqlite3.Connection], T],
        is_flushed: bool,
    ) -> T:
        raw = conn._conn
        is_relaxed = not is_flushed and self.synchronous in ("FULL", "EXTRA")
        if is_relaxed:
            raw.execute("PRAGMA synchronous = NORMAL")
        try:
            raw.execute("BEGIN IMMEDIATE")
            try:
                result = work(raw)
                self._commit(raw)
            except BaseException:
                if raw.in_transaction:
                    with contextlib.suppress(sqlite3.Error):  # already rolled back by SQLite
                        raw.execute("ROLLBACK")
                raise
        finally:
            if is_relaxed:
                raw.execute(f"PRAGMA synchronous = {self.synchronous}")
        return result

    def _commit(self, raw: sqlite3.Connection) -> None:
        """COMMIT on the writer thread: the fsync, where a failing disk surfaces. Then the file
        must still be the one at ``path``, or the caller may not acknowledge what it wrote."""
        raw.execute("COMMIT")
        self.check_file()

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[aiosqlite.Connection]:
        """The reader connection, for queries. Driver errors become StorageUnavailable."""
        async with self._read_lock:
            conn = self._require(self._reader)
            try:
                yield conn
            except sqlite3.Error as exc:
                raise storage_error(exc, retry_after_s=self.retry_after_s) from exc

    async def unwritable_reason(self) -> str | None:
        """None when a write can be committed now (for /readyz); else why not."""
        try:
            await self.transaction(_rewrite_header)
        except StorageUnavailable as exc:
            return exc.detail
        except Exception as exc:  # any failure means "not ready"
            return storage_error(exc, retry_after_s=self.retry_after_s).detail
        return None


async def _user_version(conn: aiosqlite.Connection) -> int:
    async with conn.execute("PRAGMA user_version") as cur:
        row = await cur.fetchone()
    return int(row[0]) if row else 0


def _abandoned(path: Path, step: str | None) -> StartupError:
    if step is None:
        return StartupError(f"stopped while opening {path}; its schema was not being changed")
    return StartupError(f"stopped while {step}")


def _create_private(path: Path) -> None:
    """A new database is readable by its owner only (0600, its directory 0700 when made here):
    it holds every body and header received, and SQLite gives its WAL the same mode. A file
    that exists keeps the mode its owner gave it."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _identity(path: Path) -> tuple[int, int]:
    stat = os.stat(path)
    return stat.st_dev, stat.st_ino


def _wal_of(path: Path) -> Path:
    """The write-ahead log: SQLite names it after the file a symlink points to."""
    return Path(f"{path.resolve()}-wal")


def _identity_or_none(path: Path) -> tuple[int, int] | None:
    try:
        return _identity(path)
    except OSError:
        return None


def _refuse_upgrade_while_open_elsewhere(path: Path) -> None:
    """An older file is upgraded only when no other process has it open. Releases before the
    instance lock took none: an older receiver still serving the file would go on writing to a
    schema it does not know, and could not start on it again. SQLite grants an exclusive lock
    (without the shared-memory index) only when no other connection holds the file open."""
    if not path.exists():
        return  # a new database
    with contextlib.closing(sqlite3.connect(path, timeout=1.0)) as conn:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if not 0 < version < SCHEMA_VERSION:
        return  # nothing to upgrade (or newer: refused once opened)
    probe = sqlite3.connect(path, timeout=1.0, isolation_level=None)
    try:
        probe.execute("PRAGMA locking_mode = EXCLUSIVE")
        probe.execute("BEGIN EXCLUSIVE")
        probe.execute("ROLLBACK")
    except sqlite3.OperationalError as exc:
        if "locked" not in str(exc) and "busy" not in str(exc):
            raise
        raise StartupError(
            f"the database {path} has schema version {version}, older than this receiver's"
            f" ({SCHEMA_VERSION}), and another process has it open (an older receiver still"
            " serving it, a sqlite3 shell, a backup or replication agent): stop it, then start"
            " this one again to upgrade the file"
        ) from None
    finally:
        probe.close()


async def _probe_write(conn: aiosqlite.Connection) -> None:
    """Commit one real page write, or raise: an up-to-date file needs no write to open, so a
    read-only one (a root-owned file, a read-only volume) would start and answer every
    delivery 503."""
    await conn.execute("BEGIN IMMEDIATE")
    try:
        await _rewrite_header(conn)
        await conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):  # the first error is the one to tell
            await conn.execute("ROLLBACK")
        raise


async def _rewrite_header(conn: aiosqlite.Connection) -> None:
    """Write the schema version back unchanged: a real page write, where an empty transaction
    succeeds even on a read-only file."""
    await conn.execute(f"PRAGMA user_version = {await _user_version(conn)}")


async def _run_to_completion(work: Coroutine[Any, Any, T]) -> T:
    """Await ``work`` as a task that a cancelled caller does not cancel: the caller's
    cancellation is re-raised only once the work has finished."""
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        if not task.done():
            await asyncio.wait({task})
        raise
