"""Stripe: ``Stripe-Signature: t=<unix s>,v1=<hex>[,v1=<hex>…]`` over ``{t}.{body}``.

The HMAC key is the whole ``whsec_…`` string as UTF-8 (Stripe does not base64-decode it, unlike
Standard Webhooks). During a secret roll Stripe sends one ``v1`` per active secret; entries of
other schemes (``v0``) are ignored. Stripe's SDK checks only the past; this receiver checks both
directions, 300 s by default.
"""

from __future__ import annotations

__all__ = ["STRIPE"]

from receiver.signatures.base import Scheme
from receiver.signatures.common import DAY_S
from receiver.signatures.declarative import HmacSpec, spec_builder
from receiver.signatures.registry import register

_TOLERANCE_S = 300

STRIPE = HmacSpec(
    header="Stripe-Signature",
    format="kv_list",
    item_sep=",",
    kv_sep="=",
    signature_key="v1",
    timestamp_key="t",
    timestamp_source="kv",
    signed_content="{timestamp}.{body}",
)

register(
    Scheme(
        name="stripe",
        summary="Stripe: Stripe-Signature t=…,v1=… HMAC-SHA256 over t.body (whole whsec_ key).",
        build=spec_builder(STRIPE, default_tolerance_s=_TOLERANCE_S),
        event_id="json:id",
        event_type="json:type",
        default_tolerance_s=_TOLERANCE_S,
        dedupe_retention_s=30 * DAY_S,  # manual resends reach back 30 days
        payload_retention_s=7 * DAY_S,
        secret_headers=frozenset({"stripe-signature"}),
        docs={
            "headers": "Stripe-Signature (t=…,v1=…; several v1 during a secret roll)",
            "event_id": "body id (evt_…), same on retries and resends",
            "tolerance": "300 s both ways (Stripe's SDK checks only the past)",
            "dedupe": "30 days (manual resend of events up to 30 days old)",
            "secret": "the whole whsec_… string, used as UTF-8",
        },
    )
)
