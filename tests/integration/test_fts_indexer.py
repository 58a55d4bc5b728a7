"""The full-text index is built off the ingest path and stays sound whatever happens to rows
before the indexer reaches them."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from receiver.models import Accepted, NewEvent
from receiver.store import database
from receiver.store.sqlite import SqliteStore

pytestmark = pytest.mark.skipif(
    not database._sqlite_has_fts5(), reason="this SQLite has no FTS5: search uses LIKE"
)


def _event(n: int, word: str, *, now: float, payload_s: float = 3600) -> NewEvent:
    body = json.dumps({"id": n, "note": word}).encode()
    return NewEvent(
        provider="p",
        key=f"p:{n}",
        provider_event_id=str(n),
        event_type="t",
        body=body,
        headers={},
        content_type="application/json",
        fingerprint=hashlib.sha256(body).hexdigest(),
        received_at_s=now,
        payload_expires_at_s=now + payload_s,
        dedupe_expires_at_s=now + 7200,
        has_handler=False,
        serialize_key=None,
        requeue_dead=True,
        remote="127.0.0.1",
    )


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(tmp_path / "receiver.db")
    await store.open()
    await store.indexer.stop()  # the tests drive the indexer themselves
    yield store
    await store.close()


def _raw(store: SqliteStore) -> sqlite3.Connection:
    return sqlite3.connect(store.db.path)


def _search(store: SqliteStore, word: str) -> list[int]:
    with _raw(store) as conn:
        rows = conn.execute(
            "SELECT rowid FROM events_fts WHERE events_fts MATCH ? ORDER BY rowid", (word,)
        ).fetchall()
    return [r[0] for r in rows]


def _index_is_sound(store: SqliteStore) -> None:
    """FTS5's own check that the index holds exactly the bodies of the rows (raises "database
    disk image is malformed" otherwise). Valid only while every row has a body: FTS5 expects
    a row with a NULL body in the index too, which receiver never puts there."""
    with _raw(store) as conn:
        conn.execute("INSERT INTO events_fts (events_fts, rank) VALUES ('integrity-check', 1)")


async def test_ingest_leaves_indexing_to_the_indexer(store: SqliteStore) -> None:
    now = time.time()
    ids = [(await store.record(_event(n, "amber", now=now))).id for n in range(3)]
    assert _search(store, "amber") == []  # not on the ingest path
    store.indexer.note_new_rows()
    await store.indexer.catch_up()
    assert _search(store, "amber") == ids
    _index_is_sound(store)


async def test_a_search_catches_the_index_up_first(store: SqliteStore) -> None:
    from receiver.store.filters import EventFilter

    now = time.time()
    outcome = await store.record(_event(1, "cobalt", now=now))
    assert isinstance(outcome, Accepted)
    page = await store.queries.list_events(EventFilter(text="cobalt"), before_id=None, limit=10)
    assert [e.id for e in page.items] == [outcome.id]


async def test_rows_purged_or_deleted_before_indexing_never_corrupt_the_index(
    store: SqliteStore,
) -> None:
    now = time.time()
    kept = (await store.record(_event(1, "violet", now=now))).id
    purged = (await store.record(_event(2, "violet", now=now))).id
    deleted = (await store.record(_event(3, "violet", now=now))).id
    with _raw(store) as conn:  # not indexed yet: the triggers must leave the index alone
        conn.execute("UPDATE events SET body = NULL WHERE id = ?", (purged,))
        conn.execute("DELETE FROM events WHERE id = ?", (deleted,))
    store.indexer.note_new_rows()
    await store.indexer.catch_up()
    assert _search(store, "violet") == [kept]
    with _raw(store) as conn:
        conn.execute("DELETE FROM events WHERE id = ?", (purged,))  # only bodies remain
    _index_is_sound(store)  # a 'delete' of never-indexed content would fail this
    with _raw(store) as conn:  # indexed now: deleting the row takes it out of the index
        conn.execute("DELETE FROM events WHERE id = ?", (kept,))
    assert _search(store, "violet") == []
    _index_is_sound(store)


async def test_catching_up_works_in_batches(store: SqliteStore) -> None:
    now = time.time()
    for n in range(25):
        await store.record(_event(n, "saffron", now=now))
    store.indexer._batch_size = 10
    store.indexer.note_new_rows()
    await store.indexer.catch_up()
    assert len(_search(store, "saffron")) == 25
    with _raw(store) as conn:
        assert conn.execute("SELECT last_id FROM fts_state").fetchone()[0] == 25


async def test_a_version_2_database_keeps_its_index_and_moves_on(tmp_path: Path) -> None:
    """A database indexed by the old insert trigger: everything in it is already indexed."""
    path = tmp_path / "v2.db"
    migrations = database._migrations()
    with sqlite3.connect(path) as conn:
        conn.executescript(migrations[1])
        conn.executescript(migrations[2])
        conn.execute("PRAGMA user_version = 2")
        for n in (1, 2):
            body = json.dumps({"note": "indigo"}).encode()
            conn.execute(
                "INSERT INTO events (provider, key, provider_event_id, fingerprint, body,"
                " status, received_at, last_seen_at, payload_expires_at, dedupe_expires_at)"
                " VALUES ('p', ?, ?, ?, ?, 'received', 0, 0, 9e9, 9e9)",
                (f"p:{n}", str(n), hashlib.sha256(body).hexdigest(), body),
            )
    store = SqliteStore(path)
    await store.open()
    try:
        assert _search(store, "indigo") == [1, 2]
        with _raw(store) as conn:
            assert conn.execute("PRAGMA user_version").fetchone()[0] == database.SCHEMA_VERSION
            assert conn.execute("SELECT last_id FROM fts_state").fetchone()[0] == 2
            conn.execute("DELETE FROM events WHERE id = 1")  # indexed: leaves the index
        assert _search(store, "indigo") == [2]
        _index_is_sound(store)
    finally:
        await store.close()
