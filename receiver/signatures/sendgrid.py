"""SendGrid Event Webhook: ECDSA P-256/SHA-256 over ``{timestamp}{body}``.

``X-Twilio-Email-Event-Webhook-Signature`` is a base64 DER signature; the verification key from
the SendGrid UI is a base64 DER SubjectPublicKeyInfo (a PEM block is accepted too). The body is
a JSON array of events, one event id (``sg_event_id``) per element. SendGrid's SDK checks no
window and retries for up to a day, so the default window (2 days) only bounds old replays.
"""

from __future__ import annotations

__all__ = ["SendGridVerifier"]

import base64
import binascii

from cryptography.exceptions import InvalidSignature as CryptoInvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key, load_pem_public_key

from receiver.errors import InvalidSignature
from receiver.models import InboundRequest
from receiver.signatures.base import BuildContext, Scheme
from receiver.signatures.common import (
    DAY_S,
    check_window,
    decode_signature,
    parse_timestamp,
    require_header,
    require_secrets,
    resolve_tolerance,
    to_bytes,
)
from receiver.signatures.registry import register

_TOLERANCE_S = 2 * DAY_S
_SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
_TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"


class SendGridVerifier:
    def __init__(
        self, keys: tuple[ec.EllipticCurvePublicKey, ...], *, tolerance_s: int | None
    ) -> None:
        self.keys = keys
        self.tolerance_s = tolerance_s

    def verify(self, request: InboundRequest, *, now_s: float) -> None:
        signature_b64 = require_header(request, _SIGNATURE_HEADER)
        timestamp = require_header(request, _TIMESTAMP_HEADER)
        signature = decode_signature(signature_b64, "base64")
        if not signature:
            raise InvalidSignature("the signature is not valid base64")
        check_window(parse_timestamp(timestamp), now_s=now_s, tolerance_s=self.tolerance_s)
        content = to_bytes(timestamp) + request.body
        for key in self.keys:
            try:
                key.verify(signature, content, ec.ECDSA(hashes.SHA256()))
            except (CryptoInvalidSignature, ValueError):  # ValueError: not a DER signature
                continue
            return
        raise InvalidSignature("the signature does not match")


def load_public_key(secret: str) -> ec.EllipticCurvePublicKey:
    text = secret.strip()
    try:
        if "BEGIN PUBLIC KEY" in text:
            key = load_pem_public_key(text.encode("ascii"))
        else:
            key = load_der_public_key(base64.b64decode(text, validate=True))
    except (ValueError, TypeError, binascii.Error, UnicodeEncodeError):
        raise ValueError("a SendGrid verification key is not a base64 DER public key") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("a SendGrid verification key is not an ECDSA P-256 public key")
    return key


def _build(ctx: BuildContext) -> SendGridVerifier:
    keys = tuple(load_public_key(s) for s in require_secrets(ctx))
    return SendGridVerifier(keys, tolerance_s=resolve_tolerance(ctx, _TOLERANCE_S))


register(
    Scheme(
        name="sendgrid",
        summary="SendGrid Event Webhook: ECDSA P-256 signature over timestamp+body; batches.",
        build=_build,
        event_id="json:sg_event_id || body_sha256",  # an element without one: its own bytes
        event_type="json:event",
        default_tolerance_s=_TOLERANCE_S,
        dedupe_retention_s=3 * DAY_S,  # retried for up to 24 h
        payload_retention_s=7 * DAY_S,
        is_batch=True,
        secret_headers=frozenset({"x-twilio-email-event-webhook-signature"}),
        docs={
            "headers": (
                "X-Twilio-Email-Event-Webhook-Signature (base64 DER), "
                "X-Twilio-Email-Event-Webhook-Timestamp"
            ),
            "event_id": "sg_event_id of each array element, else SHA-256 of the element",
            "tolerance": "2 days both ways (retries for up to 24 h)",
            "dedupe": "3 days",
            "secret": "the verification key from SendGrid: base64 DER public key",
            "signing": "SendGrid signs with its ECDSA P-256 private key; only the public key "
            "is configured, so the receiver cannot sign",
        },
    )
)
