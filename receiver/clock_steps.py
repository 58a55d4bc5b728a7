"""Noticing when the wall clock steps: an NTP step, a VM resumed, a wrong clock corrected.

Times in the database are wall-clock seconds (they outlive the process), so a step moves every
stored schedule against "now". A step back of an hour held every queued job and every retry
back by an hour (``run_at`` looked an hour away), and a crashed run's lease an hour longer; a
step forward made retention delete keys early (a provider's retry then ran the handler twice).

:class:`ClockWatch` compares the wall clock with a steady one (Linux's boot clock, which counts
suspended time too, so a resumed VM is no step) at each look: when their difference moves by
more than ``threshold_s`` between two looks, that is a step. Slewing (how NTP corrects small
offsets) moves it by milliseconds a minute and is never taken for one.
"""

from __future__ import annotations

__all__ = ["ClockWatch"]

import functools
import time
from collections.abc import Callable

# The reference: a clock that counts the time the machine was suspended too (Linux's
# CLOCK_BOOTTIME), so a resumed VM or laptop is not taken for a step; elsewhere, monotonic.
_reference: Callable[[], float] = (
    functools.partial(time.clock_gettime, time.CLOCK_BOOTTIME)
    if hasattr(time, "CLOCK_BOOTTIME")
    else time.monotonic
)


class ClockWatch:
    def __init__(
        self,
        *,
        wall: Callable[[], float] = time.time,
        steady: Callable[[], float] = _reference,
        threshold_s: float = 2.0,
    ) -> None:
        self._wall = wall
        self._steady = steady
        self._threshold_s = threshold_s
        self._offset = wall() - steady()
        self._ahead_s = 0.0

    def step(self) -> float:
        """How far the wall clock stepped since the last look (negative: back), 0.0 for none."""
        offset = self._wall() - self._steady()
        moved, self._offset = offset - self._offset, offset
        if abs(moved) < self._threshold_s:
            return 0.0
        self._ahead_s = max(0.0, self._ahead_s + moved)
        return moved

    def not_ahead(self) -> float:
        """The wall clock, less what it stepped forward since this watch began (a step back
        takes that off again, a restart forgets it): a time that never runs faster than real
        time does. Retention uses it, so that a step forward never deletes what real time has
        not yet expired; after a correction forward it runs late by as much (keeping keys and
        payloads that long longer) for as long as the process runs."""
        self.step()
        return self._wall() - self._ahead_s
