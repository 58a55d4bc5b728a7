"""SIGTERM under concurrent load: the in-flight commits finish, every 2xx is stored, the
process exits 0 within the shutdown budget, and nothing answers 5xx except a clean 503."""

from __future__ import annotations

import asyncio
import random
import signal
import sqlite3
from pathlib import Path

import aiohttp
import pytest

from tests.support.crash import (
    CrashReport,
    check_acknowledged,
    delivery_plan,
    stream,
)
from tests.support.factories import SECRET_ENV
from tests.support.serve import ServeProcess, serve_config, serve_env


def _start_load(
    server: ServeProcess, *, events: int, seed: int
) -> tuple[CrashReport, asyncio.Event, asyncio.Task[None]]:
    """Signed deliveries (a third of them redeliveries) streaming until ``stop`` is set."""
    report = CrashReport()
    stop = asyncio.Event()
    plan = delivery_plan(range(events), redelivery_ratio=0.3, rng=random.Random(seed))
    url = server.ingest_url + "/webhooks/sw"
    task = asyncio.create_task(stream(url, plan, report, stop, clients=4, concurrency=8))
    return report, stop, task


async def _until_acked(report: CrashReport, task: asyncio.Task[None], count: int) -> None:
    for _ in range(2000):  # bounded: at most ~20 s
        if len(report.acked) >= count or task.done():
            return
        await asyncio.sleep(0.01)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
async def test_sigterm_under_load_commits_every_2xx_and_exits_zero(
    tmp_path: Path, sig: signal.Signals
) -> None:
    """SIGHUP (a closed terminal, a log rotation's ``kill -HUP``) stops it the same way: it
    used to end the process at once, its running jobs held until their leases ran out."""
    server = ServeProcess(serve_config(tmp_path), serve_env(), tmp_path / "serve.log")
    server.start()
    report, stop, task = _start_load(server, events=4000, seed=3)
    try:
        await _until_acked(report, task, 300)
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


@pytest.mark.timeout(90)
async def test_a_stuck_store_cannot_hold_the_shutdown_past_its_budget(tmp_path: Path) -> None:
    """Another process holding the database's write lock under load: each write of the stop
    (the in-flight group commit, releasing the running jobs, the last duplicate counts) waited
    its busy timeout, one after another, and the process outlived an orchestrator's grace
    (11.6 s against a 2 s budget). Now it gives up at the budget, says so and exits 1: what it
    acknowledged was committed, and its running jobs come back after their lease."""
    handler = {"kind": "python", "target": "tests.integration.handler_targets:slow"}
    config = serve_config(
        tmp_path,
        providers={
            "sw": {"scheme": "standard-webhooks", "secret_envs": [SECRET_ENV], "handler": handler}
        },
        worker={"shutdown_timeout_s": 2, "lease_s": 5},
        storage={"busy_timeout_s": 2},
    )
    server = ServeProcess(config, serve_env(), tmp_path / "serve.log")
    server.start()
    report, stop, task = _start_load(server, events=20_000, seed=5)
    holder = sqlite3.connect(tmp_path / "receiver.db", isolation_level=None, timeout=10)
    try:
        await _until_acked(report, task, 500)
        holder.execute("BEGIN IMMEDIATE")  # the store is stuck behind another process
        await asyncio.sleep(0.5)
        elapsed_s = await asyncio.to_thread(server.terminate, timeout_s=60)
    finally:
        stop.set()
        holder.close()
        server.kill()
        await task
    log = server.log_path.read_text()
    assert server.returncode == 1, log[-2000:]
    assert elapsed_s < 8, log[-2000:]  # 2 s for the handlers and 2 s to close
    assert '"shutdown_overdue"' in log
    check_acknowledged(tmp_path / "receiver.db", report)
    assert not report.lost, f"acknowledged but not committed: {sorted(report.lost)[:10]}"
