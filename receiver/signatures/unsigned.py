"""``scheme: none``: accepts every delivery. For local testing only."""

from __future__ import annotations

__all__ = ["AcceptAll"]

from receiver.models import InboundRequest
from receiver.signatures.base import BuildContext, Scheme, Unsigned
from receiver.signatures.common import DAY_S
from receiver.signatures.registry import register


class AcceptAll:
    def verify(self, request: InboundRequest, *, now_s: float) -> None:
        return None

    def sign(self, d: Unsigned) -> dict[str, str]:
        return {}


def _build(ctx: BuildContext) -> AcceptAll:
    return AcceptAll()


register(
    Scheme(
        name="none",
        summary="No verification at all: accepts every request. For local testing only.",
        build=_build,
        event_id="body_sha256",
        event_type=None,
        default_tolerance_s=None,
        dedupe_retention_s=DAY_S,
        payload_retention_s=DAY_S,
        needs_secret=False,
        docs={
            "headers": "none",
            "event_id": "SHA-256 of the body unless event_id is set",
            "tolerance": "none",
            "dedupe": "1 day",
            "signing": "nothing to sign",
        },
    )
)
