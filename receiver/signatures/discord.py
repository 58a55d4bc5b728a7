"""Discord interactions and webhook events: Ed25519 over ``{X-Signature-Timestamp}{body}``.

The application's public key (hex, 32 bytes) verifies ``X-Signature-Ed25519`` (hex, 64 bytes).
Discord documents no time window; webhook events are retried for up to 10 minutes, so the
default window (900 s, both ways) stays above that even if retries keep their first timestamp.
Interaction PING (``type`` 1) is answered ``{"type": 1}``; a webhook-event PING (``type`` 0)
gets ``204``.
"""

from __future__ import annotations

__all__ = ["DiscordVerifier"]

import binascii

from cryptography.exceptions import InvalidSignature as CryptoInvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from receiver.errors import InvalidSignature
from receiver.models import HandshakeReply, InboundRequest
from receiver.signatures.base import BuildContext, Scheme
from receiver.signatures.common import (
    DAY_S,
    HOUR_S,
    check_window,
    decode_signature,
    ed25519_public_key,
    json_reply,
    parse_timestamp,
    require_header,
    require_secrets,
    resolve_tolerance,
    to_bytes,
)
from receiver.signatures.registry import register

_TOLERANCE_S = 900
_SIGNATURE_HEADER = "X-Signature-Ed25519"
_TIMESTAMP_HEADER = "X-Signature-Timestamp"


class DiscordVerifier:
    def __init__(self, keys: tuple[Ed25519PublicKey, ...], *, tolerance_s: int | None) -> None:
        self.keys = keys
        self.tolerance_s = tolerance_s

    def verify(self, request: InboundRequest, *, now_s: float) -> None:
        signature_hex = require_header(request, _SIGNATURE_HEADER)
        timestamp = require_header(request, _TIMESTAMP_HEADER)
        signature = decode_signature(signature_hex, "hex")
        if signature is None or len(signature) != 64:
            raise InvalidSignature("the signature is not 64 bytes of hex")
        check_window(parse_timestamp(timestamp), now_s=now_s, tolerance_s=self.tolerance_s)
        content = to_bytes(timestamp) + request.body
        for key in self.keys:
            try:
                key.verify(signature, content)
            except CryptoInvalidSignature:
                continue
            return
        raise InvalidSignature("the signature does not match")

    def handshake(self, request: InboundRequest, document: object) -> HandshakeReply | None:
        if not isinstance(document, dict) or "event" in document:
            return None
        kind = document.get("type")
        if kind == 1 and not isinstance(kind, bool):
            return json_reply({"type": 1})  # interaction PING -> PONG
        if kind == 0 and not isinstance(kind, bool):
            return HandshakeReply(status=204, body=b"")  # webhook-event PING
        return None


def _build(ctx: BuildContext) -> DiscordVerifier:
    keys: list[Ed25519PublicKey] = []
    for secret in require_secrets(ctx):
        try:
            raw = binascii.unhexlify(secret.strip())
        except ValueError:
            raise ValueError("a Discord public key is not valid hex") from None
        keys.append(ed25519_public_key(raw))
    return DiscordVerifier(tuple(keys), tolerance_s=resolve_tolerance(ctx, _TOLERANCE_S))


register(
    Scheme(
        name="discord",
        summary="Discord: Ed25519 X-Signature-Ed25519 over timestamp+body; answers PING.",
        build=_build,
        # Webhook events carry no id; interactions do, inside a unique body.
        event_id="body_sha256",
        event_type="json:event.type",
        default_tolerance_s=_TOLERANCE_S,
        dedupe_retention_s=HOUR_S,  # webhook events are retried for up to 10 min
        payload_retention_s=7 * DAY_S,
        secret_headers=frozenset({"x-signature-ed25519"}),
        docs={
            "headers": "X-Signature-Ed25519 (hex), X-Signature-Timestamp",
            "event_id": "SHA-256 of the body (webhook events have no id)",
            "tolerance": "900 s both ways (retries last up to 10 min)",
            "dedupe": "1 hour (retries for up to 10 min)",
            "secret": "the application's public key, hex",
            "signing": "Discord signs with the application's Ed25519 private key, which only "
            "Discord holds; the receiver cannot sign",
            "handshake": 'interaction PING -> {"type":1}; webhook-event PING -> 204',
        },
    )
)
