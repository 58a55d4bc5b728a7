"""Replay: one event or many by filter, dry run, audited, all or nothing; never a purged or
running one."""

from __future__ import annotations

import sqlite3
from typing import Any

import aiosqlite
import pytest

from receiver.store.replay import ReplayOutcome
from tests.integration.conftest import AdminHarness, MakeAdminHarness


def _row(h: AdminHarness, sql: str, *params: Any) -> tuple[Any, ...]:
    with sqlite3.connect(h.receiver.config.settings.storage.path) as conn:
        row = conn.execute(sql, params).fetchone()
    assert row is not None
    return tuple(row)


def _count(h: AdminHarness, sql: str, *params: Any) -> int:
    return int(_row(h, sql, *params)[0])


async def _set_dead(h: AdminHarness, *event_ids: int) -> None:
    """Make events look like the worker gave up on them (as after max_attempts)."""

    async def work(conn: aiosqlite.Connection) -> None:
        for event_id in event_ids:
            await conn.execute(
                "UPDATE jobs SET status = 'dead', attempts = 10, run_at = 0, lease_token = NULL,"
                " last_error = 'boom' WHERE event_id = ?",
                (event_id,),
            )
            await conn.execute("UPDATE events SET status = 'dead' WHERE id = ?", (event_id,))

    await h.receiver.store.db.transaction(work)


async def _set_running(h: AdminHarness, event_id: int) -> None:
    async def work(conn: aiosqlite.Connection) -> None:
        await conn.execute(
            "UPDATE jobs SET status = 'running', lease_token = 'L', lease_expires_at = ?"
            " WHERE event_id = ?",
            (h.clock() + 60, event_id),
        )
        await conn.execute("UPDATE events SET status = 'processing' WHERE id = ?", (event_id,))

    await h.receiver.store.db.transaction(work)


async def _seed_dead(h: AdminHarness, count: int, provider: str = "plain") -> list[int]:
    ids = []
    for i in range(count):
        answer = await h.deliver(provider, {"id": f"{provider}{i}", "type": "t"})
        ids.append(int(answer["id"]))
    await _set_dead(h, *ids)
    return ids


async def test_replay_one_requeues_the_job_and_audits_it(admin_harness: AdminHarness) -> None:
    h = admin_harness
    (event_id,) = await _seed_dead(h, 1)
    wakes: list[int] = []
    h.receiver.store.on_committed(lambda: wakes.append(1))
    h.clock.advance(500)
    resp = await h.post(f"/admin/events/{event_id}/replay", {"reason": "handler fixed"})
    assert resp.status == 200
    assert await resp.json() == {"id": str(event_id), "status": "replayed", "dry_run": False}
    status, attempts, run_at, lease, is_replay = _row(
        h,
        "SELECT status, attempts, run_at, lease_token, is_replay FROM jobs WHERE event_id = ?",
        event_id,
    )
    assert (status, attempts, run_at, lease, is_replay) == ("queued", 0, h.clock(), None, 1)
    assert _row(h, "SELECT status FROM events WHERE id = ?", event_id) == ("queued",)
    assert _row(
        h, "SELECT at, cause, actor, reason FROM requeues WHERE event_id = ?", event_id
    ) == (h.clock(), "replay", "admin", "handler fixed")
    assert wakes == [1]  # the worker is woken after the commit
    detail = await (await h.get(f"/admin/events/{event_id}")).json()
    assert detail["job"]["is_replay"] is True
    assert detail["requeues"][0]["reason"] == "handler fixed"


async def test_dry_run_changes_nothing(admin_harness: AdminHarness) -> None:
    h = admin_harness
    ids = await _seed_dead(h, 3)
    resp = await h.post(f"/admin/events/{ids[0]}/replay", {"reason": "look", "dry_run": True})
    assert (await resp.json())["status"] == "would_replay"
    resp = await h.post("/admin/replay", {"reason": "look", "status": "dead", "dry_run": True})
    report = await resp.json()
    assert report["matched"] == 3
    assert (report["replayed"], report["would_replay"]) == (0, 3)  # nothing done, 3 to do
    assert report["dry_run"] is True
    assert report["sample"] == [str(i) for i in reversed(ids)]
    assert _count(h, "SELECT count(*) FROM jobs WHERE status = 'dead'") == 3
    assert _count(h, "SELECT count(*) FROM requeues") == 0


@pytest.mark.parametrize("payload", [{"reason": ""}, {"reason": "   "}, {"reason": 5}])
async def test_a_blank_or_non_text_reason_is_refused(
    admin_harness: AdminHarness, payload: Any
) -> None:
    h = admin_harness
    (event_id,) = await _seed_dead(h, 1)
    for path, extra in (
        (f"/admin/events/{event_id}/replay", {}),
        ("/admin/replay", {"status": "dead"}),
    ):
        resp = await h.post(path, {**payload, **extra})
        assert resp.status == 400, path
        assert (await resp.json())["parameter"] == "reason"
    assert _count(h, "SELECT count(*) FROM requeues") == 0


async def test_the_reason_is_optional(admin_harness: AdminHarness) -> None:
    h = admin_harness
    ids = await _seed_dead(h, 3)
    no_body = await h.admin.post(f"/admin/events/{ids[0]}/replay")  # no body at all
    assert no_body.status == 200
    assert (await no_body.json())["status"] == "replayed"
    empty = await h.post(f"/admin/events/{ids[1]}/replay", {"reason": None})
    assert empty.status == 200
    bulk = await (await h.post("/admin/replay", {"status": "dead"})).json()
    assert (bulk["matched"], bulk["replayed"]) == (1, 1)
    audit = [
        _row(h, "SELECT cause, actor, reason FROM requeues WHERE event_id = ?", i) for i in ids
    ]
    assert audit == [("replay", "admin", None)] * 3


@pytest.mark.parametrize(
    ("payload", "parameter"),
    [
        ({"reason": "r", "dry_run": "yes"}, "dry_run"),
        ({"reason": "r", "statuss": "dead"}, "statuss"),
        ({"reason": "r"}, "filter"),
        ({"reason": "r", "status": "zombie"}, "status"),
        ({"reason": "r", "status": "dead", "limit": 0}, "limit"),
        ({"reason": "r", "status": "dead", "limit": "\u00b2"}, "limit"),
        ({"reason": "r", "since": "whenever"}, "since"),
        ({"reason": "r" * 501, "status": "dead"}, "reason"),
        (["reason"], "body"),
    ],
)
async def test_bulk_replay_refuses_bad_requests(
    admin_harness: AdminHarness, payload: Any, parameter: str
) -> None:
    await _seed_dead(admin_harness, 2)
    resp = await admin_harness.post("/admin/replay", payload)
    assert resp.status == 400
    assert (await resp.json())["parameter"] == parameter
    assert _count(admin_harness, "SELECT count(*) FROM requeues") == 0


@pytest.mark.parametrize("body", [b"{nope", b'{"provider": "plain", "limit": NaN}'])
async def test_invalid_json_body_is_400(admin_harness: AdminHarness, body: bytes) -> None:
    resp = await admin_harness.admin.post("/admin/replay", data=body)
    assert resp.status == 400
    assert (await resp.json())["parameter"] == "body"


async def test_a_field_given_twice_is_refused_not_settled_by_the_last(
    admin_harness: AdminHarness,
) -> None:
    """``{"dry_run": true, "dry_run": false}`` replayed for real: the last one won."""
    h = admin_harness
    (event_id,) = await _seed_dead(h, 1)
    body = b'{"dry_run": true, "reason": "r", "dry_run": false}'
    resp = await h.admin.post(f"/admin/events/{event_id}/replay", data=body)
    assert resp.status == 400
    assert (await resp.json())["parameter"] == "dry_run"
    assert _row(h, "SELECT status FROM jobs WHERE event_id = ?", event_id) == ("dead",)


async def test_a_body_with_a_utf8_byte_order_mark_is_read(admin_harness: AdminHarness) -> None:
    h = admin_harness
    (event_id,) = await _seed_dead(h, 1)
    body = '\ufeff{"reason": "from a Windows client"}'.encode()
    resp = await h.admin.post(f"/admin/events/{event_id}/replay", data=body)
    assert resp.status == 200, await resp.json()


async def test_bulk_replay_by_filter(admin_harness: AdminHarness) -> None:
    h = admin_harness
    dead_plain = await _seed_dead(h, 7)
    await _seed_dead(h, 2, provider="short")
    resp = await h.post(
        "/admin/replay", {"reason": "outage over", "provider": "plain", "status": "dead"}
    )
    report = await resp.json()
    assert report == {
        "dry_run": False,
        "matched": 7,
        "replayed": 7,
        "would_replay": 7,
        "skipped": {},
        "sample": [str(i) for i in reversed(dead_plain)],
        "has_more": False,
        "next_cursor": None,
    }
    assert _count(h, "SELECT count(*) FROM jobs WHERE status = 'queued' AND is_replay = 1") == 7
    assert _count(h, "SELECT count(*) FROM events WHERE status = 'dead'") == 2
    assert _count(h, "SELECT count(*) FROM requeues WHERE actor = 'admin'") == 7


async def test_a_bulk_replay_that_fails_replays_nothing(admin_harness: AdminHarness) -> None:
    """Batches of 100 committed one by one: a storage error at the third left 200 events
    replayed behind a 503 that said nothing of them, and running the same replay again ran
    their handlers twice. Now the answer's 503 means none: running it again is safe."""
    h = admin_harness
    ids = await _seed_dead(h, 250)
    with sqlite3.connect(h.receiver.config.settings.storage.path) as conn:
        conn.execute(
            "CREATE TRIGGER fail_late BEFORE INSERT ON requeues WHEN new.event_id = ?"
            " BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END".replace("?", str(ids[-1]))
        )
    resp = await h.post("/admin/replay", {"provider": "plain", "status": "dead"})
    assert resp.status == 503, await resp.text()
    assert (await resp.json())["error"] == "storage_unavailable"
    assert _count(h, "SELECT count(*) FROM requeues") == 0
    assert _count(h, "SELECT count(*) FROM jobs WHERE status = 'dead'") == 250
    with sqlite3.connect(h.receiver.config.settings.storage.path) as conn:
        conn.execute("DROP TRIGGER fail_late")
    resp = await h.post("/admin/replay", {"provider": "plain", "status": "dead"})
    assert (await resp.json())["replayed"] == 250
    assert _count(h, "SELECT count(*) FROM requeues") == 250


@pytest.mark.parametrize("path", ["/admin/replay", "/admin/events/{id}/replay"])
async def test_a_query_string_on_a_replay_is_refused_not_ignored(
    admin_harness: AdminHarness, path: str
) -> None:
    """``POST /admin/replay?dry_run=true`` answered ``"dry_run": false`` and replayed for
    real: a write route's parameters are in its body, and anything in its query is a 400."""
    h = admin_harness
    [event_id] = await _seed_dead(h, 1)
    url = path.format(id=event_id) + "?dry_run=true"
    resp = await h.post(url, {"provider": "plain"} if path == "/admin/replay" else {})
    assert resp.status == 400
    assert (await resp.json())["parameter"] == "dry_run"
    assert _count(h, "SELECT count(*) FROM requeues") == 0


async def test_bulk_replay_limit_reports_more(admin_harness: AdminHarness) -> None:
    h = admin_harness
    await _seed_dead(h, 5)
    report = await (
        await h.post("/admin/replay", {"reason": "some", "status": "dead", "limit": 2})
    ).json()
    assert (report["matched"], report["replayed"], report["has_more"]) == (2, 2, True)
    rest = await (await h.post("/admin/replay", {"reason": "rest", "status": "dead"})).json()
    assert (rest["matched"], rest["has_more"]) == (3, False)


async def test_bulk_replay_ignores_events_arriving_meanwhile(admin_harness: AdminHarness) -> None:
    h = admin_harness
    await _seed_dead(h, 4)
    replayer = h.receiver.store.replayer
    original = replayer._matching_ids
    arrived: list[int] = []

    async def deliver_then_match(*args: Any, **kwargs: Any) -> Any:
        # Between the run's ceiling (the newest id when it began) and its search.
        answer = await h.deliver("plain", {"id": f"late{len(arrived)}", "type": "t"})
        arrived.append(int(answer["id"]))
        return await original(*args, **kwargs)

    replayer._matching_ids = deliver_then_match  # type: ignore[method-assign]
    report = await (await h.post("/admin/replay", {"reason": "r", "provider": "plain"})).json()
    assert report["matched"] == 4
    assert report["sample"] and max(int(i) for i in report["sample"]) < min(arrived)
    assert arrived
    for event_id in arrived:
        assert _count(h, "SELECT count(*) FROM requeues WHERE event_id = ?", event_id) == 0


async def test_purged_payload_cannot_be_replayed(admin_harness: AdminHarness) -> None:
    h = admin_harness
    (event_id,) = await _seed_dead(h, 1, provider="short")
    h.clock.advance(3600)  # short: payload retention 1h, dedupe 2h
    assert (await h.receiver.store.retention.purge_once()).payloads_purged == 1
    for payload in ({"reason": "r"}, {"reason": "r", "dry_run": True}):
        resp = await h.post(f"/admin/events/{event_id}/replay", payload)
        assert resp.status == 409
        assert (await resp.json())["error"] == "payload_purged"
    report = await (await h.post("/admin/replay", {"reason": "r", "provider": "short"})).json()
    assert (report["matched"], report["replayed"]) == (1, 0)
    assert report["skipped"] == {"payload_purged": 1}
    assert _row(h, "SELECT status FROM jobs WHERE event_id = ?", event_id) == ("dead",)


async def test_running_event_is_not_replayed(admin_harness: AdminHarness) -> None:
    h = admin_harness
    answer = await h.deliver("plain", {"id": "busy", "type": "t"})
    event_id = int(answer["id"])
    await _set_running(h, event_id)
    resp = await h.post(f"/admin/events/{event_id}/replay", {"reason": "r"})
    assert resp.status == 409
    assert (await resp.json())["error"] == "event_running"
    assert _row(h, "SELECT lease_token FROM jobs WHERE event_id = ?", event_id) == ("L",)


async def test_a_run_whose_lease_ran_out_is_replayed(admin_harness: AdminHarness) -> None:
    """A server killed mid-run leaves its job ``running`` with a lease that runs out; an
    operator replaying it then (the server down, or not yet back) was refused for good."""
    h = admin_harness
    answer = await h.deliver("plain", {"id": "crashed", "type": "t"})
    event_id = int(answer["id"])
    await _set_running(h, event_id)  # leased for another 60 s
    h.clock.advance(61)
    resp = await h.post(f"/admin/events/{event_id}/replay", {"reason": "after the crash"})
    assert resp.status == 200, await resp.json()
    assert _row(
        h, "SELECT status, lease_token, is_replay FROM jobs WHERE event_id = ?", event_id
    ) == (
        "queued",
        None,
        1,
    )


async def _replay_harness(make: MakeAdminHarness) -> AdminHarness:
    from tests.integration import handler_targets

    handler_targets.reset()
    providers = {
        "hooked": {
            "scheme": "none",
            "event_id": "json:id",
            "payload_retention": "1h",
            "dedupe_retention": "2h",
            "handler": {"kind": "python", "target": "tests.integration.handler_targets:record"},
        }
    }
    return await make(providers=providers)


@pytest.mark.parametrize("wait_s", [2, 3602])  # past the payload window; past the key's too
async def test_a_replay_near_the_end_of_its_window_still_runs_with_its_body(
    admin_make_harness: MakeAdminHarness, wait_s: int
) -> None:
    """The purge took a replayed event's payload (or its whole row) while its job waited in
    the queue: the replay answered "replayed", and the handler never saw it."""
    from tests.integration import handler_targets

    h = await _replay_harness(admin_make_harness)
    answer = await h.deliver("hooked", {"id": "old", "type": "t"})
    await h.receiver.worker.run(until_empty=True)
    h.clock.advance(3599)  # one second left of its payload window (1 h; its key: 2 h)
    resp = await h.post(f"/admin/events/{answer['id']}/replay", {"reason": "lost downstream"})
    assert (resp.status, (await resp.json())["status"]) == (200, "replayed")
    h.clock.advance(wait_s)  # the queue is busy a while; the minute's purge runs meanwhile
    report = await h.receiver.store.retention.purge_once()
    assert (report.payloads_purged, report.events_deleted) == (0, 0)
    await h.receiver.worker.run(until_empty=True)
    assert [c.is_replay for c in handler_targets.STATE.calls] == [False, True]
    report = await h.receiver.store.retention.purge_once()  # its run is over: now they go
    assert (report.payloads_purged, report.events_deleted) == (1, int(wait_s > 3600))


async def test_an_event_whose_provider_has_no_handler_is_not_replayed(
    admin_harness: AdminHarness,
) -> None:
    h = admin_harness  # ``short`` has no handler: a replay would queue a job nothing runs
    (event_id,) = await _seed_dead(h, 1, provider="short")
    (handled,) = await _seed_dead(h, 1, provider="plain")
    for payload in ({"reason": "r"}, {"reason": "r", "dry_run": True}):
        resp = await h.post(f"/admin/events/{event_id}/replay", payload)
        assert resp.status == 409
        body = await resp.json()
        assert body["error"] == "no_handler"
        assert "no handler" in body["detail"]
    report = await (await h.post("/admin/replay", {"reason": "r", "status": "dead"})).json()
    assert (report["matched"], report["replayed"]) == (2, 1)
    assert report["skipped"] == {"no_handler": 1}
    assert _row(h, "SELECT status FROM jobs WHERE event_id = ?", event_id) == ("dead",)
    assert _row(h, "SELECT status FROM jobs WHERE event_id = ?", handled) == ("queued",)
    assert _count(h, "SELECT count(*) FROM requeues WHERE event_id = ?", event_id) == 0


@pytest.mark.parametrize("event_id", ["424242", "abc"])
async def test_replay_of_an_unknown_event_is_404(
    admin_harness: AdminHarness, event_id: str
) -> None:
    resp = await admin_harness.post(f"/admin/events/{event_id}/replay", {"reason": "r"})
    assert resp.status == 404


async def test_store_level_replay_ids_reports_each_cause(admin_harness: AdminHarness) -> None:
    h = admin_harness
    ids = await _seed_dead(h, 2)
    await _set_running(h, ids[1])
    replayer = h.receiver.store.replayer
    report = await replayer.replay_ids([ids[0], ids[1], 999, ids[0]], actor="cli", reason="r")
    assert (report.matched, report.replayed) == (2, 1)
    assert report.skipped == {"running": 1, "not_found": 1}
    assert await replayer.replay_one(999, actor="cli", reason="r") is ReplayOutcome.NOT_FOUND
    assert _row(h, "SELECT actor FROM requeues WHERE event_id = ?", ids[0]) == ("cli",)


async def test_replay_metrics_count_by_actor(admin_harness: AdminHarness) -> None:
    h = admin_harness
    ids = await _seed_dead(h, 2)
    await h.post("/admin/replay", {"reason": "r", "status": "dead"})
    await h.receiver.store.replayer.replay_ids(ids[:1], actor="cli", reason="again")
    text = await (await h.get("/metrics")).text()
    assert 'receiver_replays_total{actor="admin"} 2.0' in text
    assert 'receiver_replays_total{actor="cli"} 1.0' in text


async def test_the_worker_runs_a_replay_again_with_the_same_key(
    admin_make_harness: MakeAdminHarness,
) -> None:
    from tests.integration import handler_targets

    handler_targets.reset()
    providers = {
        "hooked": {
            "scheme": "none",
            "event_id": "json:id",
            "handler": {"kind": "python", "target": "tests.integration.handler_targets:record"},
        }
    }
    h = await admin_make_harness(providers=providers)
    answer = await h.deliver("hooked", {"id": "once", "type": "t"})
    await h.receiver.worker.run(until_empty=True)
    resp = await h.post(f"/admin/events/{answer['id']}/replay", {"reason": "downstream lost it"})
    assert resp.status == 200
    await h.receiver.worker.run(until_empty=True)
    calls = handler_targets.STATE.calls
    assert [(c.key, c.is_replay, c.attempt) for c in calls] == [
        ("hooked:once", False, 1),
        ("hooked:once", True, 1),
    ]
    detail = await (await h.get(f"/admin/events/{answer['id']}")).json()
    assert detail["status"] == "succeeded"
    assert [a["is_replay"] for a in detail["attempts"]] == [False, True]


async def test_a_bulk_replay_runs_one_serialize_by_value_in_receive_order(
    admin_make_harness: MakeAdminHarness,
) -> None:
    """Bulk replay once queued its batches newest first, and a worker runs what is queued:
    the newer events of one ``serialize_by`` value ran before the older ones were queued (an
    account's "deleted" before its "created"). The worker runs at once after the commit."""
    from tests.integration import handler_targets

    handler_targets.reset()
    providers = {
        "ordered": {
            "scheme": "none",
            "event_id": "json:id",
            "serialize_by": "json:account",
            "handler": {"kind": "python", "target": "tests.integration.handler_targets:record"},
        }
    }
    h = await admin_make_harness(providers=providers)
    ids = [
        int((await h.deliver("ordered", {"id": f"e{n}", "type": "t", "account": "a"}))["id"])
        for n in range(6)
    ]
    worker = h.receiver.worker
    await worker.run(until_empty=True)
    handler_targets.STATE.calls.clear()
    replayer = h.receiver.store.replayer
    commit_batch = replayer._replay_all

    async def commit_then_work(*args: Any, **kwargs: Any) -> Any:
        candidates = await commit_batch(*args, **kwargs)
        await worker.run(until_empty=True)  # a worker runs whatever is queued, at once
        return candidates

    replayer._replay_all = commit_then_work  # type: ignore[method-assign]
    report = await (await h.post("/admin/replay", {"provider": "ordered"})).json()
    assert report["replayed"] == 6
    assert [c.id for c in handler_targets.STATE.calls] == ids


async def test_bulk_replay_continues_from_its_cursor_instead_of_starting_over(
    admin_harness: AdminHarness,
) -> None:
    """Replaying by a filter that replay does not change (a type, not a status) with a limit:
    "run again" replayed the same newest events twice and the older ones never. The report's
    ``next_cursor`` continues with the older matches, each event once."""
    h = admin_harness
    ids = await _seed_dead(h, 5)
    replayed: list[str] = []
    body: dict[str, object] = {"type": "t", "limit": 2}
    for _ in range(3):
        report = await (await h.post("/admin/replay", body)).json()
        replayed += report["sample"]
        if report["next_cursor"] is None:
            break
        assert report["has_more"] is True
        body = {"type": "t", "limit": 2, "cursor": report["next_cursor"]}
    assert replayed == [str(i) for i in sorted(ids, reverse=True)]
    assert _count(h, "SELECT count(*) FROM requeues WHERE cause = 'replay'") == 5


async def test_a_time_too_large_for_any_clock_is_a_400(admin_harness: AdminHarness) -> None:
    """A JSON integer of 400 digits overflowed float(): a 500 and a traceback in the log."""
    h = admin_harness
    body = '{"since": 1' + "0" * 400 + ', "dry_run": true}'
    resp = await h.admin.post("/admin/replay", data=body.encode())
    assert resp.status == 400, await resp.text()
    assert (await resp.json())["parameter"] == "since"
