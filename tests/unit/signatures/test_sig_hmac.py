"""``scheme: hmac`` expresses the HMAC providers through options alone (SDK-signed inputs)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from datetime import UTC, datetime

import pytest
import standardwebhooks
import stripe
from paddle_billing.Notifications import PaddleSignature
from pydantic import ValidationError
from slack_sdk.signature import SignatureVerifier
from square.utils.webhooks_helper import verify_signature

from receiver.errors import InvalidSignature, MissingSignature, TimestampOutOfTolerance
from receiver.signatures.base import DeclaresSecretHeaders, Signer, Unsigned

SECRET = "test_generic_secret"
BODY = b'{"id":"evt_1","type":"demo"}'
TS = 1_700_000_000
SQUARE_URL = "https://sq.example.test/hook"


def _hex(content: bytes, digest: str = "sha256", key: str = SECRET) -> str:
    return hmac.new(key.encode(), content, digest).hexdigest()


def _b64(content: bytes) -> str:
    return base64.b64encode(hmac.new(SECRET.encode(), content, "sha256").digest()).decode()


LINEAR_BODY = json.dumps({"type": "Issue", "webhookTimestamp": TS * 1000}).encode()
WHSEC = "whsec_" + base64.b64encode(b"generic-hmac-test-key-0123456789").decode()

EXPRESSIONS = {
    "stripe": (
        {
            "header": "Stripe-Signature",
            "format": "kv_list",
            "signature_key": "v1",
            "timestamp_key": "t",
            "timestamp_source": "kv",
            "signed_content": "{timestamp}.{body}",
        },
        lambda: {
            "Stripe-Signature": stripe.WebhookSignature.generate_signature_header(
                BODY.decode(), SECRET, timestamp=TS
            )
        },
        BODY,
    ),
    "slack": (
        {
            "header": "X-Slack-Signature",
            "prefix": "v0=",
            "timestamp_source": "header",
            "timestamp_header": "X-Slack-Request-Timestamp",
            "signed_content": "v0:{timestamp}:{body}",
        },
        lambda: {
            "X-Slack-Signature": SignatureVerifier(SECRET).generate_signature(
                timestamp=str(TS), body=BODY
            ),
            "X-Slack-Request-Timestamp": str(TS),
        },
        BODY,
    ),
    "paddle": (
        {
            "header": "Paddle-Signature",
            "format": "kv_list",
            "item_sep": ";",
            "signature_key": "h1",
            "timestamp_key": "ts",
            "timestamp_source": "kv",
            "signed_content": "{timestamp}:{body}",
        },
        lambda: {
            "Paddle-Signature": f"ts={TS};h1="
            + PaddleSignature.calculate_hmac(SECRET, f"{TS}:".encode() + BODY).hexdigest()
        },
        BODY,
    ),
    "shopify": (
        {"header": "X-Shopify-Hmac-Sha256", "encoding": "base64"},
        lambda: {"X-Shopify-Hmac-Sha256": _b64(BODY)},
        BODY,
    ),
    "github": (
        {"header": "X-Hub-Signature-256", "prefix": "sha256="},
        lambda: {"X-Hub-Signature-256": "sha256=" + _hex(BODY)},
        BODY,
    ),
    "standard-webhooks": (
        {
            "header": "webhook-signature",
            "format": "versioned_list",
            "encoding": "base64",
            "secret_decoding": "base64_after_prefix",
            "timestamp_source": "header",
            "timestamp_header": "webhook-timestamp",
            "signed_content": "{id}.{timestamp}.{body}",
        },
        lambda: {
            "webhook-id": "msg_1",
            "webhook-timestamp": str(TS),
            "webhook-signature": "v1,AAAA "
            + standardwebhooks.Webhook(WHSEC).sign(
                "msg_1",
                datetime.fromtimestamp(TS, UTC),
                BODY.decode(),
            ),
        },
        BODY,
    ),
    "linear": (
        {
            "header": "Linear-Signature",
            "timestamp_source": "json",
            "timestamp_json_path": "webhookTimestamp",
            "timestamp_unit": "ms",
            "signed_content": "{body}",
        },
        lambda: {"Linear-Signature": _hex(LINEAR_BODY)},
        LINEAR_BODY,
    ),
    "zoom": (
        {
            "header": "x-zm-signature",
            "prefix": "v0=",
            "timestamp_source": "header",
            "timestamp_header": "x-zm-request-timestamp",
            "signed_content": "v0:{timestamp}:{body}",
        },
        lambda: {
            "x-zm-signature": "v0=" + _hex(f"v0:{TS}:".encode() + BODY),
            "x-zm-request-timestamp": str(TS),
        },
        BODY,
    ),
    "intercom": (
        {"header": "X-Hub-Signature", "prefix": "sha1=", "algorithm": "sha1"},
        lambda: {"X-Hub-Signature": "sha1=" + _hex(BODY, "sha1")},
        BODY,
    ),
    "square": (
        {
            "header": "x-square-hmacsha256-signature",
            "encoding": "base64",
            "signed_content": "{url}{body}",
        },
        lambda: {"x-square-hmacsha256-signature": _b64(SQUARE_URL.encode() + BODY)},
        BODY,
    ),
}


def _secret(provider: str) -> str:
    return WHSEC if provider == "standard-webhooks" else SECRET


@pytest.mark.parametrize("provider", sorted(EXPRESSIONS))
def test_provider_expressed_as_hmac_accepts_its_signed_requests(kit, provider):
    options, make_headers, body = EXPRESSIONS[provider]
    verifier = kit.build("hmac", [_secret(provider)], options=options, public_url=SQUARE_URL)
    verifier.verify(kit.request(make_headers(), body), now_s=TS)
    with pytest.raises(InvalidSignature):
        verifier.verify(kit.request(make_headers(), body + b" "), now_s=TS)


@pytest.mark.parametrize("provider", sorted(EXPRESSIONS))
def test_hmac_sign_round_trips(kit, provider):
    options, _make_headers, body = EXPRESSIONS[provider]
    verifier = kit.build("hmac", [_secret(provider)], options=options, public_url=SQUARE_URL)
    assert isinstance(verifier, Signer)
    headers = verifier.sign(Unsigned(body=body, now_s=TS, event_id="msg_1", url=SQUARE_URL))
    verifier.verify(kit.request(headers, body), now_s=TS)


def test_hmac_sign_output_passes_provider_sdks(kit):
    stripe_verifier = kit.build("hmac", [SECRET], options=EXPRESSIONS["stripe"][0])
    assert isinstance(stripe_verifier, Signer)
    now = time.time()
    headers = stripe_verifier.sign(Unsigned(body=BODY, now_s=now, event_id="e", url=""))
    assert stripe.WebhookSignature.verify_header(
        BODY.decode(), headers["Stripe-Signature"], SECRET, 300
    )
    square_verifier = kit.build(
        "hmac", [SECRET], options=EXPRESSIONS["square"][0], public_url=SQUARE_URL
    )
    assert isinstance(square_verifier, Signer)
    headers = square_verifier.sign(Unsigned(body=BODY, now_s=now, event_id="e", url=SQUARE_URL))
    assert verify_signature(
        request_body=BODY.decode(),
        signature_header=headers["x-square-hmacsha256-signature"],
        signature_key=SECRET,
        notification_url=SQUARE_URL,
    )


def test_timestamp_window_applies_to_every_source(kit):
    for provider in ("stripe", "slack", "linear"):
        options, make_headers, body = EXPRESSIONS[provider]
        verifier = kit.build("hmac", [SECRET], options=options)
        with pytest.raises(TimestampOutOfTolerance):
            verifier.verify(kit.request(make_headers(), body), now_s=TS + 301)
        with pytest.raises(TimestampOutOfTolerance):
            verifier.verify(kit.request(make_headers(), body), now_s=TS - 301)
        kit.build("hmac", [SECRET], options=options, tolerance_s=400).verify(
            kit.request(make_headers(), body), now_s=TS + 350
        )


@pytest.mark.parametrize(
    ("decoding", "secret", "key"),
    [
        ("utf8", "plain-key", b"plain-key"),
        ("hex", "00ff10", b"\x00\xff\x10"),
        ("base64", base64.b64encode(b"\x01\x02\x03").decode(), b"\x01\x02\x03"),
        ("base64_after_prefix", "whsec_" + base64.b64encode(b"abc").decode(), b"abc"),
    ],
)
def test_secret_decodings(kit, decoding, secret, key):
    options = {"header": "X-Sig", "secret_decoding": decoding}
    digest = hmac.new(key, BODY, hashlib.sha256).hexdigest()
    kit.build("hmac", [secret], options=options).verify(kit.request({"X-Sig": digest}), now_s=TS)


@pytest.mark.parametrize(
    ("decoding", "secret", "named"),
    [
        ("hex", "xyz", "not hexadecimal"),
        ("base64", "@@@@", "not base64"),
        ("base64_after_prefix", "whsec_!", r"not base64 \(after its whsec_ prefix"),
    ],
)
def test_undecodable_secret_is_a_build_error_that_hides_the_secret(kit, decoding, secret, named):
    with pytest.raises(ValueError, match=named) as info:
        kit.build("hmac", [secret], options={"header": "X-Sig", "secret_decoding": decoding})
    assert secret not in str(info.value)


@pytest.mark.parametrize(
    ("algorithm", "encoding"), [("sha512", "base64url"), ("sha1", "base64"), ("sha256", "hex")]
)
def test_algorithms_and_encodings(kit, algorithm, encoding):
    mac = hmac.new(SECRET.encode(), BODY, algorithm).digest()
    text = {
        "hex": mac.hex(),
        "base64": base64.b64encode(mac).decode(),
        "base64url": base64.urlsafe_b64encode(mac).decode().rstrip("="),
    }[encoding]
    options = {"header": "X-Sig", "algorithm": algorithm, "encoding": encoding}
    kit.build("hmac", [SECRET], options=options).verify(kit.request({"X-Sig": text}), now_s=TS)


def test_header_placeholder_is_signed_and_required(kit):
    options = {"header": "X-Sig", "signed_content": "{header:X-Account}|{url}|{body}"}
    content = b"acct-1|" + SQUARE_URL.encode() + b"|" + BODY
    verifier = kit.build("hmac", [SECRET], options=options)
    headers = {"X-Sig": _hex(content), "X-Account": "acct-1"}
    verifier.verify(kit.request(headers, url=SQUARE_URL), now_s=TS)
    with pytest.raises(MissingSignature):
        verifier.verify(kit.request({"X-Sig": _hex(content)}, url=SQUARE_URL), now_s=TS)


def test_configured_header_is_declared_secret(kit):
    verifier = kit.build("hmac", [SECRET], options={"header": "X-Custom-Sig"})
    assert isinstance(verifier, DeclaresSecretHeaders)
    assert verifier.secret_headers == frozenset({"x-custom-sig"})


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"header": ""},
        {"header": "X", "algorithm": "md5"},
        {"header": "X", "encoding": "base32"},
        {"header": "X", "unknown": 1},
        {"header": "X", "signed_content": "{timestamp}.{body}"},
        {"header": "X", "signed_content": "{nope}{body}"},
        {"header": "X", "signed_content": "{body"},
        {"header": "X", "signed_content": "no body here"},
        {"header": "X", "timestamp_source": "header"},
        {"header": "X", "timestamp_source": "json"},
        {"header": "X", "timestamp_source": "kv"},
        {"header": "X", "format": "kv_list", "prefix": "v1="},
        {
            "header": "X",
            "timestamp_source": "json",
            "timestamp_json_path": "ts",
            "signed_content": "{timestamp}{body}",
        },
        # A timestamp read from a header (or the kv list) but not signed: a fresh one could be
        # put on any old signature, so the window would protect nothing.
        {"header": "X", "timestamp_source": "header", "timestamp_header": "X-Ts"},
        {"header": "X", "format": "kv_list", "timestamp_source": "kv"},
    ],
)
def test_inconsistent_options_are_refused(kit, options):
    with pytest.raises(ValidationError):
        kit.build("hmac", [SECRET], options=options)


def test_options_are_required(kit):
    with pytest.raises(ValueError, match="options"):
        kit.build("hmac", [SECRET])
