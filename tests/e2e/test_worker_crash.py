"""A real ``receiver serve`` with an http handler, killed while handlers run (DESIGN §1.3).

The downstream is an idempotent sink: it applies an effect the first time it sees an
``Idempotency-Key`` and answers 200 to every repeat. After SIGKILL and a restart every event is
processed, some are delivered again (their lease ran out), and each key has exactly one effect,
because every delivery of an event carries the same key. After SIGTERM the jobs that were in
flight go back to the queue without counting an attempt and finish after the restart.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.support.serve import ServeProcess, serve_env
from tests.support.sink import (
    IdempotentSink,
    deliver_all,
    drained,
    read_db,
    until,
    worker_config,
)

EVENTS = 12


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_sigkill_while_handlers_run_then_every_event_has_exactly_one_effect(
    tmp_path: Path, sink: IdempotentSink
) -> None:
    config = worker_config(tmp_path, sink.url)
    db = tmp_path / "receiver.db"
    server = ServeProcess(config, serve_env(), tmp_path / "serve.log")
    try:
        await asyncio.to_thread(server.start)
        keys = await deliver_all(server)
        await until(lambda: sink.in_flight >= 2, timeout_s=20, what="handlers in flight")
        in_flight_keys = set(sink.deliveries)
        await asyncio.to_thread(server.kill)
        await asyncio.to_thread(server.start)
        await drained(db)
    finally:
        await asyncio.to_thread(server.kill)

    assert set(sink.effects) == set(keys), "every acknowledged event was processed"
    assert all(count == 1 for count in sink.effects.values())
    redelivered = {key for key, count in sink.deliveries.items() if count > 1}
    assert redelivered, "the runs cut off by SIGKILL came back after their lease ran out"
    assert redelivered <= in_flight_keys
    lost = read_db(db, "SELECT count(*) FROM attempts WHERE error LIKE 'lease expired%'")
    assert lost[0][0] >= len(redelivered)


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_sigterm_with_jobs_in_flight_returns_them_uncounted(
    tmp_path: Path, sink: IdempotentSink
) -> None:
    sink.delay_s = 5.0  # far longer than the shutdown budget below
    config = worker_config(tmp_path, sink.url, shutdown_timeout_s=0.5)
    db = tmp_path / "receiver.db"
    server = ServeProcess(config, serve_env(), tmp_path / "serve.log")
    try:
        await asyncio.to_thread(server.start)
        keys = await deliver_all(server)
        await until(lambda: sink.in_flight >= 2, timeout_s=20, what="handlers in flight")
        took_s = await asyncio.to_thread(server.terminate)
        assert server.returncode == 0
        assert took_s < 10

        interrupted = read_db(
            db,
            "SELECT a.event_id, j.status, j.attempts FROM attempts a"
            " JOIN jobs j ON j.event_id = a.event_id WHERE a.outcome = 'interrupted'",
        )
        assert len(interrupted) >= 2
        assert {(status, attempts) for _, status, attempts in interrupted} == {("queued", 0)}
        [(processing,)] = read_db(db, "SELECT count(*) FROM events WHERE status = 'processing'")
        assert processing == 0, "nothing is left looking as if it were running"

        sink.delay_s = 0.0
        await asyncio.to_thread(server.start)
        await drained(db)
    finally:
        await asyncio.to_thread(server.kill)

    assert set(sink.effects) == set(keys)
    assert all(count == 1 for count in sink.effects.values())
    attempts = dict(read_db(db, "SELECT event_id, attempts FROM jobs"))
    assert set(attempts.values()) == {1}, "the interrupted runs were not counted"
