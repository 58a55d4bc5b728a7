"""The seam between ingest and the signature schemes.

A *scheme* (``stripe``, ``github``, ``hmac``, …) is registered once with a :class:`Scheme`
description: its defaults (event-ID source, event-type source, tolerance, retention) and a
factory that turns one provider's settings and secrets into a :class:`Verifier`.

Verifiers work on raw bytes only, compare in constant time and raise the
:mod:`receiver.errors` rejections; anything else escaping ``verify`` is a bug.
"""

from __future__ import annotations

__all__ = [
    "BuildContext",
    "DeclaresSecretHeaders",
    "Handshaker",
    "Scheme",
    "Signer",
    "Verifier",
]

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from pydantic import BaseModel

from receiver.models import HandshakeReply, InboundRequest


class Verifier(Protocol):
    """Checks one delivery. Returns on success; raises a ``RequestRejected`` subclass otherwise.

    Order inside ``verify``: presence and shape of headers, then the timestamp window, then the
    signature (cheap checks first).
    """

    def verify(self, request: InboundRequest, *, now_s: float) -> None: ...


@runtime_checkable
class Handshaker(Protocol):
    """Answers a provider's verification handshake (Slack url_verification, Zoom, Discord PING).

    Called only after ``verify`` succeeded, with the parsed JSON document (or ``None`` when the
    body is not JSON). Returns ``None`` when the delivery is an ordinary event.
    """

    def handshake(self, request: InboundRequest, document: object) -> HandshakeReply | None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Unsigned:
    """A delivery to sign, as a provider would send it at ``now_s`` to ``url``. ``carried``:
    other headers it carries (its event ID's, those given with ``--header``), for a scheme
    whose signed content names them."""

    body: bytes
    now_s: float
    event_id: str
    url: str
    carried: Mapping[str, str] = field(default_factory=dict)


@runtime_checkable
class Signer(Protocol):
    """Produces the headers a provider would send, for ``receiver sign`` and for tests."""

    def sign(self, d: Unsigned) -> dict[str, str]: ...


@runtime_checkable
class DeclaresSecretHeaders(Protocol):
    """A built verifier that knows which headers carry its signature or token (lower-case).

    For schemes whose header is configured per provider (``hmac``), where the static
    ``Scheme.secret_headers`` cannot name it; ingest redacts the union of both.
    """

    secret_headers: frozenset[str]


@dataclass(frozen=True, slots=True, kw_only=True)
class BuildContext:
    """What a scheme factory gets for one provider."""

    provider: str
    secrets: tuple[str, ...]  # raw secret strings, in configured order (rotation: any may match)
    tolerance_s: int | None  # None: the scheme's default
    options: BaseModel | None  # the scheme's validated ``options:`` block, if it declares one
    public_url: str | None  # the URL the provider calls, for schemes that sign it


@dataclass(frozen=True, slots=True, kw_only=True)
class Scheme:
    """A registered scheme preset."""

    name: str
    summary: str
    build: Callable[[BuildContext], Verifier]
    event_id: str | None  # default event-ID source expression (see receiver.keys); None: required
    event_type: str | None = None  # default event-type source expression
    default_tolerance_s: int | None = None  # None: the scheme signs no timestamp
    dedupe_retention_s: int = 7 * 86400
    payload_retention_s: int = 7 * 86400
    needs_secret: bool = True
    options_model: type[BaseModel] | None = None
    # A batch scheme's body is a JSON array; each element is stored as its own event (SendGrid).
    is_batch: bool = False
    # Top-level body members (JSON) or fields (form) that belong to one delivery, not to the
    # event: a signature or a send time written into the body, new on every retry. They are
    # left out of the fingerprint that tells a conflict from a redelivery (and of the
    # ``event_sha256`` key source).
    delivery_fields: frozenset[str] = frozenset()
    # Header names (lower-case) never stored, beyond the common credential headers.
    secret_headers: frozenset[str] = frozenset()
    # What the provider's deliveries are (``receiver sign --curl`` sends it).
    content_type: str = "application/json"
    # Free-form notes for the README/`check-config` summary: header names, id source.
    docs: Mapping[str, str] = field(default_factory=dict)
