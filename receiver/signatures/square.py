"""Square: ``x-square-hmacsha256-signature: <base64 HMAC-SHA256 of {notification_url}{body}>``.

The URL must be byte-identical to the one on the Square subscription, so it is configured
(``options.notification_url`` or the provider's ``public_url``), never rebuilt from the request.
"""

from __future__ import annotations

__all__ = ["SQUARE", "SquareOptions"]

from pydantic import BaseModel, ConfigDict

from receiver.settings import PublicUrl
from receiver.signatures.base import BuildContext, Scheme
from receiver.signatures.common import DAY_S, decode_secret, options_of, require_secrets
from receiver.signatures.declarative import HmacSpec, HmacVerifier
from receiver.signatures.registry import register

SQUARE = HmacSpec(
    header="x-square-hmacsha256-signature",
    encoding="base64",
    signed_content="{url}{body}",
)


class SquareOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    # The subscription's notification URL; defaults to the provider's public_url.
    notification_url: PublicUrl | None = None


def _build(ctx: BuildContext) -> HmacVerifier:
    url = options_of(ctx, SquareOptions).notification_url or ctx.public_url
    if not url:
        raise ValueError("scheme square needs public_url or options.notification_url")
    keys = tuple(decode_secret(s, "utf8") for s in require_secrets(ctx))
    return HmacVerifier(SQUARE, keys=keys, tolerance_s=None, url=url)


register(
    Scheme(
        name="square",
        summary="Square: x-square-hmacsha256-signature base64 HMAC of notification URL + body.",
        build=_build,
        event_id="json:event_id",
        event_type="json:type",
        default_tolerance_s=None,
        dedupe_retention_s=7 * DAY_S,  # retried for 24 h (older docs: 72 h)
        payload_retention_s=7 * DAY_S,
        options_model=SquareOptions,
        secret_headers=frozenset({"x-square-hmacsha256-signature", "x-square-signature"}),
        docs={
            "headers": "x-square-hmacsha256-signature (base64)",
            "event_id": "body event_id",
            "tolerance": "none (no signed timestamp)",
            "dedupe": "7 days (retries for 24 h; older docs say 72 h)",
            "url": "public_url or options.notification_url, exactly as on the subscription",
        },
    )
)
