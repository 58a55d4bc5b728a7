"""Zoom: ``x-zm-signature: v0=<hex>`` over ``v0:{x-zm-request-timestamp}:{body}``.

Zoom's own sample checks no timestamp window, and whether retries (5, 20, 60 min) are re-signed
is not documented, so no window is applied unless ``tolerance_s`` is set. The
``endpoint.url_validation`` challenge is answered with ``plainToken`` and its HMAC, keyed with
the secret that signed the challenge.
"""

from __future__ import annotations

__all__ = ["ZOOM", "ZoomVerifier"]

from receiver.models import HandshakeReply, InboundRequest
from receiver.signatures.base import Scheme
from receiver.signatures.common import DAY_S, hmac_digest, json_reply, to_bytes
from receiver.signatures.declarative import HmacSpec, HmacVerifier, spec_builder
from receiver.signatures.registry import register

ZOOM = HmacSpec(
    header="x-zm-signature",
    prefix="v0=",
    timestamp_source="header",
    timestamp_header="x-zm-request-timestamp",
    signed_content="v0:{timestamp}:{body}",
)


class ZoomVerifier(HmacVerifier):
    def handshake(self, request: InboundRequest, document: object) -> HandshakeReply | None:
        if not isinstance(document, dict) or document.get("event") != "endpoint.url_validation":
            return None
        payload = document.get("payload")
        plain = payload.get("plainToken") if isinstance(payload, dict) else None
        if not isinstance(plain, str):
            return None
        key = self.find_key(request) or self.keys[0]
        encrypted = hmac_digest(key, to_bytes(plain)).hex()
        return json_reply({"plainToken": plain, "encryptedToken": encrypted})


register(
    Scheme(
        name="zoom",
        summary="Zoom: x-zm-signature v0=<hex> HMAC over v0:timestamp:body; URL validation.",
        build=spec_builder(ZOOM, default_tolerance_s=None, verifier=ZoomVerifier),
        # Zoom documents no event ID, and event:event_ts:object id is shared by distinct events
        # (two participants joining in one millisecond); a retry resends the same body.
        event_id="body_sha256",
        event_type="json:event",
        default_tolerance_s=None,
        dedupe_retention_s=DAY_S,  # 3 retries over ~85 min
        payload_retention_s=7 * DAY_S,
        secret_headers=frozenset({"x-zm-signature"}),
        docs={
            "headers": "x-zm-signature (v0=hex), x-zm-request-timestamp",
            "event_id": "SHA-256 of the body (Zoom documents no event id)",
            "tolerance": "none by default (unknown whether retries are re-signed); settable",
            "dedupe": "1 day (retries over ~85 min)",
            "handshake": "endpoint.url_validation -> {plainToken, encryptedToken}",
        },
    )
)
