"""Payloads live in a table of their own (schema 7): an event's status and counts change without
rewriting its body, and a file from before is upgraded with every body, header and search entry
where it belongs."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import aiosqlite
import pytest

from receiver.errors import StorageUnavailable
from receiver.models import Accepted, Duplicate
from receiver.store import database, migrations
from receiver.store.database import Database
from receiver.store.filters import EventFilter
from receiver.store.retention import _PAYLOAD_EXPIRY
from receiver.store.sqlite import SqliteStore
from tests.support.clock import SettableClock
from tests.support.factories import new_event
from tests.support.schema import build_schema

NOW = 1_700_000_000.0
BIG_BODY_BYTES = 100_000


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    opened = SqliteStore(tmp_path / "receiver.db", clock=SettableClock(NOW))
    await opened.open()
    yield opened
    await opened.close()


def _big_body() -> bytes:
    words = " ".join(f"word{i}" for i in range(BIG_BODY_BYTES // 8))
    return json.dumps({"type": "order.created", "note": words}).encode()


async def test_status_changes_do_not_rewrite_a_large_body(store: SqliteStore) -> None:
    """The worker changes an event's status two or three times, and every duplicate writes its
    count: with the body in the event's row each change wrote the whole body to the WAL again
    (SQLite rewrites a row whole when its size changes)."""
    body = _big_body()
    outcome = await store.record(new_event("shop", 1, now=NOW, body=body))
    assert isinstance(outcome, Accepted)
    await store.close()
    changes = 100
    written = _wal_bytes_of_changes(store.db.path, outcome.id, changes)
    # A rewritten body is 2 * 100 changes * 100 KB = 20 MB; a page or three per change is not.
    assert written < changes * len(body) / 4, written


def _wal_bytes_of_changes(path: Path, event_id: int, changes: int) -> int:
    """WAL bytes written by ``changes`` status changes and duplicate counts, a commit each."""
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        before = os.path.getsize(f"{path}-wal")
        for n in range(changes):
            status = ("processing", "retrying", "succeeded")[n % 3]
            conn.execute("UPDATE events SET status = ? WHERE id = ?", (status, event_id))
            conn.execute(
                "UPDATE events SET duplicate_count = duplicate_count + ? WHERE id = ?",
                (300 * n, event_id),  # its stored size grows with the number
            )
        return os.path.getsize(f"{path}-wal") - before


async def test_a_purged_or_deleted_event_leaves_no_payload_or_search_entry(
    store: SqliteStore,
) -> None:
    clock = store.clock
    assert isinstance(clock, SettableClock)
    for n in range(3):
        await store.record(new_event("shop", n, now=NOW, body=b'{"note": "findme"}'))
    found = await store.queries.list_events(
        EventFilter(text="findme"), before_id=None, limit=10, now_s=NOW
    )
    assert len(found.items) == 3
    await store.db.transaction(_all_done)  # nothing left to run: the payloads may go
    clock.now = NOW + 2 * 86_400  # past the payload window, inside the dedupe window
    report = await store.retention.purge_once()
    assert report.payloads_purged == 3
    detail = await store.get_event(1)
    assert detail is not None
    assert (detail.body, detail.headers) == (None, None)
    assert detail.payload_purged_at_s == clock.now
    found = await store.queries.list_events(
        EventFilter(text="findme"), before_id=None, limit=10, now_s=clock.now
    )
    assert found.items == []
    assert (await store.record(new_event("shop", 1, now=clock.now))).__class__ is Duplicate
    clock.now = NOW + 60 * 86_400  # past the dedupe window: the events go
    report = await store.retention.purge_once()
    assert report.events_deleted == 3
    await store.close()
    with contextlib.closing(sqlite3.connect(store.db.path)) as conn:
        assert conn.execute("SELECT count(*) FROM payloads").fetchone() == (0,)
        conn.execute("INSERT INTO events_fts (events_fts) VALUES ('integrity-check')")


async def _all_done(conn: aiosqlite.Connection) -> None:
    await conn.execute("UPDATE jobs SET status = 'succeeded'")
    await conn.execute("UPDATE events SET status = 'succeeded'")


async def test_an_event_deleted_by_hand_takes_its_payload_along(store: SqliteStore) -> None:
    """The sqlite3 shell has foreign keys off, so no cascade: the body (and its search entry)
    stayed for good, past every retention window, where nothing would ever purge it."""
    await store.record(new_event("shop", 1, now=NOW, body=b'{"note": "secret"}'))
    await store.close()
    with contextlib.closing(sqlite3.connect(store.db.path, isolation_level=None)) as conn:
        assert conn.execute("PRAGMA foreign_keys").fetchone() == (0,)
        conn.execute("DELETE FROM jobs WHERE event_id = 1")
        conn.execute("DELETE FROM events WHERE id = 1")
        assert conn.execute("SELECT count(*) FROM payloads").fetchone() == (0,)
        match = conn.execute("SELECT rowid FROM events_fts WHERE events_fts MATCH 'secret'")
        assert match.fetchall() == []
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []


def _version_6_file(path: Path) -> None:
    """A file as schema 6 left it, with a stored, a purged and a restored payload."""
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        build_schema(conn, 6)
        rows = [
            (1, b'{"note": "first M\\u00fcller"}', '{"x-shop": "a"}', None, None, "queued"),
            (2, None, None, NOW + 10, None, "succeeded"),  # purged
            (3, b"\x00\xffbinary", '{"x-shop": "c"}', None, NOW + 5, "queued"),  # brought back
        ]
        for event_id, body, headers, purged_at, restored_at, status in rows:
            conn.execute(
                "INSERT INTO events (id, provider, key, provider_event_id, fingerprint, body,"
                " headers, content_type, status, received_at, last_seen_at, payload_expires_at,"
                " dedupe_expires_at, payload_purged_at, payload_restored_at)"
                " VALUES (?, 'shop', ?, ?, ?, ?, ?, 'application/json', ?, ?, ?, ?, ?, ?, ?)",
                (
                    event_id,
                    f"shop:evt_{event_id}",
                    f"evt_{event_id}",
                    hashlib.sha256(body or b"gone").hexdigest(),
                    body,
                    headers,
                    status,
                    NOW,
                    NOW,
                    NOW + 86_400,
                    NOW + 30 * 86_400,
                    purged_at,
                    restored_at,
                ),
            )
            conn.execute(
                "INSERT INTO jobs (event_id, provider, status, run_at, updated_at)"
                " VALUES (?, 'shop', ?, ?, ?)",
                (event_id, status, NOW, NOW),
            )
            if restored_at is not None:
                conn.execute(
                    "INSERT INTO requeues (event_id, at, cause) VALUES (?, ?, 'redelivery')",
                    (event_id, restored_at),
                )


async def test_a_version_6_file_is_upgraded_with_every_payload_moved(tmp_path: Path) -> None:
    path = tmp_path / "receiver.db"
    _version_6_file(path)
    store = SqliteStore(path, clock=SettableClock(NOW))
    await store.open()
    try:
        first, purged, restored = [await store.get_event(n) for n in (1, 2, 3)]
        assert first is not None and purged is not None and restored is not None
        assert (first.body, first.headers) == (b'{"note": "first M\\u00fcller"}', {"x-shop": "a"})
        assert (purged.body, purged.headers, purged.payload_purged_at_s) == (None, None, NOW + 10)
        assert (restored.body, restored.payload_purged_at_s) == (b"\x00\xffbinary", None)
        found = await store.queries.list_events(
            EventFilter(text="Müller"), before_id=None, limit=10, now_s=NOW
        )
        assert [item.id for item in found.items] == [1]
        assert [item.body_bytes for item in found.items] == [len(first.body)]
        duplicate = await store.record(new_event("shop", 1, now=NOW, body=first.body))
        assert isinstance(duplicate, Duplicate)
        assert (duplicate.id, duplicate.is_conflict) == (1, False)
    finally:
        await store.close()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (migrations.SCHEMA_VERSION,)
        columns = {row[1] for row in conn.execute("PRAGMA table_info(events)")}
        assert not {"body", "headers"} & columns
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        conn.execute("INSERT INTO events_fts (events_fts) VALUES ('integrity-check')")
        # The queued jobs' age counts from their event's receipt, or from its redelivery.
        enqueued = conn.execute("SELECT event_id, enqueued_at FROM jobs ORDER BY event_id")
        assert enqueued.fetchall() == [(1, NOW), (2, None), (3, NOW + 5)]


async def test_an_upgraded_file_purges_on_the_payload_expiry_index(tmp_path: Path) -> None:
    """The purge walks ``events_payload_expiry``, whose condition moved from the body to
    ``payload_purged_at``: a query planner that cannot use it scans every event each minute."""
    path = tmp_path / "receiver.db"
    _version_6_file(path)
    store = SqliteStore(path, clock=SettableClock(NOW))
    await store.open()
    await store.close()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        plan = conn.execute(
            "EXPLAIN QUERY PLAN " + _PAYLOAD_EXPIRY.later_expiry(), (0, NOW, 10)
        ).fetchall()
    assert any("events_payload_expiry" in str(row[-1]) for row in plan), plan


class _TightDisk(Database):
    """A disk with no room left past the file's current size (``max_page_count``)."""

    async def _connect(self) -> aiosqlite.Connection:
        conn = await super()._connect()
        pages = (await (await conn.execute("PRAGMA page_count")).fetchone())[0]  # type: ignore[index]
        await conn.execute(f"PRAGMA max_page_count = {pages + 2}")
        return conn


async def test_an_upgrade_that_fills_the_disk_leaves_the_file_as_it_was(tmp_path: Path) -> None:
    """The README says so: migration 7 copies every body, so it needs room; out of room, its
    transaction rolls back and the server refuses to start with the file unchanged."""
    path = tmp_path / "receiver.db"
    _version_6_file(path)
    with contextlib.closing(sqlite3.connect(path)) as conn:
        body = b"x" * 2000
        for n in range(4, 200):  # enough bodies that moving them needs new pages
            conn.execute(
                "INSERT INTO events (provider, key, provider_event_id, fingerprint, body,"
                " headers, status, received_at, last_seen_at, payload_expires_at,"
                " dedupe_expires_at) VALUES ('shop', ?, ?, ?, ?, '{}', 'succeeded', 0, 0, 0, 0)",
                (f"shop:evt_{n}", f"evt_{n}", hashlib.sha256(body).hexdigest(), body),
            )
        conn.commit()
    with pytest.raises(StorageUnavailable, match="the database is full"):
        await _TightDisk(path).open()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (6,)
        assert conn.execute("SELECT count(*) FROM events WHERE body IS NOT NULL").fetchone() == (
            198,
        )
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    store = SqliteStore(path, clock=SettableClock(NOW))  # with room again, the upgrade goes through
    await store.open()
    await store.close()


async def test_a_step_sqlite_rolled_back_itself_reports_its_own_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A disk that fills up mid-step makes SQLite roll the transaction back on its own; the
    ROLLBACK after it failed ("no transaction is active") and its error replaced the real one,
    so a full disk read "the database refused the write"."""
    path = tmp_path / "receiver.db"
    _version_6_file(path)
    real = migrations.migrations()
    # The same shape: the transaction is gone when the step's next statement fails.
    steps = {**real, 7: "ROLLBACK; SELECT * FROM a_table_that_is_not_there"}
    monkeypatch.setattr(database, "migrations", lambda **_: steps)
    with pytest.raises(StorageUnavailable) as raised:
        await Database(path).open()
    assert "a_table_that_is_not_there" in str(raised.value.__cause__)
