"""Linear: ``Linear-Signature: <hex HMAC-SHA256 of the body>``.

The timestamp is inside the signed body (``webhookTimestamp``, milliseconds); Linear's SDK
rejects more than 60 s of drift, so the window is checked after the signature holds.
"""

from __future__ import annotations

__all__ = ["LINEAR"]

from receiver.signatures.base import Scheme
from receiver.signatures.common import DAY_S
from receiver.signatures.declarative import HmacSpec, spec_builder
from receiver.signatures.registry import register

_TOLERANCE_S = 60

LINEAR = HmacSpec(
    header="Linear-Signature",
    timestamp_source="json",
    timestamp_json_path="webhookTimestamp",
    timestamp_unit="ms",
    event_id_header="Linear-Delivery",
)

register(
    Scheme(
        name="linear",
        summary="Linear: Linear-Signature hex HMAC of the body; webhookTimestamp (ms) within 60 s.",
        build=spec_builder(LINEAR, default_tolerance_s=_TOLERANCE_S),
        event_id="header:Linear-Delivery",
        event_type="header:Linear-Event",
        default_tolerance_s=_TOLERANCE_S,
        dedupe_retention_s=2 * DAY_S,  # retries at +1 min, +1 h, +6 h
        payload_retention_s=7 * DAY_S,
        # Stamped anew on every attempt (Linear's SDK refuses one older than 60 s).
        delivery_fields=frozenset({"webhookTimestamp"}),
        secret_headers=frozenset({"linear-signature"}),
        docs={
            "headers": "Linear-Signature (hex), Linear-Delivery, Linear-Event",
            "event_id": "Linear-Delivery header",
            "tolerance": "60 s both ways on body webhookTimestamp (ms)",
            "dedupe": "2 days (retries up to +6 h)",
        },
    )
)
