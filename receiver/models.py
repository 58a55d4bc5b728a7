"""Frozen values that flow between the layers. Imports nothing of ours."""

from __future__ import annotations

__all__ = [
    "Accepted",
    "Duplicate",
    "EventStatus",
    "HandshakeReply",
    "InboundRequest",
    "IngestOutcome",
    "JobStatus",
    "NewEvent",
]

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum


class EventStatus(StrEnum):
    """What an operator sees for an event."""

    RECEIVED = "received"  # stored; its provider has no handler configured
    QUEUED = "queued"  # waiting for its first (or next) attempt
    PROCESSING = "processing"  # a worker holds a lease on it
    RETRYING = "retrying"  # an attempt failed; another is scheduled
    SUCCEEDED = "succeeded"
    DEAD = "dead"  # gave up: permanent failure or out of attempts


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    DEAD = "dead"


@dataclass(frozen=True, slots=True, kw_only=True)
class InboundRequest:
    """A delivery as it reached the ingest listener, before anything was parsed.

    ``headers`` keys are lower-cased; a header sent more than once keeps its values joined by
    ``", "`` as HTTP allows. ``url`` is the URL the provider called (the configured public URL when
    behind a proxy), needed by schemes that sign it (Twilio, Square).
    """

    provider: str
    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes
    remote: str = ""
    query: Mapping[str, str] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass(frozen=True, slots=True, kw_only=True)
class HandshakeReply:
    """What to answer to a provider's verification handshake instead of storing an event."""

    status: int = 200
    content_type: str = "application/json"
    body: bytes = b""


@dataclass(frozen=True, slots=True, kw_only=True)
class NewEvent:
    """An event ready to be recorded: verified, keyed, fingerprinted."""

    provider: str
    key: str
    provider_event_id: str
    event_type: str | None
    body: bytes
    headers: Mapping[str, str]
    content_type: str | None
    fingerprint: str
    received_at_s: float
    payload_expires_at_s: float
    dedupe_expires_at_s: float
    has_handler: bool
    serialize_key: str | None = None
    requeue_dead: bool = True
    remote: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Accepted:
    """A new event, committed with its job."""

    id: int
    key: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Duplicate:
    """A redelivery of an already committed event. ``is_conflict``: the body differs."""

    id: int
    key: str
    is_conflict: bool = False
    requeued: bool = False


IngestOutcome = Accepted | Duplicate
