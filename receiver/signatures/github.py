"""GitHub: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>``.

No timestamp is signed, and the delivery-id header is not signed either: a captured body resent
under a new delivery id is a new event (the provider's scheme; README says so). The delivery GUID
is shared by every hook subscribed to the same event, so the default event id is scoped by
``X-GitHub-Hook-ID``. The legacy SHA-1 ``X-Hub-Signature`` is not accepted (it would let a
request downgrade to SHA-1).
"""

from __future__ import annotations

__all__ = ["GITHUB"]

from receiver.signatures.base import Scheme
from receiver.signatures.common import DAY_S
from receiver.signatures.declarative import HmacSpec, spec_builder
from receiver.signatures.registry import register

GITHUB = HmacSpec(
    header="X-Hub-Signature-256",
    prefix="sha256=",
    event_id_header="X-GitHub-Delivery",
)

register(
    Scheme(
        name="github",
        summary="GitHub: X-Hub-Signature-256 sha256=<hex> HMAC of the body.",
        build=spec_builder(GITHUB, default_tolerance_s=None),
        event_id="{header:X-GitHub-Hook-ID?}:{header:X-GitHub-Delivery}",
        event_type="header:X-GitHub-Event",
        default_tolerance_s=None,
        dedupe_retention_s=7 * DAY_S,  # manual redelivery: 3 days (GHES: 7)
        payload_retention_s=7 * DAY_S,
        secret_headers=frozenset({"x-hub-signature-256", "x-hub-signature"}),
        docs={
            "headers": "X-Hub-Signature-256 (sha256=hex), X-GitHub-Delivery, X-GitHub-Hook-ID",
            "event_id": "X-GitHub-Hook-ID:X-GitHub-Delivery (the GUID is shared across hooks)",
            "tolerance": "none (no signed timestamp)",
            "dedupe": "7 days (manual redelivery: 3 days, GHES 7)",
        },
    )
)
