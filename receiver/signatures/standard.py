"""Standard Webhooks (``webhook-*`` headers) and the Svix senders (Svix, Clerk, Resend).

Signed content is ``{id}.{timestamp}.{body}``. The signature header is a space-separated list
of ``version,base64`` entries: ``v1`` is HMAC-SHA256 keyed with the base64 bytes of a
``whsec_`` secret, ``v1a`` is Ed25519 checked with a ``whpk_`` public key. A configured secret's
prefix picks which it is, so a provider may list both while it moves from one to the other.
The timestamp window is five minutes in both directions, as in the reference libraries.
"""

from __future__ import annotations

__all__ = ["StandardKeys", "StandardSigningVerifier", "StandardVerifier", "load_keys"]

import base64
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature as CryptoInvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from receiver.errors import InvalidSignature
from receiver.models import InboundRequest
from receiver.signatures.base import BuildContext, Scheme, Unsigned, Verifier
from receiver.signatures.common import (
    DAY_S,
    check_window,
    decode_secret,
    decode_signature,
    ed25519_public_key,
    hmac_digest,
    matches_any,
    parse_kv_list,
    parse_timestamp,
    require_header,
    require_secrets,
    resolve_tolerance,
    to_bytes,
)
from receiver.signatures.registry import register

_TOLERANCE_S = 300
# Svix retries for ~27.6 h, and a message can be resent by hand (or recovered in bulk) while
# Svix keeps its payload: 90 days.
_RETENTION_S = 90 * DAY_S


@dataclass(frozen=True, slots=True)
class StandardKeys:
    hmac_keys: tuple[bytes, ...]
    public_keys: tuple[Ed25519PublicKey, ...]
    signing_key: Ed25519PrivateKey | None = None  # from a ``whsk_`` secret, for ``sign`` only


def load_keys(secrets: tuple[str, ...]) -> StandardKeys:
    """Sort secrets by prefix: ``whpk_`` public key, ``whsk_`` secret key, anything else v1."""
    hmac_keys: list[bytes] = []
    public_keys: list[Ed25519PublicKey] = []
    signing_key: Ed25519PrivateKey | None = None
    for secret in secrets:
        secret = secret.strip()
        if secret.startswith("whpk_"):
            raw = decode_secret(secret, "base64_after_prefix", prefix="whpk_")
            public_keys.append(ed25519_public_key(raw))
        elif secret.startswith("whsk_"):
            seed = decode_secret(secret, "base64_after_prefix", prefix="whsk_")
            if len(seed) != 32:
                raise ValueError(f"a whsk_ Ed25519 secret key must be 32 bytes, got {len(seed)}")
            private = Ed25519PrivateKey.from_private_bytes(seed)
            public_keys.append(private.public_key())
            signing_key = signing_key or private
        else:
            # Like the reference libraries, an unprefixed secret is still base64.
            hmac_keys.append(decode_secret(secret, "base64_after_prefix", prefix="whsec_"))
    return StandardKeys(tuple(hmac_keys), tuple(public_keys), signing_key)


# The most distinct v1a (Ed25519) signatures checked in one delivery.
_MAX_V1A = 4


class StandardVerifier:
    """Verifies ``{prefix}id``, ``{prefix}timestamp``, ``{prefix}signature``."""

    def __init__(self, keys: StandardKeys, *, header_prefix: str, tolerance_s: int | None) -> None:
        self.keys = keys
        self.id_header = f"{header_prefix}id"
        self.timestamp_header = f"{header_prefix}timestamp"
        self.signature_header = f"{header_prefix}signature"
        self.tolerance_s = tolerance_s

    def verify(self, request: InboundRequest, *, now_s: float) -> None:
        msg_id = require_header(request, self.id_header)
        timestamp = require_header(request, self.timestamp_header)
        # A header sent twice arrives joined by ", " (entries never hold a space): one list.
        presented = require_header(request, self.signature_header).replace(", ", " ")
        entries = parse_kv_list(presented, item_sep=" ", kv_sep=",")
        v1 = [sig for version, sig in entries if version == "v1"]
        v1a = [sig for version, sig in entries if version == "v1a"]
        if not v1 and not v1a:
            raise InvalidSignature(f"the {self.signature_header} header has no v1 or v1a entry")
        v1_sigs = [s for s in (decode_signature(t, "base64") for t in v1) if s]
        v1a_sigs = [s for s in (decode_signature(t, "base64") for t in v1a) if s and len(s) == 64]
        v1a_sigs = list(dict.fromkeys(v1a_sigs))  # each one checked once
        if self.keys.public_keys and len(v1a_sigs) > _MAX_V1A:
            # Each is checked by hashing the whole body again (about 8 ms for 1 MB): a sender
            # rotating keys sends two.
            raise InvalidSignature(f"more than {_MAX_V1A} v1a signatures: one per signing key")
        if not v1_sigs and not v1a_sigs:
            raise InvalidSignature("the signature is not valid base64")
        check_window(parse_timestamp(timestamp), now_s=now_s, tolerance_s=self.tolerance_s)
        content = to_bytes(f"{msg_id}.{timestamp}.") + request.body
        macs = [hmac_digest(key, content) for key in self.keys.hmac_keys] if v1_sigs else []
        if matches_any(macs, v1_sigs) or _ed25519_any(self.keys.public_keys, v1a_sigs, content):
            return
        raise InvalidSignature("the signature does not match")


class StandardSigningVerifier(StandardVerifier):
    """A verifier that also signs: a ``whsec_`` (v1) or ``whsk_`` (v1a) secret is configured."""

    def sign(self, d: Unsigned) -> dict[str, str]:
        timestamp = str(int(d.now_s))
        content = to_bytes(f"{d.event_id}.{timestamp}.") + d.body
        if self.keys.hmac_keys:
            mac = hmac_digest(self.keys.hmac_keys[0], content)
            signature = "v1," + base64.b64encode(mac).decode("ascii")
        elif self.keys.signing_key is not None:
            signature = "v1a," + base64.b64encode(self.keys.signing_key.sign(content)).decode()
        else:
            raise ValueError("cannot sign: configure a whsec_ or whsk_ secret")
        return {
            self.id_header: d.event_id,
            self.timestamp_header: timestamp,
            self.signature_header: signature,
        }


def _ed25519_any(
    keys: tuple[Ed25519PublicKey, ...], signatures: list[bytes], content: bytes
) -> bool:
    for key in keys:
        for signature in signatures:
            try:
                key.verify(signature, content)
            except CryptoInvalidSignature:
                continue
            return True
    return False


def make_verifier(
    secrets: tuple[str, ...], *, header_prefix: str, tolerance_s: int | None
) -> StandardVerifier:
    keys = load_keys(secrets)
    cls = StandardVerifier
    if keys.hmac_keys or keys.signing_key is not None:
        cls = StandardSigningVerifier
    return cls(keys, header_prefix=header_prefix, tolerance_s=tolerance_s)


def _builder(header_prefix: str) -> Callable[[BuildContext], Verifier]:
    def build(ctx: BuildContext) -> Verifier:
        return make_verifier(
            require_secrets(ctx),
            header_prefix=header_prefix,
            tolerance_s=resolve_tolerance(ctx, _TOLERANCE_S),
        )

    return build


def _svix_scheme(name: str, who: str) -> Scheme:
    return Scheme(
        name=name,
        summary=f"{who} (Svix): svix-* headers, Standard Webhooks v1 HMAC over id.timestamp.body.",
        build=_builder("svix-"),
        event_id="header:svix-id",
        event_type="json:type",
        default_tolerance_s=_TOLERANCE_S,
        dedupe_retention_s=_RETENTION_S,
        payload_retention_s=7 * DAY_S,
        secret_headers=frozenset({"svix-signature"}),
        docs={
            "headers": "svix-id, svix-timestamp, svix-signature (v1,base64; space-separated)",
            "event_id": "svix-id header (same on every retry)",
            "tolerance": "300 s both ways",
            "dedupe": "90 days (retries ~27.6 h; resends while Svix keeps a message: 90 days)",
            "secret": "whsec_ + base64 signing secret (whpk_ public keys also accepted)",
        },
    )


register(
    Scheme(
        name="standard-webhooks",
        summary="Standard Webhooks: v1 HMAC-SHA256 (whsec_) or v1a Ed25519 (whpk_) signatures.",
        build=_builder("webhook-"),
        event_id="header:webhook-id",
        event_type="json:type",
        default_tolerance_s=_TOLERANCE_S,
        dedupe_retention_s=_RETENTION_S,
        payload_retention_s=7 * DAY_S,
        secret_headers=frozenset({"webhook-signature"}),
        docs={
            "headers": "webhook-id, webhook-timestamp, webhook-signature (v1,… / v1a,…)",
            "event_id": "webhook-id header (same on every retry)",
            "tolerance": "300 s both ways",
            "dedupe": "90 days (Svix: retries ~27.6 h; resends while it keeps a message: 90 days)",
            "secret": "whsec_ + base64 (v1 HMAC) or whpk_ + base64 32-byte Ed25519 public key",
            "signing": (
                "v1: HMAC-SHA256 with the whsec_ secret; v1a: the sender's Ed25519 secret key "
                "(whsk_) signs, so the receiver signs only when given a whsec_ or whsk_ secret"
            ),
        },
    )
)
register(_svix_scheme("svix", "Svix"))
register(_svix_scheme("clerk", "Clerk"))
register(_svix_scheme("resend", "Resend"))
