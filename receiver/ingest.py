"""The ingest service: verify -> key -> record. Knows neither aiohttp nor SQL.

The server hands over an :class:`~receiver.models.InboundRequest` whose body was read with the
size cap already applied; this module decides everything else.
"""

from __future__ import annotations

__all__ = ["IngestResult", "IngestService", "Prepared", "Recorder"]

import asyncio
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog

from receiver.credentials import is_credential_header
from receiver.errors import (
    InvalidBody,
    KeyConflict,
    MissingEventId,
    PayloadTooLarge,
    UnknownProvider,
)
from receiver.keys import Document, UnreadableJson, json_array_items, signed_url
from receiver.models import (
    Duplicate,
    HandshakeReply,
    InboundRequest,
    IngestOutcome,
    NewEvent,
)
from receiver.providers import Provider

log = structlog.get_logger("receiver.ingest")

_MAX_KEY_CHARS = 512
# The most events one batch delivery may hold. SendGrid posts what it has at least every 30 s,
# far fewer; every one is keyed on the event loop and answered in the reply, so a batch of half
# a million tiny elements (a 1 MB body) held the loop for seconds and grew a 57 MB answer.
MAX_BATCH_EVENTS = 10_000


class Recorder(Protocol):
    async def record(self, event: NewEvent) -> IngestOutcome: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Prepared:
    """A verified delivery's events, keyed, not yet stored."""

    provider: Provider
    events: Sequence[NewEvent]


@dataclass(frozen=True, slots=True, kw_only=True)
class IngestResult:
    """The outcome of one delivery: one outcome per event (several for batch schemes)."""

    outcomes: Sequence[IngestOutcome]
    is_batch: bool = False


def _is_text(value: str) -> bool:
    """False for header values carrying bytes that are not UTF-8 (decoded as surrogates)."""
    if value.isascii():  # nearly every header: no encoding needed to know
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# Surrogates are not text: undecodable header bytes (``\udc80``-``\udcff``, surrogateescape)
# and halves of a pair that a JSON escape may carry alone (``"\ud800"``). Control characters
# (tab aside) cannot travel in the HTTP header or environment variable a handler gets.
_NOT_TEXT = re.compile("[\x00-\x08\x0a-\x1f\x7f\ud800-\udfff]")
# In a key, also the C1 controls and the Unicode line and paragraph separators, which some
# parsers of the handler's header or the operator's log take for a line break.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _as_text(value: str | None) -> str | None:
    """Metadata (a type, an ordering key, a header) made storable and deliverable: each
    surrogate or control character becomes U+FFFD. Never used for the key."""
    if value is None or (value.isascii() and value.isprintable()):
        return value
    return _NOT_TEXT.sub("\ufffd", value)


def _is_json_content(content_type: str | None) -> bool:
    return content_type is not None and "json" in content_type.lower()


class IngestService:
    def __init__(
        self,
        providers: Mapping[str, Provider],
        recorder: Recorder,
        *,
        clock: Callable[[], float],
    ) -> None:
        self._providers = providers
        self._recorder = recorder
        self._clock = clock

    def has_provider(self, name: str) -> bool:
        return name in self._providers

    def provider(self, name: str) -> Provider:
        try:
            return self._providers[name]
        except KeyError:
            shown = name if len(name) <= 64 else name[:64] + "…"
            raise UnknownProvider(f"no provider named {shown!r} is configured") from None

    async def ingest(self, request: InboundRequest) -> IngestResult | HandshakeReply:
        prepared = self.prepare(request)
        if isinstance(prepared, HandshakeReply):
            return prepared
        return await self.record(prepared)

    def prepare(self, request: InboundRequest) -> Prepared | HandshakeReply:
        """Everything before storage: verify the signature, parse, key each event (or answer a
        verification handshake). Raises a :class:`RequestRejected` for the caller to answer."""
        provider = self.provider(request.provider)
        now = self._clock()
        provider.verifier.verify(request, now_s=now)
        document = Document(
            request,
            url=signed_url(provider.public_url, request.url),
            delivery_fields=provider.scheme.delivery_fields,
        )
        content_type = request.header("content-type")
        if _is_json_content(content_type) and document.json is None:
            encoding = (request.header("content-encoding") or "").strip().lower()
            if encoding and encoding != "identity":
                # Signed as sent, so stored as sent; but its event ID cannot be read from it.
                raise InvalidBody(
                    f"the body is compressed (Content-Encoding: {encoding[:20]}), so its JSON"
                    " cannot be read: have the provider send it uncompressed"
                )
            if document.json_problem:  # JSON by its syntax, past what can be read
                raise InvalidBody(f"the body cannot be read: {document.json_problem}")
            raise InvalidBody("the body is not valid JSON although Content-Type says it is")
        if provider.handshaker is not None:
            reply = provider.handshaker.handshake(request, document.json)
            if reply is not None:
                return reply
        if provider.scheme.is_batch:
            events = self._batch_events(provider, request, now)
        else:
            events = [self._new_event(provider, request, document, request.body, now)]
        return Prepared(provider=provider, events=events)

    async def record(self, prepared: Prepared) -> IngestResult:
        """Store the prepared events (committed before this returns) and tell new from seen."""
        provider, events = prepared.provider, prepared.events
        if len(events) == 1:
            outcomes = [await self._recorder.record(events[0])]
        else:  # gathered, so a batch's events join the same group commit
            outcomes = list(await asyncio.gather(*(self._recorder.record(ev) for ev in events)))
        for ev, outcome in zip(events, outcomes, strict=True):
            if isinstance(outcome, Duplicate) and outcome.is_conflict:
                log.warning(
                    "event_conflict",
                    provider=provider.name,
                    key=ev.key,
                    event_id=outcome.id,
                    body_sha256=ev.fingerprint[:16],
                )
                if provider.settings.on_conflict == "reject":
                    raise KeyConflict(
                        "an event with this key was already received with a different body"
                    )
        return IngestResult(outcomes=outcomes, is_batch=provider.scheme.is_batch)

    def _batch_events(
        self, provider: Provider, request: InboundRequest, now: float
    ) -> list[NewEvent]:
        try:
            items = json_array_items(request.body, limit=MAX_BATCH_EVENTS)
        except UnreadableJson as exc:
            raise InvalidBody(f"the body cannot be read: {exc}") from None
        if not items:
            raise InvalidBody("the body must be a non-empty JSON array of events")
        if len(items) > MAX_BATCH_EVENTS:
            raise PayloadTooLarge(
                f"the batch holds more than {MAX_BATCH_EVENTS:,} events, the most one delivery"
                " may hold: have the provider send smaller batches"
            )
        # Each element is stored with its own bytes as sent, and keyed from its exact parse.
        return [
            self._new_event(
                provider, request, Document(request, json_value=item, body=body), body, now
            )
            for item, body in items
        ]

    def _new_event(
        self,
        provider: Provider,
        request: InboundRequest,
        document: Document,
        body: bytes,
        now: float,
    ) -> NewEvent:
        event_id = provider.event_id.extract(document)
        if event_id is None:
            detail = f"no event ID found at {provider.event_id.expression!r} in this delivery"
            if document.json_problem:
                detail += f": {document.json_problem}"
            raise MissingEventId(detail)
        if len(event_id) > _MAX_KEY_CHARS:
            raise MissingEventId(f"the event ID is longer than {_MAX_KEY_CHARS} characters")
        if not _is_text(event_id):
            raise MissingEventId("the event ID is not valid UTF-8 text")
        if _CONTROL.search(event_id):
            # Handlers get the key as a header and an environment variable: it could never
            # reach them, so it is refused here instead of failing every attempt later.
            raise MissingEventId("the event ID contains control characters or line breaks")
        if event_id != event_id.strip():
            # An HTTP handler's Idempotency-Key header would lose it (header values are
            # trimmed): two events, one key downstream.
            raise MissingEventId("the event ID starts or ends with white space")
        event_type = _as_text(
            provider.event_type.extract(document) if provider.event_type else None
        )
        serialize_key = _as_text(
            provider.serialize_by.extract(document) if provider.serialize_by else None
        )
        redacted = provider.redacted_headers
        headers = {
            name: value if value.isascii() else (_as_text(value) or "")
            for name, value in request.headers.items()
            if name not in redacted and not is_credential_header(name)
        }
        return NewEvent(
            provider=provider.name,
            key=f"{provider.name}:{event_id}",
            provider_event_id=event_id,
            event_type=event_type[:200] if event_type else None,
            body=body,
            headers=headers,
            content_type=_as_text(request.header("content-type")),
            fingerprint=document.event_sha256,
            received_at_s=now,
            payload_expires_at_s=now + provider.payload_retention_s,
            dedupe_expires_at_s=now + provider.dedupe_retention_s,
            has_handler=provider.has_handler,
            serialize_key=serialize_key,
            requeue_dead=provider.settings.requeue_dead,
            remote=request.remote,
        )
