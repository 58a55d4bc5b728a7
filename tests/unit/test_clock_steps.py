"""The wall clock's steps, told from slewing by the monotonic clock beside it."""

from __future__ import annotations

from receiver.clock_steps import ClockWatch


class _Clocks:
    def __init__(self) -> None:
        self.wall = 1_700_000_000.0
        self.mono = 100.0

    def tick(self, seconds: float, *, slew: float = 0.0) -> None:
        self.mono += seconds
        self.wall += seconds + slew


def _watch(clocks: _Clocks) -> ClockWatch:
    return ClockWatch(wall=lambda: clocks.wall, steady=lambda: clocks.mono)


def test_slewing_is_never_a_step_however_long_it_goes_on() -> None:
    clocks = _Clocks()
    watch = _watch(clocks)
    for _ in range(10_000):  # 0.5 ms per second for almost three hours: 5 s in all
        clocks.tick(1.0, slew=0.0005)
        assert watch.step() == 0.0


def test_a_step_is_told_once_with_its_size_and_sign() -> None:
    clocks = _Clocks()
    watch = _watch(clocks)
    clocks.tick(1.0)
    clocks.wall -= 3600
    assert watch.step() == -3600
    assert watch.step() == 0.0
    clocks.wall += 86_400
    assert watch.step() == 86_400


def test_the_time_not_ahead_never_runs_faster_than_real_time() -> None:
    clocks = _Clocks()
    watch = _watch(clocks)
    clocks.tick(10.0)
    assert watch.not_ahead() == clocks.wall  # no step: the wall clock itself
    clocks.wall += 31 * 86_400  # a step forward: held back by as much
    assert watch.not_ahead() == clocks.wall - 31 * 86_400
    clocks.tick(60.0)  # real time goes on at its pace
    assert watch.not_ahead() == clocks.wall - 31 * 86_400
    clocks.wall -= 31 * 86_400 + 3600  # corrected, and past it: nothing held back any more
    assert watch.not_ahead() == clocks.wall
