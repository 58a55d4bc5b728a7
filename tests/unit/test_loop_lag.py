"""The event loop's lag: what shows a loop that something blocks, when ingest's own latency
(measured from the moment its handler runs) cannot."""

from __future__ import annotations

import asyncio
import time

from receiver.loop_lag import LoopLagWatch


async def test_a_blocked_loop_shows_as_lag_and_a_free_one_as_none() -> None:
    reports: list[float] = []
    watch = LoopLagWatch(reports.append, interval_s=0.01, window_s=0.05)
    watch.start()
    try:
        await asyncio.sleep(0.12)  # free: a couple of windows
        free = list(reports)
        time.sleep(0.3)  # an async handler that blocks  # noqa: ASYNC251 - the point here
        while len(reports) < len(free) + 2:
            await asyncio.sleep(0.01)
    finally:
        await watch.stop()
    assert free and max(free) < 0.1
    assert max(reports[len(free) :]) >= 0.25
