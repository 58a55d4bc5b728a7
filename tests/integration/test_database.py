"""The single writer's transactions: flushed for ingest, unflushed for job bookkeeping, and
all-or-nothing either way."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from receiver.errors import StorageUnavailable
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
