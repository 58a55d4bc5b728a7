"""``storage.search_index``: the full-text index over bodies can be turned off (large or
sensitive bodies, the most events per core) and on again, and search keeps answering either way:
by the index, or by reading the bodies."""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
from pathlib import Path

import aiohttp
import aiosqlite
from structlog.testing import capture_logs

from receiver.config import load_config
from receiver.runtime import Receiver
from receiver.store.filters import EventFilter
from receiver.store.sqlite import SqliteStore
from tests.support import factories
from tests.support.clock import SettableClock
from tests.support.factories import new_event, write_config
from tests.support.schema import build_schema

NOW = 1_700_000_000.0


def _search_objects(path: Path) -> set[str]:
    """The index and the triggers that keep it, as the file has them."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        rows = conn.execute(
            "SELECT name FROM sqlite_master WHERE name LIKE 'events_fts%'"
            " OR name LIKE 'payloads_fts%'"
        ).fetchall()
    return {name for (name,) in rows}


async def _found(store: SqliteStore, text: str) -> list[int]:
    page = await store.queries.list_events(
        EventFilter(text=text), before_id=None, limit=50, now_s=store.clock()
    )
    return sorted(item.id for item in page.items)


async def _open(path: Path, *, search_index: bool, clock: SettableClock) -> SqliteStore:
    store = SqliteStore(path, clock=clock, search_index=search_index)
    await store.open()
    return store


async def _all_done(conn: aiosqlite.Connection) -> None:
    await conn.execute("UPDATE jobs SET status = 'succeeded'")
    await conn.execute("UPDATE events SET status = 'succeeded'")


async def test_turned_off_the_index_goes_and_search_reads_the_bodies(tmp_path: Path) -> None:
    path = tmp_path / "receiver.db"
    clock = SettableClock(NOW)
    store = await _open(path, search_index=True, clock=clock)
    await store.record(new_event("shop", 1, now=NOW, body=b'{"note": "zebra crossing"}'))
    await store.close()
    assert "events_fts" in _search_objects(path)

    store = await _open(path, search_index=False, clock=clock)
    try:
        assert _search_objects(path) == set()  # no index, and no trigger writing into one
        assert not await store.queries.has_fts_index()
        await store.record(new_event("shop", 2, now=NOW, body=b'{"note": "a zebra again"}'))
        await store.record(new_event("shop", 3, now=NOW, body=b'{"note": "a horse"}'))
        assert await _found(store, "zebra") == [1, 2]
        # The purge works without the index's triggers.
        await store.db.transaction(_all_done)
        clock.now = NOW + 2 * 86_400
        assert (await store.retention.purge_once()).payloads_purged == 3
        assert await _found(store, "zebra") == []
    finally:
        await store.close()


async def test_turned_on_again_it_covers_what_arrived_while_it_was_off(tmp_path: Path) -> None:
    path = tmp_path / "receiver.db"
    clock = SettableClock(NOW)
    store = await _open(path, search_index=False, clock=clock)
    await store.record(new_event("shop", 1, now=NOW, body=b'{"note": "M\\u00fcller paid"}'))
    await store.record(new_event("shop", 2, now=NOW, body=b'{"note": "Meier paid"}'))
    # Escaped in the JSON: only the index, which holds the decoded values, finds the word.
    assert await _found(store, "Müller") == []
    await store.close()

    store = await _open(path, search_index=True, clock=clock)
    try:
        assert {"events_fts", "payloads_fts_insert", "payloads_fts_delete"} <= _search_objects(path)
        assert await store.queries.has_fts_index()
        assert await _found(store, "Müller") == [1]
        assert await _found(store, "paid") == [1, 2]
        await store.record(new_event("shop", 3, now=NOW, body=b'{"note": "paid later"}'))
        assert await _found(store, "paid") == [1, 2, 3]  # kept up from here on, by the triggers
    finally:
        await store.close()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("INSERT INTO events_fts (events_fts) VALUES ('integrity-check')")


async def test_only_a_changed_setting_builds_or_drops_it(tmp_path: Path) -> None:
    """Every start compares the setting with the file; a rebuild at every start would cost
    half a minute per million stored bodies."""
    path = tmp_path / "receiver.db"
    actions = []
    for search_index in (True, True, False, False, True):
        with capture_logs() as lines:
            store = await _open(path, search_index=search_index, clock=SettableClock(NOW))
            await store.close()
        actions += [line["action"] for line in lines if line["event"] == "search_index_changed"]
    assert actions == ["dropping", "building"]

    # A new file comes with the index; turned off from the first start, it goes without a
    # word of "storage.search_index changed".
    fresh = tmp_path / "fresh.db"
    with capture_logs() as lines:
        store = await _open(fresh, search_index=False, clock=SettableClock(NOW))
        await store.close()
    assert [line for line in lines if line["event"].startswith("search_index")] == []
    assert _search_objects(fresh) == set()


async def test_an_upgrade_with_it_off_never_builds_it(tmp_path: Path) -> None:
    """Upgrading a file from before version 7 with the setting off: the steps that index
    every stored body are skipped, not run and then undone (minutes on a large file). The
    index an older version built goes with the old layout."""
    path = tmp_path / "receiver.db"
    body = b'{"note": "zebra crossing"}'
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        build_schema(conn, 4)  # version 2 indexed the bodies in the events' rows
        conn.execute(
            "INSERT INTO events (provider, key, provider_event_id, fingerprint, body, status,"
            " received_at, last_seen_at, payload_expires_at, dedupe_expires_at)"
            " VALUES ('shop', 'shop:evt_1', 'evt_1', ?, ?, 'received', ?, ?, ?, ?)",
            (hashlib.sha256(body).hexdigest(), body, NOW, NOW, NOW + 86_400, NOW + 86_400),
        )
    assert "events_fts" in _search_objects(path)
    with capture_logs() as lines:
        store = await _open(path, search_index=False, clock=SettableClock(NOW))
    try:
        assert [line for line in lines if line["event"].startswith("search_index")] == []
        assert [line["version"] for line in lines if line["event"] == "schema_migrated"] == [
            5,
            6,
            7,
        ]
        assert _search_objects(path) == set()
        assert await _found(store, "zebra") == [1]  # by reading the bodies
    finally:
        await store.close()


async def test_an_operations_command_never_changes_it(tmp_path: Path) -> None:
    """A one-off read (``receiver events``) opens the file without upgrading it: it must not
    build or drop an index under a running server either."""
    path = tmp_path / "receiver.db"
    store = await _open(path, search_index=True, clock=SettableClock(NOW))
    await store.record(new_event("shop", 1, now=NOW, body=b'{"note": "zebra"}'))
    await store.close()
    reader = SqliteStore(path, clock=SettableClock(NOW), search_index=False)
    await reader.open(serving=False)
    try:
        assert "events_fts" in _search_objects(path)
        assert await _found(reader, "zebra") == [1]
    finally:
        await reader.close()


async def test_a_server_with_it_off_answers_search_over_http(tmp_path: Path) -> None:
    providers = {"shop": {"scheme": "none", "event_id": "json:id"}}
    config = write_config(tmp_path, providers=providers, storage={"search_index": False})
    receiver = Receiver(load_config(config, environ=factories.test_environ()))
    with capture_logs() as lines:
        await receiver.start()
    try:
        started = next(line for line in lines if line["event"] == "receiver_started")
        assert started["search_index"] is False  # the operator sees how q will search
        ingest = f"http://127.0.0.1:{receiver.ingest_port}"
        admin = f"http://127.0.0.1:{receiver.admin_port}"
        async with aiohttp.ClientSession() as session:
            for n, word in enumerate(["zebra", "horse", "zebra"]):
                body = f'{{"id": "evt_{n}", "note": "a {word}"}}'.encode()
                async with session.post(f"{ingest}/webhooks/shop", data=body) as resp:
                    assert resp.status == 200, await resp.text()
            async with session.get(f"{admin}/admin/events", params={"q": "zebra"}) as resp:
                assert resp.status == 200, await resp.text()
                keys = sorted(item["key"] for item in (await resp.json())["events"])
        assert keys == ["shop:evt_0", "shop:evt_2"]
        assert _search_objects(tmp_path / "receiver.db") == set()
    finally:
        await receiver.stop()
