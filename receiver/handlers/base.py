"""What every handler kind shares: the event it gets, the outcome it answers, the protocol."""

from __future__ import annotations

__all__ = ["SUCCESS", "Handler", "HandlerEvent", "Outcome", "parse_json", "summarize"]

import asyncio
import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from multidict import CIMultiDict, CIMultiDictProxy

ERROR_CHARS = 300


@dataclass(frozen=True, kw_only=True)
class HandlerEvent:
    """What a handler receives: one stored event and the attempt it is on.

    A test of a python handler builds one the same way (``receiver.HandlerEvent(id=1,
    key="stripe:evt_1", provider="stripe", body=b"...")``): headers are read by any case and
    cannot be changed, as in a real run."""

    id: int
    key: str  # the dedupe key: use it as your idempotency key
    provider: str
    body: bytes
    type: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    content_type: str | None = None
    attempt: int = 1
    is_replay: bool = False

    def __post_init__(self) -> None:
        # Read-only, and by any case: event.headers["X-GitHub-Event"] finds x-github-event.
        if not isinstance(self.headers, CIMultiDictProxy):
            object.__setattr__(self, "headers", CIMultiDictProxy(CIMultiDict(self.headers)))

    @functools.cached_property
    def json(self) -> object | None:
        """The body parsed as JSON (on first use: an ``http`` or ``command`` handler never
        pays for it), or None when it is not JSON."""
        return parse_json(self.body)


def parse_json(body: bytes) -> object | None:
    try:
        value: object = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """How one handler run ended."""

    is_success: bool
    error: str | None = None
    is_permanent: bool = False
    http_status: int | None = None
    retry_after: str | None = None
    exit_code: int | None = None
    # A run given up on at its timeout that has not ended: a thread cannot be stopped, and
    # async code may ignore its cancellation. The event is not run again before it ends.
    still_running: asyncio.Future[object] | None = None


SUCCESS = Outcome(is_success=True)


def summarize(exc: BaseException) -> str:
    """``Type: message``, cut short. Exception texts from our handlers carry no payload."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    summary = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return summary[:ERROR_CHARS]


class Handler(Protocol):
    async def run(self, event: HandlerEvent) -> Outcome: ...
