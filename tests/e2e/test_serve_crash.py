"""A real ``receiver serve``: SIGKILL mid-stream loses nothing acknowledged; SIGTERM is clean."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import threading
import time
from pathlib import Path

import aiohttp
import pytest

from tests.support.factories import event_body, signed_headers
from tests.support.serve import ServeProcess, serve_config, serve_env


async def _deliver(
    session: aiohttp.ClientSession, url: str, n: int
) -> tuple[int, dict[str, str] | None]:
    body = event_body(n)
    try:
        async with session.post(url, data=body, headers=signed_headers(body, msg_id=f"e{n}")) as r:
            return r.status, (await r.json()) if r.status == 200 else None
    except (aiohttp.ClientError, asyncio.TimeoutError):
        return 0, None


async def _stream(
    url: str, *, count: int, concurrency: int, acked: dict[int, str], stop: threading.Event
) -> None:
    """Deliver events 0..count-1 with ~30 % redeliveries of earlier ones; record every 2xx."""
    rng = random.Random(7)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(count):
        queue.put_nowait(n)
        if n and rng.random() < 0.3:
            queue.put_nowait(rng.randrange(n))
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def worker() -> None:
            while not stop.is_set() and not queue.empty():
                n = queue.get_nowait()
                status, answer = await _deliver(session, url, n)
                if status == 200 and answer is not None:
                    previous = acked.setdefault(n, answer["id"])
                    assert previous == answer["id"], "a redelivery got a different event id"

        await asyncio.gather(*(worker() for _ in range(concurrency)))


def _stored(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        events = dict(conn.execute("SELECT key, id FROM events").fetchall())
        jobs = conn.execute("SELECT count(*), count(DISTINCT event_id) FROM jobs").fetchone()
        assert jobs[0] == jobs[1] == len(events), "exactly one job per event"
    return events


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_sigkill_mid_stream_loses_no_acknowledged_event(tmp_path: Path) -> None:
    config = serve_config(tmp_path)
    db = tmp_path / "receiver.db"
    server = ServeProcess(config, serve_env(), tmp_path / "serve.log")
    acked: dict[int, str] = {}
    url = ""
    try:
        for round_no in range(3):
            server.start()
            url = server.ingest_url + "/webhooks/sw"
            stop = threading.Event()
            before = len(acked)
            stream = asyncio.create_task(
                _stream(url, count=600 * (round_no + 1), concurrency=16, acked=acked, stop=stop)
            )
            # Kill once this round has acknowledged some events, while requests are in flight.
            deadline = time.monotonic() + 20
            while len(acked) < before + 50 and time.monotonic() < deadline and not stream.done():
                await asyncio.sleep(0.01)
            server.kill()
            stop.set()
            await stream
            stored = _stored(db)
            missing = [n for n in acked if f"sw:e{n}" not in stored]
            assert not missing, f"acknowledged but lost after SIGKILL: {missing[:10]}"
            for n, event_id in acked.items():
                assert str(stored[f"sw:e{n}"]) == event_id
        # After the last restart every acknowledged event is still answered as a duplicate.
        server.start()
        url = server.ingest_url + "/webhooks/sw"
        async with aiohttp.ClientSession() as session:
            sample = random.Random(1).sample(sorted(acked), k=min(100, len(acked)))
            for n in sample:
                status, answer = await _deliver(session, url, n)
                assert status == 200 and answer is not None
                assert answer["status"] == "duplicate"
                assert answer["id"] == acked[n]
    finally:
        server.kill()
    assert len(acked) >= 150


@pytest.mark.timeout(60)
async def test_sigterm_finishes_in_flight_commits_and_exits_quickly(tmp_path: Path) -> None:
    server = ServeProcess(serve_config(tmp_path), serve_env(), tmp_path / "serve.log")
    server.start()
    url = server.ingest_url + "/webhooks/sw"
    acked: dict[int, str] = {}
    stop = threading.Event()
    stream = asyncio.create_task(_stream(url, count=2000, concurrency=16, acked=acked, stop=stop))
    while len(acked) < 100 and not stream.done():
        await asyncio.sleep(0.01)
    elapsed = await asyncio.to_thread(server.terminate)
    stop.set()
    await stream
    assert server.returncode == 0
    assert elapsed < 10
    stored = _stored(tmp_path / "receiver.db")
    assert all(f"sw:e{n}" in stored for n in acked)
