"""A clock a test sets by hand, for stores and retention that take ``clock=``."""

from __future__ import annotations

NOW = 1_700_000_000.0


class SettableClock:
    """``clock()`` answers ``clock.now``; a test moves it by assigning ``now``."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
