"""Slack: ``X-Slack-Signature: v0=<hex>`` over ``v0:{X-Slack-Request-Timestamp}:{body}``.

Five minutes either way, as in ``slack_sdk``. The Events API ``url_verification`` request is
answered with ``{"challenge": …}`` once the signature holds.
"""

from __future__ import annotations

__all__ = ["SLACK", "SlackVerifier"]

from receiver.models import HandshakeReply, InboundRequest
from receiver.signatures.base import Scheme
from receiver.signatures.common import DAY_S, HOUR_S, json_reply
from receiver.signatures.declarative import HmacSpec, HmacVerifier, spec_builder
from receiver.signatures.registry import register

_TOLERANCE_S = 300

SLACK = HmacSpec(
    header="X-Slack-Signature",
    prefix="v0=",
    timestamp_source="header",
    timestamp_header="X-Slack-Request-Timestamp",
    signed_content="v0:{timestamp}:{body}",
)


class SlackVerifier(HmacVerifier):
    def handshake(self, request: InboundRequest, document: object) -> HandshakeReply | None:
        if not isinstance(document, dict) or document.get("type") != "url_verification":
            return None
        challenge = document.get("challenge")
        if not isinstance(challenge, str):
            return None
        return json_reply({"challenge": challenge})


register(
    Scheme(
        name="slack",
        summary="Slack: X-Slack-Signature v0=<hex> HMAC over v0:timestamp:body; url_verification.",
        build=spec_builder(SLACK, default_tolerance_s=_TOLERANCE_S, verifier=SlackVerifier),
        # Events API deliveries carry event_id; slash commands and interactivity (forms, never
        # retried) and app_rate_limited callbacks do not: keyed on their bytes.
        event_id="json:event_id || body_sha256",
        event_type="json:event.type || form:command || json:type",
        default_tolerance_s=_TOLERANCE_S,
        dedupe_retention_s=HOUR_S,  # retries at ~0 s, +1 min, +5 min
        payload_retention_s=7 * DAY_S,
        secret_headers=frozenset({"x-slack-signature"}),
        docs={
            "headers": "X-Slack-Signature (v0=hex), X-Slack-Request-Timestamp",
            "event_id": "body event_id (same on retries), else SHA-256 of the body (forms)",
            "tolerance": "300 s both ways",
            "dedupe": "1 hour (3 retries within ~6 min)",
            "handshake": 'url_verification -> {"challenge": …}',
        },
    )
)
