"""Shopify: ``X-Shopify-Hmac-Sha256: <base64 HMAC-SHA256 of the body>``, app client secret.

No timestamp is signed (``X-Shopify-Triggered-At`` is not covered by the HMAC). Event id: Shopify's
"ignore duplicates" guide names ``X-Shopify-Event-Id``; it is shared by every delivery one merchant
action produces, so it is scoped by shop domain and topic. ``X-Shopify-Webhook-Id`` is documented
as per *delivery* and reported to change between retries, so it would not catch redeliveries.
"""

from __future__ import annotations

__all__ = ["SHOPIFY"]

from receiver.signatures.base import Scheme
from receiver.signatures.common import DAY_S, HOUR_S
from receiver.signatures.declarative import HmacSpec, spec_builder
from receiver.signatures.registry import register

SHOPIFY = HmacSpec(
    header="X-Shopify-Hmac-Sha256",
    encoding="base64",
    event_id_header="X-Shopify-Event-Id",
)

register(
    Scheme(
        name="shopify",
        summary="Shopify: X-Shopify-Hmac-Sha256 base64 HMAC-SHA256 of the body.",
        build=spec_builder(SHOPIFY, default_tolerance_s=None),
        event_id=(
            "{header:X-Shopify-Shop-Domain?}:{header:X-Shopify-Topic?}:{header:X-Shopify-Event-Id}"
        ),
        event_type="header:X-Shopify-Topic",
        default_tolerance_s=None,
        dedupe_retention_s=48 * HOUR_S,  # 8 retries over 4 h (48 h before Sept 2024)
        payload_retention_s=7 * DAY_S,
        secret_headers=frozenset({"x-shopify-hmac-sha256"}),
        docs={
            "headers": "X-Shopify-Hmac-Sha256 (base64), X-Shopify-Event-Id, X-Shopify-Topic",
            "event_id": "shop domain:topic:X-Shopify-Event-Id (Webhook-Id changes per delivery)",
            "tolerance": "none (no signed timestamp)",
            "dedupe": "48 h (8 retries over 4 h)",
        },
    )
)
