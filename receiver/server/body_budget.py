"""The memory that request bodies may hold at once, across every connection.

Each body is capped on its own (``server.max_body_bytes``); this caps their sum, so that many
connections sending large bodies together (nothing is verified before the body is read) cannot
grow the process without bound. Bytes count as they arrive, never as declared (a client that
declares a large body and sends nothing must not hold the budget). A delivery whose body
passes it is answered ``503 server_busy`` with ``Retry-After``: providers retry those.
"""

from __future__ import annotations

__all__ = ["BodyBudget", "Reservation"]

from receiver.errors import ServerBusy

_RETRY_AFTER_S = 1


class BodyBudget:
    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self.held_bytes = 0

    def reservation(self) -> Reservation:
        return Reservation(self)


class Reservation:
    """One delivery's share of the budget: grown as its body is read, released once."""

    __slots__ = ("_budget", "bytes")

    def __init__(self, budget: BodyBudget) -> None:
        self._budget = budget
        self.bytes = 0

    def grow(self, count: int) -> None:
        budget = self._budget
        if budget.held_bytes + count > budget.limit_bytes:
            raise ServerBusy(
                "too many request bodies are being received at once; retry shortly",
                retry_after_s=_RETRY_AFTER_S,
            )
        budget.held_bytes += count
        self.bytes += count

    def release(self) -> None:
        self._budget.held_bytes -= self.bytes
        self.bytes = 0
