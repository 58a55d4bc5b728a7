"""The store interface the rest of receiver depends on.

Only :mod:`receiver.store` knows SQL. Implementations translate driver errors into
:class:`~receiver.errors.StorageUnavailable`.
"""

from __future__ import annotations

__all__ = ["Store", "StoredEvent"]

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from receiver.models import IngestOutcome, NewEvent


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredEvent:
    id: int
    provider: str
    key: str
    provider_event_id: str
    event_type: str | None
    fingerprint: str
    body: bytes | None
    headers: Mapping[str, str] | None
    content_type: str | None
    remote_addr: str | None
    status: str
    received_at_s: float
    last_seen_at_s: float
    duplicate_count: int
    conflict_count: int
    payload_expires_at_s: float
    dedupe_expires_at_s: float
    payload_purged_at_s: float | None


class Store(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def record(self, event: NewEvent) -> IngestOutcome:
        """Store a new event with its job, or recognise a redelivery. Ack only after commit."""
        ...

    async def get_event(self, event_id: int) -> StoredEvent | None: ...

    async def unwritable_reason(self) -> str | None:
        """None when a write can be committed now; else why not, in plain words (no path)."""
        ...
