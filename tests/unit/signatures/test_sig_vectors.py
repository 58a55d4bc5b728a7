"""The fixed vectors from providers.md ("Test vectors"), cross-checked there with each SDK."""

from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest

from receiver.signatures.base import Signer, Unsigned

BODY = b'{"id":"evt_1","type":"demo"}'
TS = 1_700_000_000
MG_TOKEN = "t" * 50

VECTORS = [
    pytest.param(
        "stripe",
        "whsec_test",
        {
            "Stripe-Signature": "t=1700000000,"
            "v1=709b96a0199a99695e3a3e4392fd699101eb01a795c96d31b72f17312514f5e3"
        },
        id="stripe",
    ),
    pytest.param(
        "standard-webhooks",
        "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
        {
            "webhook-id": "msg_1",
            "webhook-timestamp": "1700000000",
            "webhook-signature": "v1,3OI+/03C2MamxnMs5XDJmSa9SBoYjsnaGMxSqRooflM=",
        },
        id="standard-webhooks-v1",
    ),
    pytest.param(
        "standard-webhooks",
        "whpk_O2onvM62pC1io6jQKm8Nc2UyFXcd4kOmOsBIoYtZ2ik=",
        {
            "webhook-id": "msg_1",
            "webhook-timestamp": "1700000000",
            "webhook-signature": "v1a,TUpzhgqdDKsXnGswww0XjGi7k5w3mH1XbdHRTPU6W0Ox3Xyse9lmDiHiZz8c"
            "aBJGPJVIShE1I6hHEiCVKhsjDg==",
        },
        id="standard-webhooks-v1a",
    ),
    pytest.param(
        "slack",
        "slack_secret",
        {
            "X-Slack-Signature": "v0="
            "e2bcb0dc9c9ddd1820d456b99ec5c76456ff80e9473e286d92bb96a8a6191ac0",
            "X-Slack-Request-Timestamp": "1700000000",
        },
        id="slack",
    ),
    pytest.param(
        "github",
        "gh_secret",
        {
            "X-Hub-Signature-256": "sha256="
            "ed64174c38b0f8211933e167a571230db5e5981fe39326e3ebb728a124710843"
        },
        id="github",
    ),
    pytest.param(
        "shopify",
        "shpss_secret",
        {"X-Shopify-Hmac-Sha256": "izSFvyuW2HLHGZbCb90HdYq8AdUgyHeb6uWxu/G1gSY="},
        id="shopify",
    ),
    pytest.param(
        "paddle",
        "pdl_secret",
        {
            "Paddle-Signature": "ts=1700000000;"
            "h1=46763333d0835a7a19b990a2468b129375f27f0f137d9407ca0409c8b5e02232"
        },
        id="paddle",
    ),
    pytest.param(
        "zoom",
        "zoom_secret",
        {
            "x-zm-signature": "v0=3be376e05d264ebc89bdcb6e6eb37c08f58aa90aac23b1156b9b9e04f863d526",
            "x-zm-request-timestamp": "1700000000",
        },
        id="zoom",
    ),
    pytest.param(
        "intercom",
        "ic_secret",
        {"X-Hub-Signature": "sha1=f9bc463d0f24ee7fda21307b793db314892a5cad"},
        id="intercom",
    ),
    pytest.param(
        "discord",
        "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c",
        {
            "X-Signature-Ed25519": "6b8ee0c3aa584b8c567b41566dfce316c5409505a900f902"
            "558d8d922af8516d881dc375b079d2437738adefaf7eceacbda5ef055807bf1a1d114dc0"
            "a0e16101",
            "X-Signature-Timestamp": "1700000000",
        },
        id="discord",
    ),
]


@pytest.mark.parametrize(("scheme", "secret", "headers"), VECTORS)
def test_vector_verifies(kit, scheme, secret, headers):
    verifier = kit.build(scheme, [secret])
    verifier.verify(kit.request(headers, BODY), now_s=TS)


# Asymmetric vectors verify with a public key: the receiver cannot sign those.
SYMMETRIC_VECTORS = [v for v in VECTORS if v.id not in {"standard-webhooks-v1a", "discord"}]


@pytest.mark.parametrize(("scheme", "secret", "headers"), SYMMETRIC_VECTORS)
def test_sign_reproduces_vector(kit, scheme, secret, headers):
    verifier = kit.build(scheme, [secret])
    assert isinstance(verifier, Signer)
    event_id = headers.get("webhook-id", "evt_1")
    signed = verifier.sign(Unsigned(body=BODY, now_s=TS, event_id=event_id, url=kit.URL))
    lowered = {k.lower(): v for k, v in signed.items()}
    for name, value in headers.items():
        assert lowered[name.lower()] == value


def test_v1a_whsk_secret_signs_the_vector(kit):
    verifier = kit.build("standard-webhooks", ["whsk_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="])
    assert isinstance(verifier, Signer)
    signed = verifier.sign(Unsigned(body=BODY, now_s=TS, event_id="msg_1", url=kit.URL))
    assert signed["webhook-signature"] == (
        "v1a,TUpzhgqdDKsXnGswww0XjGi7k5w3mH1XbdHRTPU6W0Ox3Xyse9lmDiHiZz8caBJGPJVIShE1I6hHEiCVKhsjDg=="
    )


def test_square_vector(kit):
    verifier = kit.build("square", ["sq_key"], public_url="https://example.com/hook")
    headers = {"x-square-hmacsha256-signature": "QhLGdmqaCJqjceAuTweSasqLC0qdVS3I8ztj48kEMpU="}
    verifier.verify(kit.request(headers, BODY), now_s=TS)
    assert isinstance(verifier, Signer)
    assert (
        verifier.sign(Unsigned(body=BODY, now_s=TS, event_id="e", url="https://other.test/"))
        == headers
    )


def test_linear_vector(kit):
    verifier = kit.build("linear", ["lin_secret"])
    assert isinstance(verifier, Signer)
    signed = verifier.sign(Unsigned(body=BODY, now_s=TS, event_id="d-1", url=kit.URL))
    expected = "aae6a2fdb4e1f3fc95add87058eea7ba73a76226d3f308057bd74501c600b4a6"
    assert signed["Linear-Signature"] == expected


def test_mailgun_vector(kit):
    body = json.dumps(
        {
            "signature": {
                "timestamp": str(TS),
                "token": MG_TOKEN,
                "signature": "2b4a3c5991b2bc0548d11d133594bb94048c181a1a3a187ca1770efb30f88b78",
            },
            "event-data": {"id": "mg-1"},
        }
    ).encode()
    kit.build("mailgun", ["mg_key"]).verify(kit.request({}, body), now_s=TS)


def test_twilio_documented_example(kit):
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    params = {
        "CallSid": "CA1234567890ABCDE",
        "Caller": "+12349013030",
        "Digits": "1234",
        "From": "+12349013030",
        "To": "+18005551212",
    }
    body = urlencode(params).encode()
    headers = {"X-Twilio-Signature": "0/KCTR6DLpKmkAf8muzZqo1nDgQ="}
    kit.build("twilio", ["12345"]).verify(kit.request(headers, body, url=url), now_s=TS)
    verifier = kit.build("twilio", ["12345"], public_url=url)
    verifier.verify(kit.request(headers, body, url="http://127.0.0.1:8080/x"), now_s=TS)
    assert isinstance(verifier, Signer)
    assert verifier.sign(Unsigned(body=body, now_s=TS, event_id="e", url=url)) == headers
