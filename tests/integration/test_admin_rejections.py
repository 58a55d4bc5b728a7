"""The rejected-request journal: every rejection noted (never the body), listed newest first,
filtered and paginated; a flood is dropped and counted, never queued without bound."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime
from typing import Any

import pytest

from receiver.store.rejections import RejectionJournal
from tests.integration.conftest import AdminHarness, MakeAdminHarness
from tests.support.factories import OTHER_SECRET, signed_headers

SECRET_MARKER = "do-not-store-this-body"


async def _reject_some(h: AdminHarness) -> None:
    when = datetime.fromtimestamp(h.clock(), UTC)
    body = f'{{"type": "x", "secret": "{SECRET_MARKER}"}}'.encode()
    bad_sig = signed_headers(body, msg_id="m1", secret=OTHER_SECRET, at=when)
    assert (await h.ingest.post("/webhooks/sw", data=body, headers=bad_sig)).status == 401
    h.clock.advance(1)
    assert (await h.ingest.post("/webhooks/sw", data=body)).status == 401  # missing signature
    h.clock.advance(1)
    assert (await h.deliver("plain", b"{" + SECRET_MARKER.encode()))["http_status"] == 400
    h.clock.advance(1)
    assert (await h.deliver("plain", {"type": "no id", "s": SECRET_MARKER}))["http_status"] == 400
    h.clock.advance(1)
    assert (await h.ingest.post("/webhooks/ghost", data=b"{}")).status == 404
    await h.receiver.store.rejections.flush()


async def test_rejections_are_journaled_without_bodies(admin_harness: AdminHarness) -> None:
    h = admin_harness
    await _reject_some(h)
    resp = await h.get("/admin/rejections")
    data = await resp.json()
    causes = [(r["provider"], r["cause"]) for r in data["rejections"]]
    assert causes == [
        ("ghost", "unknown_provider"),
        ("plain", "missing_event_id"),
        ("plain", "invalid_body"),
        ("sw", "missing_signature"),
        ("sw", "invalid_signature"),
    ]
    newest = data["rejections"][0]
    assert newest["remote_addr"] == "127.0.0.1"
    assert newest["at"].endswith("Z")
    assert data["rejections"][2]["body_bytes"] == len(SECRET_MARKER) + 1
    assert SECRET_MARKER not in await resp.text()
    with sqlite3.connect(h.receiver.config.settings.storage.path) as conn:
        dump = "\n".join(conn.iterdump())
    assert "do-not-store" not in dump.split('INSERT INTO "rejections"', 1)[-1]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"cause": "invalid_body"}, ["invalid_body"]),
        ({"provider": "sw"}, ["missing_signature", "invalid_signature"]),
        ({"provider": "sw", "cause": "missing_signature"}, ["missing_signature"]),
        ({"cause": "' OR 1=1 --"}, []),
    ],
)
async def test_rejections_filter(
    admin_harness: AdminHarness, params: dict[str, str], expected: list[str]
) -> None:
    await _reject_some(admin_harness)
    data = await (await admin_harness.get("/admin/rejections", **params)).json()
    assert [r["cause"] for r in data["rejections"]] == expected


async def test_rejections_filter_by_time_and_paginate(admin_harness: AdminHarness) -> None:
    h = admin_harness
    start = h.clock()
    await _reject_some(h)
    data = await (await h.get("/admin/rejections", since=str(start + 2))).json()
    assert len(data["rejections"]) == 3
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = await (await h.get("/admin/rejections", **params)).json()
        pages.append([r["id"] for r in page["rejections"]])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == [["5", "4"], ["3", "2"], ["1"]]
    resp = await h.get("/admin/rejections", cursor=data["next_cursor"] or "bad")
    assert resp.status == 400


async def test_event_cursor_is_not_a_rejection_cursor(admin_harness: AdminHarness) -> None:
    h = admin_harness
    for i in range(3):
        await h.deliver("plain", {"id": f"c{i}", "type": "t"})
    cursor = (await (await h.get("/admin/events", limit="1")).json())["next_cursor"]
    resp = await h.get("/admin/rejections", cursor=cursor)
    assert (await resp.json())["parameter"] == "cursor"


async def test_a_flood_is_dropped_and_counted_not_queued(
    admin_make_harness: MakeAdminHarness,
) -> None:
    h = await admin_make_harness()
    db = h.receiver.store.db
    dropped: list[int] = []
    journal = RejectionJournal(
        db, clock=h.clock, max_pending=10, flush_interval_s=0.01, on_dropped=dropped.append
    )
    for _ in range(25):
        journal.record(
            cause="invalid_signature", provider="sw", remote_addr="1.2.3.4", body_bytes=1
        )
    assert journal.dropped == 15
    assert sum(dropped) == 15
    await journal.close()
    journal.record(cause="late", provider=None, remote_addr=None, body_bytes=None)
    assert journal.dropped == 16
    with sqlite3.connect(h.receiver.config.settings.storage.path) as conn:
        assert conn.execute("SELECT count(*) FROM rejections").fetchone()[0] == 10


async def test_journal_flushes_by_itself_and_trims_to_its_cap(
    admin_make_harness: MakeAdminHarness,
) -> None:
    h = await admin_make_harness()
    journal = RejectionJournal(h.receiver.store.db, clock=h.clock, flush_interval_s=0.01, keep=5)
    for i in range(8):
        journal.record(cause="invalid_body", provider="plain", remote_addr=None, body_bytes=i)
    async with asyncio.timeout(5):
        while True:
            with sqlite3.connect(h.receiver.config.settings.storage.path) as conn:
                count = conn.execute("SELECT count(*) FROM rejections").fetchone()[0]
            if count:
                break
            await asyncio.sleep(0.01)
    assert count == 5
    await journal.close()


async def test_journal_never_slows_or_fails_ingest_when_the_store_is_closed(
    admin_make_harness: MakeAdminHarness,
) -> None:
    h = await admin_make_harness()
    # Its own flush must not run first: closing the store can take longer than a short interval.
    journal = RejectionJournal(h.receiver.store.db, clock=h.clock, flush_interval_s=60)
    journal.record(cause="invalid_body", provider="plain", remote_addr=None, body_bytes=1)
    await h.receiver.store.db.close()
    assert await journal.flush() == 0
    assert journal.dropped == 1
    await journal.close()
