"""Retention after the wall clock steps forward: nothing goes before real time says so."""

from __future__ import annotations

from pathlib import Path

from receiver.clock_steps import ClockWatch
from receiver.models import Accepted, Duplicate
from receiver.store.retention import Retention
from receiver.store.sqlite import SqliteStore
from tests.support.factories import new_event

DAY_S = 86_400.0


class _Clocks:
    def __init__(self) -> None:
        self.wall = 1_700_000_000.0
        self.mono = 50.0

    def __call__(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    def elapse(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


async def test_a_step_forward_deletes_no_key_before_real_time_expires_it(tmp_path: Path) -> None:
    """A clock stepped a month ahead (and corrected a minute later) let the next purge
    delete every key: a provider's retry of a handled event was then a new event, and its
    handler ran twice."""
    clocks = _Clocks()
    store = SqliteStore(tmp_path / "receiver.db", clock=clocks)
    await store.open()
    try:
        first = await store.record(new_event("p", 1, now=clocks(), has_handler=False))
        assert isinstance(first, Accepted)
        watch = ClockWatch(wall=clocks, steady=clocks.monotonic)
        retention = Retention(store.db, clock=watch.not_ahead)
        clocks.wall += 31 * DAY_S  # the step; the dedupe window is 30 days
        report = await retention.purge_once()
        assert (report.payloads_purged, report.events_deleted) == (0, 0)
        clocks.wall -= 31 * DAY_S - 60  # corrected a minute later
        again = await store.record(new_event("p", 1, now=clocks(), has_handler=False))
        assert isinstance(again, Duplicate) and again.id == first.id
        clocks.elapse(2 * DAY_S)  # real time: past the payload window, inside the key's
        report = await retention.purge_once()
        assert (report.payloads_purged, report.events_deleted) == (1, 0)
    finally:
        await store.close()
