"""How each provider signs a delivery, as a table shared by the signature unit tests and the
HTTP-level preset tests.

:data:`CASES` describes, for each preset, how its provider (or the provider's SDK, where one
exists) signs a delivery with either of two fake keys; :class:`Kit` builds requests and verifiers
the way ingest does (``get_scheme(name).build(...)``). All secrets here are obviously fake.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

import nacl.signing
import standardwebhooks
import stripe
import svix.webhooks
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from paddle_billing.Notifications.PaddleSignature import PaddleSignature
from slack_sdk.signature import SignatureVerifier
from twilio.request_validator import RequestValidator

from receiver.models import InboundRequest
from receiver.signatures.base import BuildContext, Verifier
from receiver.signatures.registry import get_scheme

NOW = 1_700_000_000
BODY = b'{"id":"evt_1","type":"demo"}'
URL = "https://hooks.example.test/webhooks/demo"
MSG_ID = "msg_test_1"

# Two fake keys per kind: index 0 and 1. Never real secrets.
WHSEC = (
    "whsec_" + base64.b64encode(b"test-secret-0-for-unit-tests-ok").decode(),
    "whsec_" + base64.b64encode(b"test-secret-1-for-unit-tests-ok").decode(),
)
PLAIN = ("test_secret_zero", "test_secret_one")
STRIPE_SECRETS = ("whsec_test_stripe_zero", "whsec_test_stripe_one")
ED25519_SEEDS = (bytes([1]) * 32, bytes([2]) * 32)


def ed25519_signing_key(index: int) -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(ED25519_SEEDS[index])


def whpk(index: int) -> str:
    return "whpk_" + base64.b64encode(bytes(ed25519_signing_key(index).verify_key)).decode()


def discord_public_key(index: int) -> str:
    return bytes(ed25519_signing_key(index).verify_key).hex()


_P256_KEYS = (ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1()))


def p256_private_key(index: int) -> ec.EllipticCurvePrivateKey:
    return _P256_KEYS[index]


def sendgrid_public_key(index: int) -> str:
    der = (
        p256_private_key(index)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return base64.b64encode(der).decode()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def hmac_hex(key: str, content: bytes, digest: str = "sha256") -> str:
    return hmac.new(key.encode(), content, digest).hexdigest()


def hmac_b64(key: str, content: bytes, digest: str = "sha256") -> str:
    return base64.b64encode(hmac.new(key.encode(), content, digest).digest()).decode()


# --- the case table ------------------------------------------------------------------------


@dataclass(frozen=True)
class Signed:
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class Case:
    """How a provider signs, with key 0 or key 1.

    ``secret(i)`` is what the operator configures; ``sign(i, body, ts)`` is what the provider
    sends. ``signature_header`` is None when the signature lives in the body (Mailgun).
    """

    id: str
    scheme: str
    secret: Callable[[int], str]
    sign: Callable[[int, bytes, int], Signed]
    signature_header: str | None
    timestamp_header: str | None = None
    signs_body: bool = True
    has_timestamp: bool = False
    public_url: str | None = None
    options: Mapping[str, Any] | None = None
    extra: Mapping[str, str] = field(default_factory=dict)

    def build(self, *indexes: int, tolerance_s: int | None = None) -> Verifier:
        return Kit.build(
            self.scheme,
            [self.secret(i) for i in indexes],
            tolerance_s=tolerance_s,
            options=self.options,
            public_url=self.public_url,
        )

    def request(self, index: int, ts: int = NOW, body: bytes = BODY) -> InboundRequest:
        signed = self.sign(index, body, ts)
        return Kit.request({**self.extra, **signed.headers}, signed.body)

    @property
    def tolerance_s(self) -> int | None:
        scheme = get_scheme(self.scheme)
        assert scheme is not None
        return scheme.default_tolerance_s if self.has_timestamp else None


def _same(headers: dict[str, str]) -> Callable[[bytes], Signed]:
    return lambda body: Signed(headers, body)


def _stripe(i: int, body: bytes, ts: int) -> Signed:
    header = stripe.WebhookSignature.generate_signature_header(
        body.decode(), STRIPE_SECRETS[i], timestamp=ts
    )
    return Signed({"Stripe-Signature": header}, body)


def _standard(prefix: str, secrets: tuple[str, ...]) -> Callable[[int, bytes, int], Signed]:
    def sign(i: int, body: bytes, ts: int) -> Signed:
        if prefix == "svix-":
            signature = svix.webhooks.Webhook(secrets[i]).sign(MSG_ID, utc(ts), body.decode())
        else:
            hook = standardwebhooks.Webhook(secrets[i])
            signature = hook.sign(MSG_ID, utc(ts), body.decode())
        return Signed(
            {f"{prefix}id": MSG_ID, f"{prefix}timestamp": str(ts), f"{prefix}signature": signature},
            body,
        )

    return sign


def _v1a(i: int, body: bytes, ts: int) -> Signed:
    content = f"{MSG_ID}.{ts}.".encode() + body
    signature = ed25519_signing_key(i).sign(content).signature
    return Signed(
        {
            "webhook-id": MSG_ID,
            "webhook-timestamp": str(ts),
            "webhook-signature": "v1a," + base64.b64encode(signature).decode(),
        },
        body,
    )


def _prefixed_hex(header: str, prefix: str, digest: str = "sha256") -> Callable[..., Signed]:
    def sign(i: int, body: bytes, ts: int) -> Signed:
        return Signed({header: prefix + hmac_hex(PLAIN[i], body, digest)}, body)

    return sign


def _shopify(i: int, body: bytes, ts: int) -> Signed:
    return Signed({"X-Shopify-Hmac-Sha256": hmac_b64(PLAIN[i], body)}, body)


def _slack(i: int, body: bytes, ts: int) -> Signed:
    signature = SignatureVerifier(PLAIN[i]).generate_signature(timestamp=str(ts), body=body)
    return Signed({"X-Slack-Signature": signature, "X-Slack-Request-Timestamp": str(ts)}, body)


def _zoom(i: int, body: bytes, ts: int) -> Signed:
    signature = "v0=" + hmac_hex(PLAIN[i], f"v0:{ts}:".encode() + body)
    return Signed({"x-zm-signature": signature, "x-zm-request-timestamp": str(ts)}, body)


def _discord(i: int, body: bytes, ts: int) -> Signed:
    signature = ed25519_signing_key(i).sign(str(ts).encode() + body).signature
    return Signed({"X-Signature-Ed25519": signature.hex(), "X-Signature-Timestamp": str(ts)}, body)


FORM_BODY = b"CallSid=CA123&From=%2B15550001111&To=%2B15550002222&Digits=1234&Empty="


def _twilio(i: int, body: bytes, ts: int) -> Signed:
    params = parse_qs(body.decode(), keep_blank_values=True)
    flat = {k: v[0] for k, v in params.items()}
    signature = RequestValidator(PLAIN[i]).compute_signature(URL, flat)
    return Signed({"X-Twilio-Signature": signature}, body)


def _sendgrid(i: int, body: bytes, ts: int) -> Signed:
    der = p256_private_key(i).sign(str(ts).encode() + body, ec.ECDSA(hashes.SHA256()))
    return Signed(
        {
            "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(der).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": str(ts),
        },
        body,
    )


def _paddle(i: int, body: bytes, ts: int) -> Signed:
    digest = PaddleSignature.calculate_hmac(PLAIN[i], f"{ts}:".encode() + body).hexdigest()
    return Signed({"Paddle-Signature": f"ts={ts};h1={digest}"}, body)


def _square(i: int, body: bytes, ts: int) -> Signed:
    return Signed({"x-square-hmacsha256-signature": hmac_b64(PLAIN[i], URL.encode() + body)}, body)


def mailgun_body(key: str, ts: int, token: str = "t" * 50, event: object = None) -> bytes:
    signature = hmac_hex(key, f"{ts}{token}".encode())
    document = {
        "signature": {"timestamp": str(ts), "token": token, "signature": signature},
        "event-data": event
        or {"id": "mg-evt-1", "timestamp": 1700000000.123456, "event": "delivered"},
    }
    return json.dumps(document).encode()


def _mailgun(i: int, body: bytes, ts: int) -> Signed:
    # Mailgun draws a fresh token for every signing (a token seen before with another body is
    # refused as a replay): one per key and timestamp here.
    return Signed({}, mailgun_body(PLAIN[i], ts, token=f"{i}x{ts}".ljust(50, "t")))


def _gitlab_token(i: int, body: bytes, ts: int) -> Signed:
    return Signed({"X-Gitlab-Token": PLAIN[i], "Idempotency-Key": "idem-1"}, body)


def linear_body(ts_ms: int) -> bytes:
    return json.dumps({"type": "Issue", "action": "create", "webhookTimestamp": ts_ms}).encode()


def _linear(i: int, body: bytes, ts: int) -> Signed:
    signed_body = linear_body(ts * 1000)
    return Signed({"Linear-Signature": hmac_hex(PLAIN[i], signed_body)}, signed_body)


def _plain(i: int) -> str:
    return PLAIN[i]


STRIPE_AS_HMAC: Mapping[str, Any] = {
    "header": "Stripe-Signature",
    "format": "kv_list",
    "signature_key": "v1",
    "timestamp_key": "t",
    "timestamp_source": "kv",
    "signed_content": "{timestamp}.{body}",
}

CASES: tuple[Case, ...] = (
    Case(
        "stripe",
        "stripe",
        lambda i: STRIPE_SECRETS[i],
        _stripe,
        "Stripe-Signature",
        has_timestamp=True,
    ),
    Case(
        "standard-webhooks-v1",
        "standard-webhooks",
        lambda i: WHSEC[i],
        _standard("webhook-", WHSEC),
        "webhook-signature",
        timestamp_header="webhook-timestamp",
        has_timestamp=True,
    ),
    Case(
        "standard-webhooks-v1a",
        "standard-webhooks",
        whpk,
        _v1a,
        "webhook-signature",
        timestamp_header="webhook-timestamp",
        has_timestamp=True,
    ),
    *(
        Case(
            name,
            name,
            lambda i: WHSEC[i],
            _standard("svix-", WHSEC),
            "svix-signature",
            timestamp_header="svix-timestamp",
            has_timestamp=True,
        )
        for name in ("svix", "clerk", "resend")
    ),
    Case(
        "github",
        "github",
        _plain,
        _prefixed_hex("X-Hub-Signature-256", "sha256="),
        "X-Hub-Signature-256",
    ),
    Case("shopify", "shopify", _plain, _shopify, "X-Shopify-Hmac-Sha256"),
    Case(
        "slack",
        "slack",
        _plain,
        _slack,
        "X-Slack-Signature",
        timestamp_header="X-Slack-Request-Timestamp",
        has_timestamp=True,
    ),
    Case(
        "discord",
        "discord",
        discord_public_key,
        _discord,
        "X-Signature-Ed25519",
        timestamp_header="X-Signature-Timestamp",
        has_timestamp=True,
    ),
    Case(
        "twilio",
        "twilio",
        _plain,
        lambda i, b, ts: _twilio(i, FORM_BODY, ts),
        "X-Twilio-Signature",
        public_url=URL,
    ),
    Case(
        "sendgrid",
        "sendgrid",
        sendgrid_public_key,
        _sendgrid,
        "X-Twilio-Email-Event-Webhook-Signature",
        timestamp_header="X-Twilio-Email-Event-Webhook-Timestamp",
        has_timestamp=True,
    ),
    Case("paddle", "paddle", _plain, _paddle, "Paddle-Signature", has_timestamp=True),
    Case("square", "square", _plain, _square, "x-square-hmacsha256-signature", public_url=URL),
    Case("mailgun", "mailgun", _plain, _mailgun, None, signs_body=False, has_timestamp=True),
    Case("gitlab-token", "gitlab", _plain, _gitlab_token, "X-Gitlab-Token", signs_body=False),
    Case(
        "gitlab-signing",
        "gitlab",
        lambda i: WHSEC[i],
        _standard("webhook-", WHSEC),
        "webhook-signature",
        timestamp_header="webhook-timestamp",
        has_timestamp=True,
    ),
    Case("linear", "linear", _plain, _linear, "Linear-Signature", has_timestamp=True),
    Case(
        "zoom", "zoom", _plain, _zoom, "x-zm-signature", timestamp_header="x-zm-request-timestamp"
    ),
    Case(
        "intercom",
        "intercom",
        _plain,
        _prefixed_hex("X-Hub-Signature", "sha1=", "sha1"),
        "X-Hub-Signature",
    ),
    Case(
        "bitbucket",
        "bitbucket",
        _plain,
        _prefixed_hex("X-Hub-Signature", "sha256="),
        "X-Hub-Signature",
    ),
    Case("jira", "jira", _plain, _prefixed_hex("X-Hub-Signature", "sha256="), "X-Hub-Signature"),
    Case(
        "hmac-as-stripe",
        "hmac",
        lambda i: STRIPE_SECRETS[i],
        _stripe,
        "Stripe-Signature",
        has_timestamp=True,
        options=STRIPE_AS_HMAC,
    ),
)

# What every scheme is built with in the scheme-wide tests (fuzzing, contract checks).
SCHEME_SETUP: Mapping[str, Mapping[str, Any]] = {
    "standard-webhooks": {"secrets": [WHSEC[0], whpk(1)]},
    "svix": {"secrets": [WHSEC[0]]},
    "clerk": {"secrets": [WHSEC[0]]},
    "resend": {"secrets": [WHSEC[0]]},
    "stripe": {"secrets": [STRIPE_SECRETS[0]]},
    "discord": {"secrets": [discord_public_key(0)]},
    "sendgrid": {"secrets": [sendgrid_public_key(0)]},
    "gitlab": {"secrets": [PLAIN[0], WHSEC[0]]},
    "hmac": {"secrets": [STRIPE_SECRETS[0]], "options": STRIPE_AS_HMAC},
    "none": {"secrets": []},
}


class Kit:
    """Factories for requests and verifiers, plus the fake keys and oracle helpers."""

    NOW = NOW
    BODY = BODY
    URL = URL
    MSG_ID = MSG_ID
    WHSEC = WHSEC
    PLAIN = PLAIN
    STRIPE_SECRETS = STRIPE_SECRETS
    FORM_BODY = FORM_BODY
    STRIPE_AS_HMAC = STRIPE_AS_HMAC
    Signed = Signed
    ed25519_signing_key = staticmethod(ed25519_signing_key)
    whpk = staticmethod(whpk)
    discord_public_key = staticmethod(discord_public_key)
    p256_private_key = staticmethod(p256_private_key)
    sendgrid_public_key = staticmethod(sendgrid_public_key)
    utc = staticmethod(utc)
    hmac_hex = staticmethod(hmac_hex)
    hmac_b64 = staticmethod(hmac_b64)
    mailgun_body = staticmethod(mailgun_body)
    linear_body = staticmethod(linear_body)
    sha256_hex = staticmethod(sha256_hex)
    cases = CASES

    @staticmethod
    def request(
        headers: Mapping[str, str] | None = None,
        body: bytes = BODY,
        *,
        url: str = URL,
        method: str = "POST",
        provider: str = "demo",
    ) -> InboundRequest:
        query = {k: v[0] for k, v in parse_qs(url.partition("?")[2]).items()}
        return InboundRequest(
            provider=provider,
            method=method,
            url=url,
            headers={k.lower(): v for k, v in (headers or {}).items()},
            body=body,
            query=query,
        )

    @staticmethod
    def build(
        scheme: str,
        secrets: tuple[str, ...] | list[str] = (),
        *,
        tolerance_s: int | None = None,
        options: Mapping[str, Any] | None = None,
        public_url: str | None = None,
    ) -> Verifier:
        found = get_scheme(scheme)
        assert found is not None, scheme
        validated = None
        if options is not None:
            assert found.options_model is not None, scheme
            validated = found.options_model.model_validate(dict(options))
        ctx = BuildContext(
            provider=scheme,
            secrets=tuple(secrets),
            tolerance_s=tolerance_s,
            options=validated,
            public_url=public_url,
        )
        return found.build(ctx)

    @staticmethod
    def build_scheme(name: str) -> Verifier:
        """Every registered scheme, built with working fake secrets (see SCHEME_SETUP)."""
        setup = SCHEME_SETUP.get(name, {})
        return Kit.build(
            name,
            setup.get("secrets", [PLAIN[0]]),
            options=setup.get("options"),
            public_url=URL,
        )
