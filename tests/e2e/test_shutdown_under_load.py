"""SIGTERM under concurrent load: the in-flight commits finish, every 2xx is stored, the
process exits 0 within the shutdown budget, and nothing answers 5xx except a clean 503."""

from __future__ import annotations

import asyncio
import random
import signal
from pathlib import Path

import aiohttp
import pytest

from tests.support.crash import (
    CrashReport,
    check_acknowledged,
    delivery_plan,
    stream,
)
from tests.support.serve import ServeProcess, serve_config, serve_env


@pytest.mark.timeout(60)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
async def test_sigterm_under_load_commits_every_2xx_and_exits_zero(
    tmp_path: Path, sig: signal.Signals
) -> None:
    """SIGHUP (a closed terminal, a log rotation's ``kill -HUP``) stops it the same way: it
    used to end the process at once, its running jobs held until their leases ran out."""
    server = ServeProcess(serve_config(tmp_path), serve_env(), tmp_path / "serve.log")
    server.start()
    report = CrashReport()
    stop = asyncio.Event()
    plan = delivery_plan(range(4000), redelivery_ratio=0.3, rng=random.Random(3))
    url = server.ingest_url + "/webhooks/sw"
    task = asyncio.create_task(stream(url, plan, report, stop, clients=4, concurrency=8))
    try:
        for _ in range(2000):  # bounded: at most ~20 s
            if len(report.acked) >= 300 or task.done():
                break
            await asyncio.sleep(0.01)
        assert not task.done(), "the load finished before SIGTERM: nothing was in flight"
        elapsed_s = await asyncio.to_thread(server.terminate, timeout_s=30, sig=sig)
    finally:
        stop.set()
        server.kill()
        await task
    assert server.returncode == 0, server.log_path.read_text()[-2000:]
    assert f'"signal":"{sig.name}"' in server.log_path.read_text()
    assert elapsed_s < 15  # shutdown_timeout_s is 10 s; in practice well under a second
    check_acknowledged(tmp_path / "receiver.db", report)
    assert not report.problems
    assert not report.lost, f"acknowledged but not committed: {sorted(report.lost)[:10]}"
    assert not report.changed
    # During shutdown a request gets an answer (200, or 503 "shutting down") or none at all.
    assert set(report.statuses) <= {0, 200, 503}, report.statuses
    assert '"receiver_stopped"' in server.log_path.read_text()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("target", ["hang_sync", "deaf_forever"])
async def test_a_handler_that_will_not_stop_cannot_hold_the_shutdown(
    tmp_path: Path, target: str
) -> None:
    """A sync handler blocked in its thread, or async code that swallows every cancellation:
    SIGTERM still ends the process within the shutdown budget (jobs go back to the queue)."""
    handler = {"kind": "python", "target": f"tests.integration.handler_targets:{target}"}
    config = serve_config(
        tmp_path,
        providers={"p": {"scheme": "none", "event_id": "json:id", "handler": handler}},
        worker={"shutdown_timeout_s": 1},
    )
    server = ServeProcess(config, serve_env(), tmp_path / "serve.log")
    server.start()
    try:
        async with aiohttp.ClientSession() as session:
            for n in range(3):
                async with session.post(
                    server.ingest_url + "/webhooks/p", json={"id": f"stuck{n}"}
                ) as resp:
                    assert resp.status == 200
        await asyncio.sleep(0.5)  # the handlers are running (and will not return)
        elapsed_s = await asyncio.to_thread(server.terminate, timeout_s=30)
    finally:
        server.kill()
    log = server.log_path.read_text()
    assert server.returncode == 0, log[-2000:]
    assert elapsed_s < 6, log[-2000:]  # 1 s budget, 1 s for leftovers; not the 30 s it asks
    assert '"receiver_stopped"' in log
