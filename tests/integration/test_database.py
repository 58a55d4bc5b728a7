"""The single writer's transactions: flushed for ingest, unflushed for job bookkeeping, and
all-or-nothing either way."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from receiver.errors import StartupError, StorageUnavailable
from receiver.store import database, migrations
from receiver.store.database import Database

FULL, NORMAL = 2, 1  # PRAGMA synchronous values


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(tmp_path / "receiver.db", synchronous="FULL")
    await database.open()
    yield database
    await database.close()


def _synchronous(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA synchronous").fetchone()[0])


async def test_ingest_transactions_wait_for_the_disk(db: Database) -> None:
    assert await db.transaction_sync(_synchronous) == FULL


async def test_coalesced_bookkeeping_skips_the_fsync_and_restores_the_setting(
    db: Database,
) -> None:
    seen = await asyncio.gather(*(db.coalesced(_synchronous) for _ in range(5)))
    assert seen == [NORMAL] * 5
    assert await db.transaction_sync(_synchronous) == FULL  # the next ingest commit flushes


async def test_a_configured_normal_is_never_made_stricter_or_looser(tmp_path: Path) -> None:
    database = Database(tmp_path / "receiver.db", synchronous="NORMAL")
    await database.open()
    try:
        assert await database.coalesced(_synchronous) == NORMAL
        assert await database.transaction_sync(_synchronous) == NORMAL
    finally:
        await database.close()


async def test_a_failing_group_member_rolls_back_the_whole_group(db: Database) -> None:
    await db.transaction_sync(lambda c: c.execute("CREATE TABLE t (x INTEGER)"))

    def insert(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO t VALUES (1)")

    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO no_such_table VALUES (1)")

    results = await asyncio.gather(
        db.coalesced(insert), db.coalesced(broken), return_exceptions=True
    )
    assert all(isinstance(r, StorageUnavailable) for r in results)
    assert (
        await db.transaction_sync(lambda c: c.execute("SELECT count(*) FROM t").fetchone()[0]) == 0
    )
    assert await db.coalesced(_synchronous) == NORMAL  # the writer is usable again
    assert await db.transaction_sync(_synchronous) == FULL


async def test_events_are_flushed_and_duplicate_counts_alone_are_not(tmp_path: Path) -> None:
    """A new event's commit waits for the disk; the write-back of duplicate counts answered
    from memory does not (it rides on the next flushed commit)."""
    import time

    from receiver.models import Accepted, Duplicate
    from receiver.store.sqlite import SqliteStore
    from tests.support.factories import new_event

    store = SqliteStore(tmp_path / "receiver.db")
    await store.open()
    flushes: list[bool] = []
    real = store.db.transaction_sync

    async def spy(work: Any, *, is_flushed: bool = True) -> Any:
        flushes.append(is_flushed)
        return await real(work, is_flushed=is_flushed)

    store.db.transaction_sync = spy  # type: ignore[method-assign]
    event = new_event("p", 1, now=time.time(), has_handler=False)
    try:
        assert isinstance(await store.record(event), Accepted)
        assert flushes == [True]
        assert isinstance(await store.record(event), Duplicate)  # answered from memory
        await store.writer.settle()  # the count's write-back
        assert flushes == [True, False]
        stored = await store.get_event(1)
        assert stored is not None and stored.duplicate_count == 1
    finally:
        await store.close()


def _insert(value: int) -> Any:
    return lambda conn: conn.execute("INSERT INTO t VALUES (?)", (value,)).rowcount


async def test_a_deferrable_write_waits_for_the_next_urgent_one_and_shares_its_commit(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(database, "DEFER_S", 30.0)  # however slow this machine is
    await db.transaction_sync(lambda c: c.execute("CREATE TABLE t (x INTEGER)"))
    transactions: list[bool] = []
    real = db.transaction_sync

    async def spy(work: Any, *, is_flushed: bool = True) -> Any:
        transactions.append(is_flushed)
        return await real(work, is_flushed=is_flushed)

    db.transaction_sync = spy  # type: ignore[method-assign]
    completion = asyncio.ensure_future(db.coalesced(_insert(1), is_urgent=False))
    await asyncio.sleep(0.05)  # the coalescer holds it, waiting for something urgent
    assert not completion.done()
    assert await db.coalesced(_insert(2)) == 1
    assert await completion == 1
    assert transactions == [False]  # one transaction for both (and no fsync of its own)


async def test_a_deferrable_write_alone_is_not_held_back_for_long(db: Database) -> None:
    await db.transaction_sync(lambda c: c.execute("CREATE TABLE t (x INTEGER)"))
    assert await asyncio.wait_for(db.coalesced(_insert(1), is_urgent=False), timeout=5) == 1
    rows = await db.transaction_sync(lambda c: c.execute("SELECT x FROM t").fetchall())
    assert [r[0] for r in rows] == [1]


async def test_a_cancelled_caller_does_not_cancel_its_groups_transaction(db: Database) -> None:
    await db.transaction_sync(lambda c: c.execute("CREATE TABLE t (x INTEGER)"))

    first = asyncio.ensure_future(db.coalesced(_insert(1)))
    second = asyncio.ensure_future(db.coalesced(_insert(2)))
    await asyncio.sleep(0)  # both joined the group
    first.cancel()
    assert await second == 1
    with pytest.raises(asyncio.CancelledError):
        await first
    rows = await db.transaction_sync(lambda c: c.execute("SELECT x FROM t ORDER BY x").fetchall())
    assert [r[0] for r in rows] == [1, 2]  # the cancelled caller's write committed all the same


async def test_the_wal_file_is_cut_back_after_a_spike(db: Database) -> None:
    """One large transaction grows the WAL far past its usual size; the next checkpoint cuts
    the file back instead of keeping the disk space for good."""
    from receiver.store.database import WAL_SIZE_LIMIT_BYTES

    wal = f"{db.path}-wal"
    await db.transaction_sync(lambda c: c.execute("CREATE TABLE big (b BLOB)"))
    blob = b"x" * 100_000
    await db.transaction_sync(
        lambda c: c.executemany("INSERT INTO big VALUES (?)", [(blob,)] * 120)
    )
    assert await asyncio.to_thread(os.path.getsize, wal) > 2 * WAL_SIZE_LIMIT_BYTES
    await db.transaction_sync(lambda c: c.execute("DELETE FROM big"))
    # The auto-checkpoint ran at that commit; the next writer restarts the WAL and truncates it.
    await db.transaction_sync(lambda c: c.execute("INSERT INTO big VALUES (x'00')"))
    assert await asyncio.to_thread(os.path.getsize, wal) <= WAL_SIZE_LIMIT_BYTES


async def test_a_read_only_database_is_not_reported_writable(db: Database) -> None:
    """An empty write transaction succeeds on a read-only file; readiness must not."""
    import aiosqlite

    assert await db.unwritable_reason() is None
    writable = db._writer
    read_only = await aiosqlite.connect(f"file:{db.path}?mode=ro", uri=True, isolation_level=None)
    db._writer = read_only
    try:
        assert await db.unwritable_reason() == "the database is read-only"
    finally:
        db._writer = writable
        await read_only.close()
    assert await db.unwritable_reason() is None


async def test_an_older_search_index_is_rebuilt_with_decoded_text(tmp_path: Path) -> None:
    """Version 5 re-indexes what version 2 indexed raw: stored events become findable by the
    words their JSON escapes hid, and a purge afterwards leaves nothing behind in the index."""
    path = tmp_path / "old.db"
    body = b'{"comment": "first line\\nsecond line M\\u00fcller"}'
    with sqlite3.connect(path, isolation_level=None) as conn:
        for version in range(1, 5):
            for statement in migrations.split_sql(migrations.migrations()[version]):
                conn.execute(statement)
        conn.execute(
            "INSERT INTO events (provider, key, provider_event_id, fingerprint, body, status,"
            " received_at, last_seen_at, payload_expires_at, dedupe_expires_at)"
            " VALUES ('p', 'p:1', '1', 'f', ?, 'received', 0, 0, 0, 0)",
            (body,),
        )
        conn.execute("PRAGMA user_version = 4")
        old = conn.execute("SELECT rowid FROM events_fts WHERE events_fts MATCH 'second'")
        assert old.fetchall() == []
    db = Database(path)
    await db.open()
    await db.close()
    with sqlite3.connect(path) as conn:
        match = "SELECT rowid FROM events_fts WHERE events_fts MATCH ?"
        assert conn.execute(match, ("second",)).fetchall() == [(1,)]
        assert conn.execute(match, ('"Müller"',)).fetchall() == [(1,)]
        conn.execute("DELETE FROM payloads")  # a payload purge
        assert conn.execute(match, ("second",)).fetchall() == []
        conn.execute("INSERT INTO events_fts (events_fts) VALUES ('integrity-check')")


def _older_file(path: Path) -> Path:
    """A database one schema version behind this receiver's."""
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        for version in range(1, migrations.SCHEMA_VERSION):
            for statement in migrations.split_sql(migrations.migrations()[version]):
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {migrations.SCHEMA_VERSION - 1}")
    return path


async def test_an_older_file_another_process_has_open_is_not_upgraded(tmp_path: Path) -> None:
    """Releases before the instance lock took none: a new server upgraded the file under an
    older one still serving it, which went on writing and could not start on it again."""
    path = _older_file(tmp_path / "old.db")
    older = subprocess.Popen(  # noqa: ASYNC220 - an older receiver: the file open, idle
        [
            sys.executable,
            "-c",
            "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]);"
            " c.execute('SELECT count(*) FROM events').fetchall();"
            " print('open', flush=True); sys.stdin.read()",
            str(path),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert older.stdout is not None and older.stdout.readline() == b"open\n"
        with pytest.raises(StartupError, match="another process has it open"):
            await Database(path).open()
    finally:
        older.communicate(b"")
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == migrations.SCHEMA_VERSION - 1
    db = Database(path)
    with structlog.testing.capture_logs() as logs:
        await db.open()  # stopped: upgraded now, and said so
    await db.close()
    steps = [(e["event"], e["version"]) for e in logs if e["event"].startswith("schema_")]
    last = migrations.SCHEMA_VERSION
    assert steps == [("schema_migrating", last), ("schema_migrated", last)]


async def test_a_step_another_process_applied_while_this_one_waited_is_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two starts at once (a CLI command beside a starting server) both read the old version;
    the second ran the step again once it got the lock: the index rebuilt twice on a live
    server, or an error (a column or table already there)."""
    path = _older_file(tmp_path / "race.db")
    # The other process opens the file after this one looked for others (it refuses to
    # upgrade a file another process already has open: see below).
    monkeypatch.setattr(database, "_refuse_upgrade_while_open_elsewhere", lambda path: None)
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # the other process, migrating
        db = Database(path, busy_timeout_s=10)
        opening = asyncio.create_task(db.open())
        await asyncio.sleep(0.5)  # it has read the old version and waits for the lock
        assert not opening.done()
        last = migrations.migrations()[migrations.SCHEMA_VERSION]
        for statement in migrations.split_sql(last):
            other.execute(statement)
        other.execute(f"PRAGMA user_version = {migrations.SCHEMA_VERSION}")
        other.execute("COMMIT")
        await asyncio.wait_for(opening, timeout=10)
        await db.close()
    finally:
        other.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == migrations.SCHEMA_VERSION


async def test_a_stop_as_a_failed_open_closes_its_connection_leaves_that_error_to_tell(
    tmp_path: Path,
) -> None:
    """A SIGTERM landing just as an open that failed (a full disk) closed its connection
    interrupted the closed connection: ``ValueError: no active connection`` replaced the
    real error."""
    import aiosqlite

    db = Database(tmp_path / "receiver.db")
    closed = await aiosqlite.connect(tmp_path / "other.db")
    await closed.close()
    db._opening_writer = closed  # where a failing open() had it, closing
    await db.abandon_open()  # no error of its own
