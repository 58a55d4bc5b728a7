"""How late the event loop runs: the one measure of a loop that something blocks.

Ingest's latency is measured from the moment its handler runs, so a loop that an ``async``
handler blocks (``time.sleep``, a blocking read) shows nothing there while every delivery
waits. A timer that should fire every ``interval_s`` is looked at instead: how late it fired
is the lag, the worst of each ``window_s`` is the gauge.
"""

from __future__ import annotations

__all__ = ["LoopLagWatch"]

import asyncio
import contextlib
from collections.abc import Callable


class LoopLagWatch:
    def __init__(
        self, report: Callable[[float], None], *, interval_s: float = 0.1, window_s: float = 5.0
    ) -> None:
        self._report = report
        self._interval_s = interval_s
        self._ticks = max(1, round(window_s / interval_s))
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._watch(), name="receiver-loop-lag")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            worst = 0.0
            for _ in range(self._ticks):
                due = loop.time() + self._interval_s
                await asyncio.sleep(self._interval_s)
                worst = max(worst, loop.time() - due)
            self._report(worst)
