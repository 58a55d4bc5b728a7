"""Storage trouble is 503 with Retry-After, never a 2xx without a committed row; ingest recovers
by itself when the cause goes away (DESIGN guarantee 1)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
import structlog

from receiver.store import database as database_module
from receiver.store.database import Database
from receiver.store.recent import RecentKeys
from tests.integration.conftest import Harness
from tests.support.factories import event_body, signed_headers


def _rows(harness: Harness) -> int:
    with sqlite3.connect(harness.receiver.config.settings.storage.path) as conn:
        return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])


async def _writer_pragma(harness: Harness, pragma: str) -> int:
    """Set a pragma on the store's own writer connection (max_page_count is per connection)."""

    async def work(conn: aiosqlite.Connection) -> int:
        async with conn.execute(pragma) as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    return await harness.receiver.store.db.transaction(work)


async def test_full_database_is_503_and_recovers_without_restart(make_harness: Any) -> None:
    harness: Harness = await make_harness(storage={"retry_after_s": 7})
    body = event_body("warmup")
    assert (await harness.post("sw", body, signed_headers(body, msg_id="w"))).status == 200
    pages = await _writer_pragma(harness, "PRAGMA page_count")
    await _writer_pragma(harness, f"PRAGMA max_page_count = {pages}")

    acked: list[str] = []
    refused = 0
    for i in range(30):
        big = event_body(i, pad="z" * 20_000)
        resp = await harness.post("sw", big, signed_headers(big, msg_id=f"full{i}"))
        if resp.status == 200:
            acked.append(f"full{i}")
            continue
        assert resp.status == 503
        assert resp.headers["Retry-After"] == "7"
        assert (await resp.json())["error"] == "storage_unavailable"
        refused += 1
    assert refused > 0
    # Every acknowledged event is stored; nothing refused is.
    assert _rows(harness) == 1 + len(acked)
    # The refusals show in the metrics, where an alert can see them.
    registry = harness.receiver.metrics.registry
    counted = registry.get_sample_value(
        "receiver_deliveries_total", {"provider": "sw", "outcome": "storage_unavailable"}
    )
    assert counted == refused
    # Readiness says so too (its own probe rewrites one page, which still fits: not enough).
    reason = await harness.receiver.store.unwritable_reason()
    assert reason == "ingest's last group commit failed: the database is full"

    await _writer_pragma(harness, "PRAGMA max_page_count = 1073741823")
    late = event_body("after")
    resp = await harness.post("sw", late, signed_headers(late, msg_id="after"))
    assert resp.status == 200
    assert (await resp.json())["status"] == "accepted"
    assert await harness.receiver.store.unwritable_reason() is None


@contextlib.asynccontextmanager
async def _write_lock_held(harness: Harness) -> AsyncIterator[None]:
    """Another process's write transaction on the store's file, for the ``with`` block."""
    path = str(harness.receiver.config.settings.storage.path)
    held, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=_hold_write_lock, args=(path, held, release), daemon=True)
    holder.start()
    assert await asyncio.to_thread(held.wait, 10)
    try:
        yield
    finally:
        release.set()
        await asyncio.to_thread(holder.join, 10)


async def _duplicates_while_locked(
    harness: Harness, body: bytes, headers: dict[str, str], *, count: int
) -> None:
    """``count`` redeliveries answered from memory while another process holds the write lock,
    and time for their count's write-back to try, and fail on the lock."""
    async with _write_lock_held(harness):
        for _ in range(count):
            resp = await harness.post("sw", body, headers)
            assert (await resp.json())["status"] == "duplicate"
        await asyncio.sleep(0.5)


def _hold_write_lock(path: str, held: threading.Event, release: threading.Event) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        held.set()
        release.wait(timeout=30)
        conn.execute("ROLLBACK")
    finally:
        conn.close()


async def test_database_locked_past_budget_is_503_then_recovers(make_harness: Any) -> None:
    harness: Harness = await make_harness(storage={"busy_timeout_s": 0.3})
    async with _write_lock_held(harness):
        body = event_body("locked")
        resp = await harness.post("sw", body, signed_headers(body, msg_id="locked"))
        assert resp.status == 503
        assert int(resp.headers["Retry-After"]) >= 1
        assert (await resp.json())["error"] == "storage_unavailable"
    assert _rows(harness) == 0
    resp = await harness.post("sw", body, signed_headers(body, msg_id="locked"))
    assert resp.status == 200
    assert (await resp.json())["status"] == "accepted"


async def test_a_503_for_storage_trouble_is_logged_at_warning_level(
    make_harness: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At ``logging.level: warning`` (to drop the per-request lines) a full or locked disk left
    no line at all: only the metric knew."""
    import json

    from tests.support.logs import json_logs

    with json_logs(monkeypatch, "warning") as buffer:
        harness: Harness = await make_harness(storage={"busy_timeout_s": 0.3})
        async with _write_lock_held(harness):
            body = event_body("warned")
            resp = await harness.post("sw", body, signed_headers(body, msg_id="warned"))
            assert resp.status == 503
        resp = await harness.post("sw", body, signed_headers(body, msg_id="warned"))
        assert resp.status == 200
    lines = [json.loads(line) for line in buffer.getvalue().splitlines()]
    refused = [line for line in lines if line["event"] == "storage_unavailable"]
    assert [(line["level"], line["key"]) for line in refused] == [("warning", "sw:warned")]
    assert not [line for line in lines if line["event"] == "event_accepted"]


async def test_each_event_is_answered_within_the_budget_while_the_lock_is_held(
    make_harness: Any,
) -> None:
    """Events queue behind a batch stuck on the lock; each still gets its 503 about one budget
    after it arrived (1.25x at most), not after the batches ahead of it failed one by one
    (2-4x the budget)."""
    budget = 0.4
    harness: Harness = await make_harness(storage={"busy_timeout_s": budget})
    loop = asyncio.get_running_loop()

    async def deliver(i: int) -> tuple[int, float]:
        await asyncio.sleep(i * 0.1)
        body = event_body(f"queued{i}")
        started = loop.time()
        resp = await harness.post("sw", body, signed_headers(body, msg_id=f"queued{i}"))
        return resp.status, loop.time() - started

    async with _write_lock_held(harness):
        answers = await asyncio.gather(*(deliver(i) for i in range(20)))
    assert {status for status, _ in answers} == {503}
    slowest = max(waited for _, waited in answers)
    assert slowest < 1.25 * budget + 0.2, f"an answer took {slowest:.2f} s (budget {budget} s)"
    # Whatever was written after the lock went, a redelivery now gets 200 and one row per key.
    for i in range(20):
        body = event_body(f"queued{i}")
        resp = await harness.post("sw", body, signed_headers(body, msg_id=f"queued{i}"))
        assert resp.status == 200
    assert _rows(harness) == 20


async def test_deliveries_behind_a_commit_that_never_returns_are_answered_in_time(
    make_harness: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A disk that does not return (an fsync on a hung volume): the first delivery got its 503
    in time, but the deadline was armed only when a batch started, and none could start, so a
    delivery arriving after that waited for the disk, holding its connection and its body."""
    harness: Harness = await make_harness(storage={"busy_timeout_s": 0.2})  # answer in 0.25 s
    disk = threading.Event()
    write = Database._in_writer_thread

    def hung(self: Database, *args: Any) -> Any:
        disk.wait(10)
        return write(self, *args)

    monkeypatch.setattr(Database, "_in_writer_thread", hung)
    loop = asyncio.get_running_loop()
    waits = []
    try:
        for name in ("first", "second", "third"):
            body = event_body(name)
            started = loop.time()
            resp = await harness.post("sw", body, signed_headers(body, msg_id=name))
            waits.append((resp.status, loop.time() - started))
    finally:
        disk.set()
    assert [status for status, _ in waits] == [503, 503, 503]
    assert max(waited for _, waited in waits) < 1.0, waits


async def test_bodies_refused_while_storage_is_locked_are_not_kept(make_harness: Any) -> None:
    """Each delivery answered 503 stayed in the writer's queue, body and all, until a batch
    could take it: while another process held the lock, memory grew with every delivery,
    past ``body_memory_bytes`` (which stops counting a body once it is answered)."""
    harness: Harness = await make_harness(
        storage={"busy_timeout_s": 0.2, "batch_max": 2},
        server={"body_memory_bytes": 1_000_000, "max_body_bytes": 100_000},
    )
    writer = harness.receiver.store.writer
    held: list[int] = []

    async def deliver(name: str) -> int:
        body = event_body(name, pad="z" * 50_000)
        return (await harness.post("sw", body, signed_headers(body, msg_id=name))).status

    async with _write_lock_held(harness):
        for wave in range(6):
            statuses = await asyncio.gather(*(deliver(f"w{wave}-{i}") for i in range(15)))
            assert set(statuses) == {503}
            held.append(sum(len(p.event.body) for p in writer._pending))
    assert max(held) <= 1_000_000, held


async def test_a_fault_after_the_commit_still_answers_and_ingest_goes_on(
    make_harness: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug between COMMIT and the answers (the memory of keys, a metric, the worker's
    wake-up) ended the flusher task with the batch unanswered, its deadline timer cancelled:
    those requests hung, and so did one that joined the queue while that batch committed; the
    exception surfaced only as a task nobody awaited."""
    harness: Harness = await make_harness(storage={"busy_timeout_s": 0.2})  # answer in 0.25 s
    remember = RecentKeys.remember
    calls = []

    def failing_once(self: RecentKeys, *args: Any) -> None:
        calls.append(args)
        if len(calls) == 1:
            raise RuntimeError("injected")
        remember(self, *args)

    write = Database._in_writer_thread
    first_commit = threading.Event()

    def slow_first(self: Database, *args: Any) -> Any:
        if not first_commit.is_set():
            first_commit.set()
            time.sleep(0.1)  # long enough for the second delivery to join the queue
        return write(self, *args)

    monkeypatch.setattr(RecentKeys, "remember", failing_once)
    monkeypatch.setattr(Database, "_in_writer_thread", slow_first)

    async def deliver(name: str) -> tuple[int, str]:
        body = event_body(name)
        resp = await harness.post("sw", body, signed_headers(body, msg_id=name))
        return resp.status, (await resp.json())["status"]

    with structlog.testing.capture_logs() as logs:
        first = asyncio.create_task(deliver("first"))
        await asyncio.to_thread(first_commit.wait, 5)
        async with asyncio.timeout(5):
            answers = await asyncio.gather(first, deliver("second"))
    assert answers == [(200, "accepted"), (200, "accepted")]
    assert [e["event"] for e in logs if e["event"] == "ingest_flusher_failed"] == [
        "ingest_flusher_failed"
    ]


async def test_readiness_reports_a_locked_store(make_harness: Any, aiohttp_client: Any) -> None:
    harness: Harness = await make_harness(storage={"busy_timeout_s": 0.2})
    await harness.receiver.worker.start()
    admin = await aiohttp_client(harness.receiver.admin_app)
    with structlog.testing.capture_logs() as logs:
        assert (await admin.get("/readyz")).status == 200
        async with _write_lock_held(harness):
            resp = await admin.get("/readyz")
            assert resp.status == 503
            answer = await resp.json()
            assert answer["checks"] == {"store": False, "worker": True}
            # The admin listener says why; the ingest one, open to anyone, only what.
            assert answer["reasons"] == {"store": "the database is locked by another writer"}
            public = await (await harness.client.get("/readyz")).json()
            assert public == {"status": "not_ready", "checks": answer["checks"]}
        assert (await admin.get("/readyz")).status == 200
    await harness.receiver.worker.stop()
    # Each change is a log line (a probe's 503 alone left no trace), not each probe.
    changes = [
        (e["log_level"], e["is_ready"], e.get("reasons"))
        for e in logs
        if e["event"] == "readiness_changed"
    ]
    locked = {"store": "the database is locked by another writer"}
    assert changes == [("warning", False, locked), ("info", True, None)]


async def test_readiness_answers_in_time_on_a_disk_that_stopped_answering(
    make_harness: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A frozen disk: the readiness write waited with it, so /readyz hung past any probe's
    timeout (an orchestrator learnt nothing), and every probe queued one more write."""
    harness: Harness = await make_harness(storage={"busy_timeout_s": 1.0})  # 1.25 s at most
    store = harness.receiver.store
    disk = asyncio.Event()
    write = database_module._rewrite_header
    writes = []

    async def hung(conn: aiosqlite.Connection) -> None:  # the probe's write, inside its BEGIN
        writes.append(conn)
        await disk.wait()
        await write(conn)

    monkeypatch.setattr(database_module, "_rewrite_header", hung)
    try:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(5):  # a hang fails here, not at the test's own timeout
            first = await store.unwritable_reason()
            started = loop.time()
            second = await store.unwritable_reason()
            second_took_s = loop.time() - started
        assert first is not None and "has waited" in first and "to commit" in first
        assert second is not None and "has waited" in second
        assert len(writes) == 1  # the second probe shared the first one's write
        # And its budget: counted from when that write began, not again from its own start
        # (a probe behind another one's took up to twice the documented bound).
        assert second_took_s < 1.0
    finally:
        disk.set()
    for _ in range(100):  # the disk answers again: so does readiness
        if await store.unwritable_reason() is None:
            break
        await asyncio.sleep(0.05)
    assert await store.unwritable_reason() is None


def _failing_commits(harness: Harness, monkeypatch: Any, times: int, error: Any) -> dict[str, int]:
    """The store's next ``times`` COMMITs raise ``error()``; the count left, to change."""
    db = harness.receiver.store.db
    real_commit = db._commit
    failures = {"left": times}

    def failing_commit(raw: sqlite3.Connection) -> None:
        if failures["left"] > 0:
            failures["left"] -= 1
            raise error()
        real_commit(raw)

    monkeypatch.setattr(db, "_commit", failing_commit)
    return failures


async def test_io_error_at_commit_is_503_and_nothing_is_half_written(
    make_harness: Any, monkeypatch: Any
) -> None:
    """SQLite reports an I/O error when the disk fails under it; injected here at COMMIT on the
    store's own writer connection (the one place a failing fsync surfaces)."""
    harness: Harness = await make_harness()
    failures = _failing_commits(
        harness, monkeypatch, 3, lambda: sqlite3.OperationalError("disk I/O error")
    )
    body = event_body("io")
    resp = await harness.post("sw", body, signed_headers(body, msg_id="io"))
    assert resp.status == 503
    assert "Retry-After" in resp.headers
    assert (await resp.json()) == {
        "error": "storage_unavailable",
        "detail": "the database had an I/O error",
    }
    assert _rows(harness) == 0
    failures["left"] = 0
    resp = await harness.post("sw", body, signed_headers(body, msg_id="io"))
    assert (await resp.json())["status"] == "accepted"
    with sqlite3.connect(harness.receiver.config.settings.storage.path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT count(*) FROM jobs").fetchone()[0] == 1


async def test_every_storage_503_says_the_configured_retry_after(
    make_harness: Any, monkeypatch: Any
) -> None:
    """A write the store refused for a reason of its own answered ``Retry-After: 1`` where
    ``storage.retry_after_s`` (documented as the value of every such 503) says 7."""
    harness: Harness = await make_harness(storage={"retry_after_s": 7})
    _failing_commits(harness, monkeypatch, 1, lambda: RuntimeError("not the storage's fault"))
    body = event_body("refused")
    resp = await harness.post("sw", body, signed_headers(body, msg_id="refused"))
    assert resp.status == 503
    assert resp.headers["Retry-After"] == "7"
    assert (await resp.json())["detail"] == "the database refused the write"
    await harness.receiver.store.writer.close()  # a stop: what comes now is refused
    resp = await harness.post("sw", body, signed_headers(body, msg_id="refused"))
    assert resp.status == 503
    assert resp.headers["Retry-After"] == "7"
    assert (await resp.json())["detail"] == "the receiver is shutting down"


@pytest.mark.parametrize("is_symlink", [False, True], ids=["file", "symlink"])
async def test_the_wal_size_is_a_metric(
    make_harness: Any, tmp_path: Path, is_symlink: bool
) -> None:
    """A reader that holds a snapshot stops checkpoints: the WAL's size is what shows it. Where
    ``storage.path`` is a symlink, SQLite names the WAL after the file it points to: the
    metric read a file that did not exist, 0, and an alert on it never fired."""
    path = tmp_path / "receiver.db"
    if is_symlink:
        (tmp_path / "real").mkdir()
        path.symlink_to(tmp_path / "real" / "store.db")
    harness: Harness = await make_harness(storage={"path": str(path)})
    registry = harness.receiver.metrics.registry
    body = event_body("wal")
    assert (await harness.post("sw", body, signed_headers(body, msg_id="wal"))).status == 200
    wal = f"{path.resolve()}-wal"
    size = await asyncio.to_thread(os.path.getsize, wal)
    assert registry.get_sample_value("receiver_wal_bytes") == size > 0


@pytest.mark.parametrize("lost", ["database", "wal"])
async def test_a_database_file_removed_while_serving_is_never_acknowledged_again(
    make_harness: Any, aiohttp_client: Any, lost: str
) -> None:
    """SQLite keeps writing to a file that was deleted (or moved, or replaced) under it, and
    a restart then starts from whatever is at the path: every 200 given meanwhile would be
    lost. The same for the WAL: deleted (a large one, to free space), it takes every commit
    not yet checkpointed with it, the schema of a new file too. From the first commit that
    sees it, deliveries (redeliveries answered from memory too) are 503 and readiness is off,
    until a restart."""
    harness: Harness = await make_harness()
    await harness.receiver.worker.start()
    admin = await aiohttp_client(harness.receiver.admin_app)
    body = event_body("before")
    assert (await harness.post("sw", body, signed_headers(body, msg_id="before"))).status == 200
    path = harness.receiver.config.settings.storage.path
    if lost == "database":
        os.replace(path, path.with_name("moved-away.db"))  # an operator's mistake, a cleanup job
    else:
        os.remove(f"{path}-wal")

    answers = []
    for i in range(3):
        new = event_body(f"after{i}")
        answers.append(await harness.post("sw", new, signed_headers(new, msg_id=f"after{i}")))
    again = await harness.post("sw", body, signed_headers(body, msg_id="before"))
    assert [r.status for r in [*answers, again]] == [503, 503, 503, 503]
    assert (await answers[-1].json())["error"] == "storage_unavailable"
    assert "Retry-After" in again.headers
    assert (await admin.get("/readyz")).status == 503
    # Only a restart helps: liveness fails too, so a supervisor's probe restarts the process.
    for client in (admin, harness.client):
        alive = await client.get("/healthz")
        assert (alive.status, await alive.json()) == (503, {"status": "restart_needed"})
    await harness.receiver.worker.stop()


async def test_duplicate_counts_whose_write_failed_are_written_later(make_harness: Any) -> None:
    """Redeliveries are answered from memory and their count written afterwards; a write that
    fails (the database locked past its budget) used to drop those counts for good."""
    harness: Harness = await make_harness(storage={"busy_timeout_s": 0.2})
    body = event_body("counted")
    headers = signed_headers(body, msg_id="counted")
    first = await (await harness.post("sw", body, headers)).json()
    await _duplicates_while_locked(harness, body, headers, count=3)
    assert (await (await harness.post("sw", body, headers)).json())["status"] == "duplicate"
    stored = await harness.receiver.store.get_event(int(first["id"]))
    assert stored is not None and stored.duplicate_count == 4


async def test_readiness_on_the_ingest_listener_is_one_write_a_second_not_one_per_probe(
    make_harness: Any, aiohttp_client: Any
) -> None:
    """The store's readiness check is a committed write on the single writer: a flood of
    probes on the public listener took ingest from 1 650 to 280 deliveries a second."""
    harness: Harness = await make_harness()
    readiness = harness.receiver.readiness
    calls = 0
    real = readiness.checks["store"]

    async def counted() -> bool:
        nonlocal calls
        calls += 1
        return await real()

    readiness.checks["store"] = counted
    answers = await asyncio.gather(*(harness.client.get("/readyz") for _ in range(20)))
    answers += [await harness.client.get("/readyz") for _ in range(20)]
    assert {resp.status for resp in answers} <= {200, 503}  # (the worker is not started)
    assert calls == 1
    admin = await aiohttp_client(harness.receiver.admin_app)
    await admin.get("/readyz")
    await admin.get("/readyz")
    assert calls == 3  # the admin listener's probe is always fresh


def _duplicate_count(harness: Harness, event_id: str) -> int:
    with sqlite3.connect(harness.receiver.config.settings.storage.path) as conn:
        row = conn.execute("SELECT duplicate_count FROM events WHERE id = ?", (int(event_id),))
        return int(row.fetchone()[0])


async def test_duplicate_counts_whose_write_failed_are_written_without_more_traffic(
    make_harness: Any,
) -> None:
    """Kept counts waited for the next delivery to carry them; without one they were never
    written, and a clean shutdown dropped them."""
    harness: Harness = await make_harness(storage={"busy_timeout_s": 0.2})
    body = event_body("quiet")
    headers = signed_headers(body, msg_id="quiet")
    first = await (await harness.post("sw", body, headers)).json()
    await _duplicates_while_locked(harness, body, headers, count=2)
    await asyncio.sleep(1.5)  # no further delivery: the kept counts are tried again by themselves
    assert _duplicate_count(harness, first["id"]) == 2
    await _duplicates_while_locked(harness, body, headers, count=1)
    await harness.receiver.store.close()  # at once, as on SIGTERM: one last try
    assert _duplicate_count(harness, first["id"]) == 3


async def test_a_redelivery_answered_503_while_its_batch_waited_is_not_counted(
    make_harness: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the budget a waiting delivery is answered 503, but its batch may still commit: a
    redelivery in it was counted although the provider heard 503 (and its retry counts)."""
    harness: Harness = await make_harness(storage={"busy_timeout_s": 0.08})  # answers at 0.1 s
    body = event_body("slow")
    headers = signed_headers(body, msg_id="slow")
    first = await (await harness.post("sw", body, headers)).json()
    writer = harness.receiver.store.writer
    writer.recent.clear()  # the redelivery goes to the store, not the memory of keys
    db = harness.receiver.store.db
    real = db.transaction_sync

    async def slow_disk(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(0.3)  # a commit that takes longer than the budget, then lands
        return await real(*args, **kwargs)

    monkeypatch.setattr(db, "transaction_sync", slow_disk)
    resp = await harness.post("sw", body, headers)
    assert resp.status == 503
    monkeypatch.setattr(db, "transaction_sync", real)
    await asyncio.sleep(0.5)  # the batch commits, and the correction with the next write
    await writer.settle()
    assert _duplicate_count(harness, first["id"]) == 0
