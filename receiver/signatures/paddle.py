"""Paddle Billing: ``Paddle-Signature: ts=<unix s>;h1=<hex>[;h1=…]`` over ``{ts}:{body}``.

Paddle's SDK allows 5 seconds of drift either way; that is the default here too, but queued
proxies may need a larger ``tolerance_s``.
"""

from __future__ import annotations

__all__ = ["PADDLE"]

from receiver.signatures.base import Scheme
from receiver.signatures.common import DAY_S
from receiver.signatures.declarative import HmacSpec, spec_builder
from receiver.signatures.registry import register

_TOLERANCE_S = 5

PADDLE = HmacSpec(
    header="Paddle-Signature",
    format="kv_list",
    item_sep=";",
    kv_sep="=",
    signature_key="h1",
    timestamp_key="ts",
    timestamp_source="kv",
    signed_content="{timestamp}:{body}",
)

register(
    Scheme(
        name="paddle",
        summary="Paddle Billing: Paddle-Signature ts=…;h1=… HMAC-SHA256 over ts:body.",
        build=spec_builder(PADDLE, default_tolerance_s=_TOLERANCE_S),
        event_id="json:event_id",
        event_type="json:event_type",
        default_tolerance_s=_TOLERANCE_S,
        dedupe_retention_s=90 * DAY_S,  # 3 days of retries; replays of notifications ≤ 90 days old
        payload_retention_s=7 * DAY_S,
        secret_headers=frozenset({"paddle-signature"}),
        docs={
            "headers": "Paddle-Signature (ts=…;h1=…; several h1 during rotation)",
            "event_id": "body event_id (evt_…)",
            "tolerance": "5 s both ways (Paddle SDK default)",
            "dedupe": "90 days (3 days of retries; replays of notifications up to 90 days old)",
        },
    )
)
