"""Retention with an injected clock: the payload goes, the key stays (a late redelivery is still a
duplicate); after the dedupe window the event is new again; the rejection journal stays capped."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from typing import Any

import pytest
import structlog

from receiver.errors import StorageUnavailable
from receiver.store import retention as retention_module
from receiver.store.retention import PurgeReport, PurgeTask, Retention
from tests.integration.conftest import AdminHarness

HOUR_S = 3600.0


def _event_row(h: AdminHarness, key: str) -> tuple[Any, ...] | None:
    with sqlite3.connect(h.receiver.config.settings.storage.path) as conn:
        row = conn.execute(
            "SELECT p.body, p.headers, e.payload_purged_at, e.fingerprint, e.status"
            " FROM events e LEFT JOIN payloads p ON p.event_id = e.id WHERE e.key = ?",
            (key,),
        ).fetchone()
    return tuple(row) if row is not None else None


async def test_payload_goes_key_stays_and_late_redelivery_is_duplicate(
    admin_harness: AdminHarness,
) -> None:
    h = admin_harness
    body = {"id": "r1", "type": "order.created"}
    first = await h.deliver("short", body, {"X-Trace": "t"})
    keeper = await h.deliver("plain", {"id": "r2", "type": "t"})  # 1 day windows: untouched
    h.clock.advance(HOUR_S - 1)
    assert await h.receiver.store.retention.purge_once() == PurgeReport()
    h.clock.advance(1)
    report = await h.receiver.store.retention.purge_once()
    assert report == PurgeReport(payloads_purged=1)
    stored = _event_row(h, "short:r1")
    assert stored is not None
    body_col, headers, purged_at, fingerprint, status = stored
    assert (body_col, headers, purged_at) == (None, None, h.clock())
    assert len(fingerprint) == 64
    assert status == "received"
    detail = await (await h.get(f"/admin/events/{first['id']}")).json()
    assert (detail["body"], detail["headers"], detail["encoding"]) == (None, None, None)
    assert detail["payload_purged_at"] is not None
    assert _event_row(h, "plain:r2")[0] is not None  # type: ignore[index]

    late = await h.deliver("short", body)
    assert (late["status"], late["id"]) == ("duplicate", first["id"])
    detail = await (await h.get(f"/admin/events/{first['id']}")).json()
    assert detail["duplicate_count"] == 1
    assert detail["conflict_count"] == 0  # the fingerprint survived the purge
    assert keeper["status"] == "accepted"


async def test_after_the_dedupe_window_a_redelivery_is_new_again(
    admin_harness: AdminHarness,
) -> None:
    h = admin_harness
    body = {"id": "w1", "type": "t"}
    first = await h.deliver("short", body)
    await h.post(f"/admin/events/{first['id']}/replay", {"reason": "history to delete"})
    h.clock.advance(2 * HOUR_S)
    report = await h.receiver.store.retention.purge_once()
    assert report == PurgeReport(payloads_purged=1, events_deleted=1)
    assert _event_row(h, "short:w1") is None
    with sqlite3.connect(h.receiver.config.settings.storage.path) as conn:
        for table in ("jobs", "requeues"):
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0  # noqa: S608
    again = await h.deliver("short", body)
    assert again["status"] == "accepted"
    assert again["id"] != first["id"]
    assert (await h.get(f"/admin/events/{first['id']}")).status == 404


async def test_purge_works_in_small_batches(admin_harness: AdminHarness) -> None:
    h = admin_harness
    for i in range(23):
        await h.deliver("short", {"id": f"b{i}", "type": "t"})
    rests: list[float] = []

    async def rest(seconds: float) -> None:
        rests.append(seconds)

    retention = Retention(h.receiver.store.db, clock=h.clock, batch_size=5, sleep=rest)
    h.clock.advance(HOUR_S)
    assert (await retention.purge_once()).payloads_purged == 23
    # Four full batches, each followed by a rest as long as it took (the fifth is the last).
    assert len(rests) == 4 and all(seconds > 0 for seconds in rests)
    h.clock.advance(HOUR_S)
    assert (await retention.purge_once()).events_deleted == 23


async def test_purge_stops_between_batches_when_asked(admin_harness: AdminHarness) -> None:
    h = admin_harness
    for i in range(10):
        await h.deliver("short", {"id": f"s{i}", "type": "t"})
    retention = Retention(h.receiver.store.db, clock=h.clock, batch_size=3)
    h.clock.advance(HOUR_S)
    calls = 0

    def stop_after_two() -> bool:
        nonlocal calls
        calls += 1
        return calls > 2

    report = await retention.purge_once(is_stopping=stop_after_two)
    assert report.payloads_purged == 6


async def test_rejection_journal_is_capped(admin_harness: AdminHarness) -> None:
    h = admin_harness
    retention = Retention(h.receiver.store.db, clock=h.clock, keep_rejections=4, batch_size=3)
    journal = h.receiver.store.rejections
    for i in range(11):
        journal.record(cause="invalid_body", provider="plain", remote_addr=None, body_bytes=i)
    await journal.flush()
    report = await retention.purge_once()
    assert report.rejections_deleted == 7
    data = await (await h.get("/admin/rejections")).json()
    assert [r["body_bytes"] for r in data["rejections"]] == [10, 9, 8, 7]


async def test_purge_task_runs_reports_and_stops(admin_harness: AdminHarness) -> None:
    h = admin_harness
    await h.deliver("short", {"id": "t1", "type": "t"})
    h.clock.advance(HOUR_S)
    reports: list[PurgeReport] = []
    task = PurgeTask(h.receiver.store.retention, interval_s=0.01, on_report=reports.append)
    task.start()
    async with asyncio.timeout(5):
        while len(reports) < 2:
            await asyncio.sleep(0.01)
    await task.stop()
    assert reports[0].payloads_purged == 1
    assert reports[1] == PurgeReport()
    count = len(reports)
    await asyncio.sleep(0.05)
    assert len(reports) == count  # stopped means stopped


async def test_a_purge_that_fails_in_any_way_runs_again(
    admin_harness: AdminHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only storage trouble was caught: any other error ended the purge task for good, with
    no log line until shutdown, and payloads outlived their retention from then on."""
    h = admin_harness
    await h.deliver("short", {"id": "f1", "type": "t"})
    h.clock.advance(HOUR_S)
    retention = h.receiver.store.retention
    real = retention.purge_once
    calls: list[int] = []

    async def failing_once(**kwargs: Any) -> PurgeReport:
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("a row this purge cannot read")
        return await real(**kwargs)

    monkeypatch.setattr(retention, "purge_once", failing_once)
    reports: list[PurgeReport] = []
    failures: list[int] = []
    task = PurgeTask(
        retention, interval_s=0.01, on_report=reports.append, on_failure=lambda: failures.append(1)
    )
    with structlog.testing.capture_logs() as logs:
        task.start()
        async with asyncio.timeout(5):
            while not reports:
                await asyncio.sleep(0.01)
        await task.stop()
    assert failures == [1]
    assert reports[0].payloads_purged == 1
    [failed] = [line for line in logs if line["event"] == "retention_purge_failed"]
    assert (failed["log_level"], failed["cause"]) == ("error", "ValueError")


async def test_runtime_counts_purges_in_metrics(admin_harness: AdminHarness) -> None:
    h = admin_harness
    await h.deliver("short", {"id": "m1", "type": "t"})
    h.clock.advance(2 * HOUR_S)
    await h.receiver.store.retention.purge_once()
    text = await (await h.get("/metrics")).text()
    assert "receiver_purged_payloads_total 1.0" in text
    assert "receiver_purged_events_total 1.0" in text
    assert "receiver_purged_rejections_total 0.0" in text


async def test_a_purge_that_fails_part_way_counts_what_it_removed(
    admin_harness: AdminHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The counters moved only with a whole purge's report: batches committed before a
    failure were gone from the database and missing from the metrics."""
    h = admin_harness
    for n in range(3):
        await h.deliver("short", {"id": f"p{n}", "type": "t"})
    h.clock.advance(2 * HOUR_S)
    retention = h.receiver.store.retention
    monkeypatch.setattr(retention, "_batch_size", 1)
    real = retention._db.transaction
    calls: list[int] = []

    async def failing_third(work: Any, **kwargs: Any) -> Any:
        if getattr(work, "func", None) is retention_module._act:  # a batch of the purge
            calls.append(1)
            if len(calls) == 3:
                raise StorageUnavailable("the database is locked by another writer")
        return await real(work, **kwargs)

    monkeypatch.setattr(retention._db, "transaction", failing_third)
    with pytest.raises(StorageUnavailable):
        await retention.purge_once()
    text = await (await h.get("/metrics")).text()
    assert "receiver_purged_payloads_total 2.0" in text


async def test_changed_windows_reach_the_events_already_stored(
    admin_make_harness: Any,
) -> None:
    """Shortening payload retention (say, for privacy) used to apply only to events received
    afterwards, while /admin/stats already showed the new window as the policy in force."""

    def config(payload: str, dedupe: str) -> dict[str, Any]:
        provider = {"scheme": "none", "event_id": "json:id"}
        return {
            "providers": {
                "p": {**provider, "payload_retention": payload, "dedupe_retention": dedupe}
            }
        }

    before = await admin_make_harness(**config("7d", "7d"))
    stored = [await before.deliver("p", {"id": f"k{i}"}) for i in range(3)]
    assert await before.receiver.store.retention.purge_once() == PurgeReport()
    await before.receiver.store.close()

    after = await admin_make_harness(**config("1h", "30d"))
    after.clock.now_s = before.clock.now_s + 2 * HOUR_S
    with structlog.testing.capture_logs() as lines:
        report = await after.receiver.store.retention.purge_once()
    assert report == PurgeReport(payloads_purged=3)
    # Each event counted once, though both of its windows moved.
    applied_lines = [line for line in lines if line["event"] == "retention_policy_applied"]
    assert [(line["provider"], line["events"]) for line in applied_lines] == [("p", 3)]
    with sqlite3.connect(after.receiver.config.settings.storage.path) as conn:
        rows = conn.execute("SELECT dedupe_expires_at - received_at FROM events").fetchall()
    assert [row[0] for row in rows] == [30 * 24 * HOUR_S] * 3
    # Eight days on, past the old dedupe window: the events are still known (30 days now).
    after.clock.advance(8 * 24 * HOUR_S)
    assert (await after.receiver.store.retention.purge_once()).events_deleted == 0
    again = await after.deliver("p", {"id": "k0"})
    assert (again["status"], again["id"]) == ("duplicate", stored[0]["id"])
    with sqlite3.connect(after.receiver.config.settings.storage.path) as conn:
        applied = conn.execute("SELECT * FROM retention_applied").fetchall()
    assert applied == [("p", HOUR_S, 30 * 24 * HOUR_S)]  # the next start compares with this


async def test_only_the_server_moves_stored_windows_so_a_one_off_purge_leaves_them_be(
    admin_make_harness: Any,
) -> None:
    """``receiver purge`` run with an edited file beside a server on the old one used to move
    and record windows the server never chose: restarted, the server skipped the events it had
    written meanwhile (or, with its own file unchanged, kept the purge's windows for good)."""
    from receiver.cli import main
    from tests.support.factories import write_config

    def config(payload: str) -> dict[str, Any]:
        provider = {"scheme": "none", "event_id": "json:id", "payload_retention": payload}
        return {"providers": {"p": {**provider, "dedupe_retention": "7d"}}}

    server = await admin_make_harness(**config("7d"))
    await server.deliver("p", {"id": "before"})
    await server.receiver.store.retention.purge_once()
    path = write_config(server.config_path.parent, **config("1h"))
    assert await asyncio.to_thread(main, ["purge", "--config", str(path)]) == 0
    await server.deliver("p", {"id": "meanwhile"})  # the running server: still 7 days
    await server.receiver.store.close()

    restarted = await admin_make_harness(**config("1h"))
    restarted.clock.now_s = server.clock.now_s + 2 * HOUR_S
    report = await restarted.receiver.store.retention.purge_once()
    assert report.payloads_purged == 2


async def test_a_dead_events_purged_payload_comes_back_with_its_redelivery(
    admin_harness: AdminHarness,
) -> None:
    """A redelivery of a dead event queues it again; when its payload had been purged, the job
    went dead again at once ("the payload was purged") and the re-sent body was thrown away."""
    h = admin_harness
    body = {"id": "gone", "type": "t", "note": "please run me"}
    first = await h.deliver("plain", body)
    event_id = int(first["id"])
    with sqlite3.connect(h.receiver.config.settings.storage.path) as conn:
        conn.execute("UPDATE events SET status = 'dead' WHERE id = ?", (event_id,))
        conn.execute("UPDATE jobs SET status = 'dead' WHERE event_id = ?", (event_id,))
        conn.execute("DELETE FROM payloads WHERE event_id = ?", (event_id,))
        conn.execute("UPDATE events SET payload_purged_at = ? WHERE id = ?", (h.clock(), event_id))
    h.receiver.store.writer.recent.forget(event_id)  # as the worker does when it buries one
    other = await h.deliver("plain", {**body, "note": "not the same bytes"})
    assert other["status"] == "duplicate"
    assert _event_row(h, "plain:gone")[::4] == (None, "dead")  # type: ignore[index]
    again = await h.deliver("plain", body)
    assert (again["status"], again["id"]) == ("duplicate", first["id"])
    stored, _, purged_at, _, status = _event_row(h, "plain:gone")  # type: ignore[misc]
    assert (purged_at, status) == (None, "queued")
    assert json.loads(stored) == body
    detail = await (await h.get(f"/admin/events/{first['id']}")).json()
    assert detail["job"]["status"] == "queued"
    assert await _search(h, "please") == [first["id"]]


async def _search(h: AdminHarness, text: str) -> list[str]:
    page = await (await h.get("/admin/events", q=text)).json()
    return [e["id"] for e in page["events"]]


async def test_after_an_upgrade_unchanged_windows_cost_one_read_not_a_walk(
    admin_harness: AdminHarness, monkeypatch: Any
) -> None:
    """With no record of the windows applied (a database from before they were recorded), the
    events were walked in write transactions although none of them differed."""
    from receiver.store import retention

    h = admin_harness
    for i in range(3):
        await h.deliver("plain", {"id": f"u{i}", "type": "t"})
    with sqlite3.connect(h.receiver.config.settings.storage.path) as conn:
        conn.execute("DELETE FROM retention_applied")
    walked: list[str] = []
    real = retention._reexpire

    async def counted(conn: Any, **kwargs: Any) -> Any:
        walked.append(kwargs["provider"])
        return await real(conn, **kwargs)

    monkeypatch.setattr(retention, "_reexpire", counted)
    fresh = Retention(
        h.receiver.store.db, clock=h.clock, policies=h.receiver.store.retention._policies
    )
    await fresh.purge_once()
    assert walked == []
    with sqlite3.connect(h.receiver.config.settings.storage.path) as conn:
        recorded = {row[0] for row in conn.execute("SELECT provider FROM retention_applied")}
    assert "plain" in recorded


async def test_a_restored_payload_keeps_its_window_from_the_restore_when_windows_change(
    admin_make_harness: Any,
) -> None:
    """A payload a redelivery brought back had its window counted from the event's first
    arrival once a changed window was applied: purged again before its queued job ran."""

    def config(payload: str) -> dict[str, Any]:
        provider = {"scheme": "none", "event_id": "json:id", "payload_retention": payload}
        return {"providers": {"p": {**provider, "dedupe_retention": "30d"}}}

    body = {"id": "back", "note": "run me"}
    before = await admin_make_harness(**config("2d"))
    first = await before.deliver("p", body)
    event_id = int(first["id"])
    before.clock.advance(3 * 24 * HOUR_S)
    assert (await before.receiver.store.retention.purge_once()).payloads_purged == 1
    with sqlite3.connect(before.receiver.config.settings.storage.path) as conn:
        conn.execute("UPDATE events SET status = 'dead' WHERE id = ?", (event_id,))
        conn.execute("UPDATE jobs SET status = 'dead' WHERE event_id = ?", (event_id,))
    before.receiver.store.writer.recent.forget(event_id)
    again = await before.deliver("p", body)  # restores the payload, queues the event again
    assert (again["status"], again["id"]) == ("duplicate", first["id"])
    await before.receiver.store.close()

    after = await admin_make_harness(**config("1d"))  # shorter, yet a day from the restore
    after.clock.now_s = before.clock.now_s + HOUR_S
    assert (await after.receiver.store.retention.purge_once()).payloads_purged == 0
    stored = _event_row(after, "p:back")
    assert stored is not None and json.loads(stored[0]) == body
    after.clock.advance(24 * HOUR_S)
    assert (await after.receiver.store.retention.purge_once()).payloads_purged == 1


async def test_a_backlog_outliving_its_windows_keeps_its_bodies_until_it_runs(
    admin_make_harness: Any,
) -> None:
    """A handler down for longer than the payload window: the purge took the bodies of the
    events still queued for it, and each ended dead with nothing to hand the handler."""
    from tests.integration import handler_targets

    handler_targets.reset()
    handler = {"kind": "python", "target": "tests.integration.handler_targets:record"}
    provider = {"scheme": "none", "event_id": "json:id", "handler": handler}
    windows = {"payload_retention": "1h", "dedupe_retention": "2h"}
    h = await admin_make_harness(providers={"p": {**provider, **windows}})
    await h.deliver("p", {"id": "waiting", "note": "keep me"})
    h.clock.advance(3 * HOUR_S)  # the worker did not run meanwhile
    assert await h.receiver.store.retention.purge_once() == PurgeReport()
    await h.receiver.worker.run(until_empty=True)
    assert [json.loads(c.body)["note"] for c in handler_targets.STATE.calls] == ["keep me"]
    report = await h.receiver.store.retention.purge_once()
    assert (report.payloads_purged, report.events_deleted) == (1, 1)


async def test_a_dead_event_requeued_for_a_provider_without_a_handler_reads_received(
    admin_harness: AdminHarness,
) -> None:
    """A redelivery re-queues a dead event; when its provider has no handler (any more), it
    is ``received`` like a new one, not ``queued`` for a worker that will never run it, and
    its payload is purged on time."""
    h = admin_harness
    first = await h.deliver("short", {"id": "gone", "type": "t"})
    with sqlite3.connect(h.receiver.config.settings.storage.path) as conn:
        conn.execute("UPDATE events SET status = 'dead' WHERE id = ?", (int(first["id"]),))
        conn.execute("UPDATE jobs SET status = 'dead' WHERE event_id = ?", (int(first["id"]),))
    h.receiver.store.writer.recent.forget(int(first["id"]))
    again = await h.deliver("short", {"id": "gone", "type": "t"})
    assert again["status"] == "duplicate"
    assert _event_row(h, "short:gone")[4] == "received"  # type: ignore[index]
    h.clock.advance(HOUR_S)
    assert (await h.receiver.store.retention.purge_once()).payloads_purged == 1


async def test_events_left_queued_by_a_removed_handler_are_purged_on_time(
    admin_make_harness: Any,
) -> None:
    """Retention spares events a worker will still run; a handler taken out of the config
    left its queued events spared for ever, body and key, though nothing would run them."""
    handler = {"kind": "python", "target": "tests.integration.handler_targets:record"}
    windows = {"payload_retention": "1h", "dedupe_retention": "2h"}
    provider = {"scheme": "none", "event_id": "json:id", **windows}
    before = await admin_make_harness(providers={"p": {**provider, "handler": handler}})
    await before.deliver("p", {"id": "orphan"})  # queued; the worker never ran
    await before.receiver.store.close()

    after = await admin_make_harness(providers={"p": provider})  # the handler is gone
    after.clock.now_s = before.clock.now_s + 3 * HOUR_S
    await after.receiver.worker.run(until_empty=True)  # its start relabels what it cannot run
    assert _event_row(after, "p:orphan")[4] == "received"  # type: ignore[index]
    report = await after.receiver.store.retention.purge_once()
    assert (report.payloads_purged, report.events_deleted) == (1, 1)


async def test_one_purge_walks_past_waiting_events_to_every_due_one(
    admin_harness: AdminHarness,
) -> None:
    """Events a worker still runs sit among due ones (here sharing an expiry, as a batch's
    do): each batch walks on from where the last stopped, so one run purges every due event
    in small batches and reads each waiting one once."""
    h = admin_harness
    for at in range(2):
        for n in range(6):
            await h.deliver("short", {"id": f"w{at}-{n}", "type": "t"})
        h.clock.advance(10)
    with sqlite3.connect(h.receiver.config.settings.storage.path) as conn:
        conn.execute("UPDATE events SET status = 'queued' WHERE id % 3 = 0")  # 4 of 12 wait
    retention = Retention(h.receiver.store.db, clock=h.clock, batch_size=3)
    h.clock.advance(HOUR_S)
    report = await retention.purge_once()
    assert report.payloads_purged == 8
    with sqlite3.connect(h.receiver.config.settings.storage.path) as conn:
        kept = conn.execute("SELECT event_id FROM payloads ORDER BY event_id").fetchall()
    assert [row[0] for row in kept] == [3, 6, 9, 12]


async def test_a_handler_configured_again_runs_the_events_that_waited_for_it(
    admin_make_harness: Any,
) -> None:
    """Events that waited for a handler read received; once it is back they are its backlog,
    and retention must spare them until they ran (it purged them, and they ended dead)."""
    from tests.integration import handler_targets

    handler_targets.reset()
    handler = {"kind": "python", "target": "tests.integration.handler_targets:record"}
    windows = {"payload_retention": "1h", "dedupe_retention": "2h"}
    provider = {"scheme": "none", "event_id": "json:id", **windows}
    first = await admin_make_harness(providers={"p": {**provider, "handler": handler}})
    await first.deliver("p", {"id": "before"})  # queued for the handler
    await first.receiver.store.close()
    without = await admin_make_harness(providers={"p": provider})
    without.clock.now_s = first.clock.now_s
    await without.deliver("p", {"id": "during"})  # stored received
    await without.receiver.worker.run(until_empty=True)  # "before" reads received too
    await without.receiver.store.close()

    again = await admin_make_harness(providers={"p": {**provider, "handler": handler}})
    again.clock.now_s = without.clock.now_s + 3 * HOUR_S  # both past both windows
    report = await again.receiver.store.retention.purge_once()  # before the worker's start
    assert (report.payloads_purged, report.events_deleted) == (0, 0)
    await again.receiver.worker.run(until_empty=True)
    assert sorted(json.loads(c.body)["id"] for c in handler_targets.STATE.calls) == [
        "before",
        "during",
    ]
