"""A bounded memory of recently committed keys, so a redelivery is answered without a write.

Only keys whose event row is **committed** are remembered, so answering ``duplicate`` from here
never acknowledges something that is not on disk. An entry answers only while its dedupe window
lasts, only for the same body (a different body goes to the store, which records the conflict),
and never for an event that went ``dead`` (a redelivery of a dead event must reach the store,
which queues it again): the worker calls :meth:`forget` when it buries one.

The duplicate count and last-seen time of such answers are written later, with the next group
commit (or on their own shortly after); a crash can lose those few increments, never an event.
"""

from __future__ import annotations

__all__ = ["RecentKeys"]

from collections import OrderedDict

from receiver.models import Duplicate

# One entry: (event id, the first 128 bits of the body's SHA-256 (enough to tell bodies apart,
# half the memory), dedupe expiry). A plain tuple of plain values on purpose: the cyclic garbage
# collector stops tracking such tuples, so a full memory of keys adds nothing to its pauses
# (a dataclass per key made every full collection walk all of them: tens of milliseconds).
_Known = tuple[int, bytes, float]


def _short(fingerprint: str) -> bytes:
    return bytes.fromhex(fingerprint[:32])


class RecentKeys:
    def __init__(self, max_keys: int = 100_000) -> None:
        self.max_keys = max_keys
        self._known: OrderedDict[str, _Known] = OrderedDict()
        self._keys_by_id: dict[int, str] = {}
        self._touches: dict[int, tuple[int, float]] = {}

    def __len__(self) -> int:
        return len(self._known)

    def remember(
        self, key: str, event_id: int, fingerprint: str, dedupe_expires_at_s: float
    ) -> None:
        """Call only after the row for ``key`` is committed."""
        self._known[key] = (event_id, _short(fingerprint), dedupe_expires_at_s)
        self._known.move_to_end(key)
        self._keys_by_id[event_id] = key
        while len(self._known) > self.max_keys:
            _, (oldest_id, _, _) = self._known.popitem(last=False)
            self._keys_by_id.pop(oldest_id, None)

    def clear(self) -> None:
        """Forget every key (their dedupe windows moved): the store answers until relearned.
        Pending duplicate counts stay: they still have to be written."""
        self._known.clear()
        self._keys_by_id.clear()

    def forget(self, event_id: int) -> None:
        key = self._keys_by_id.pop(event_id, None)
        if key is not None:
            self._known.pop(key, None)

    def duplicate(self, key: str, fingerprint: str, *, now_s: float) -> Duplicate | None:
        """A duplicate answer when ``key`` is known, committed, in its window, same body."""
        known = self._known.get(key)
        if known is None:
            return None
        event_id, short, expires_at_s = known
        if short != _short(fingerprint):
            return None
        if now_s >= expires_at_s:
            self.forget(event_id)
            return None
        count, _ = self._touches.get(event_id, (0, now_s))
        self._touches[event_id] = (count + 1, now_s)
        return Duplicate(id=event_id, key=key)

    @property
    def has_touches(self) -> bool:
        return bool(self._touches)

    def take_touches(self) -> list[tuple[int, float, int]]:
        """Pending ``(duplicate count, last seen, event id)`` updates; the caller writes them."""
        touches = [(count, seen, event_id) for event_id, (count, seen) in self._touches.items()]
        self._touches.clear()
        return touches

    def give_back(self, touches: list[tuple[int, float, int]]) -> None:
        """Touches whose write failed: counted again, merged with any taken since."""
        for count, seen, event_id in touches:
            later, later_seen = self._touches.get(event_id, (0, seen))
            self._touches[event_id] = (count + later, max(seen, later_seen))
