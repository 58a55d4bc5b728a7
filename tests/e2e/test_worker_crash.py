"""A real ``receiver serve`` with an http handler, killed while handlers run (DESIGN §1.3).

The downstream is an idempotent sink: it applies an effect the first time it sees an
``Idempotency-Key`` and answers 200 to every repeat. After SIGKILL and a restart every event is
processed, some are delivered again (their lease ran out), and each key has exactly one effect,
because every delivery of an event carries the same key. After SIGTERM the jobs that were in
flight go back to the queue without counting an attempt and finish after the restart.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.support.factories import SECRET_ENV, event_body, signed_headers
from tests.support.serve import ServeProcess, serve_config, serve_env

EVENTS = 12


@dataclass
class IdempotentSink:
    delay_s: float
    deliveries: Counter[str] = field(default_factory=Counter)
    effects: Counter[str] = field(default_factory=Counter)
    in_flight: int = 0
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        key = request.headers["Idempotency-Key"]
        self.deliveries[key] += 1
        if key not in self.effects:  # the downstream's own dedupe, keyed by Idempotency-Key
            self.effects[key] += 1
        self.in_flight += 1
        try:
            await asyncio.sleep(self.delay_s)
        finally:
            self.in_flight -= 1
        return web.json_response({"ok": True})


@pytest.fixture
async def sink() -> AsyncIterator[IdempotentSink]:
    sink = IdempotentSink(delay_s=1.0)
    app = web.Application()
    app.router.add_post("/effects", sink.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    sink.url = f"http://127.0.0.1:{port}/effects"
    yield sink
    await runner.cleanup()


def worker_config(tmp_path: Path, sink_url: str, **worker: Any) -> Path:
    provider = {
        "scheme": "standard-webhooks",
        "secret_envs": [SECRET_ENV],
        "handler": {"kind": "http", "url": sink_url, "timeout_s": 10},
    }
    settings = {"concurrency": 4, "lease_s": 2, "poll_interval_s": 0.2, **worker}
    return serve_config(tmp_path, providers={"sw": provider}, worker=settings)


async def deliver_all(server: ServeProcess) -> list[str]:
    """Signed Standard Webhooks deliveries; returns the dedupe keys the receiver answered."""
    keys: list[str] = []
    async with aiohttp.ClientSession() as session:
        for n in range(EVENTS):
            body = event_body(n)
            headers = signed_headers(body, msg_id=f"msg_{n}")
            url = f"{server.ingest_url}/webhooks/sw"
            async with session.post(url, data=body, headers=headers) as resp:
                assert resp.status == 200, await resp.text()
                answer = await resp.json()
            assert answer["status"] == "accepted"
            keys.append(answer["key"])
    return keys


def read_db(db: Path, sql: str) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as conn:
        return conn.execute(sql).fetchall()


async def until(condition: Callable[[], bool], *, timeout_s: float, what: str) -> None:
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.05)

    try:
        await asyncio.wait_for(poll(), timeout=timeout_s)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def drained(db: Path, *, timeout_s: float = 60.0) -> None:
    async def poll() -> None:
        while True:
            [(pending,)] = await asyncio.to_thread(
                read_db, db, "SELECT count(*) FROM events WHERE status != 'succeeded'"
            )
            if pending == 0:
                return
            await asyncio.sleep(0.1)

    try:
        await asyncio.wait_for(poll(), timeout=timeout_s)
    except TimeoutError:
        raise AssertionError("the queue did not drain") from None


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
