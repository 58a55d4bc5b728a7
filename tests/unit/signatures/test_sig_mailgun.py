"""Mailgun: the signature is in the body; ``SecurityGuard.verify_webhook`` is the oracle."""

from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest
from mailgun.security import SecurityGuard

from receiver.errors import InvalidSignature, MissingSignature
from receiver.signatures.base import Signer
from receiver.signatures.registry import get_scheme


def test_oracle_and_receiver_agree(kit):
    body = kit.mailgun_body(kit.PLAIN[0], kit.NOW)
    sig = json.loads(body)["signature"]
    assert SecurityGuard.verify_webhook(
        kit.PLAIN[0], sig["token"], sig["timestamp"], sig["signature"], max_age_seconds=0
    )
    kit.build("mailgun", [kit.PLAIN[0]]).verify(kit.request({}, body), now_s=kit.NOW)


def test_legacy_form_body(kit):
    token = "abc" * 10
    signature = kit.hmac_hex(kit.PLAIN[0], f"{kit.NOW}{token}".encode())
    body = urlencode({"timestamp": kit.NOW, "token": token, "signature": signature}).encode()
    kit.build("mailgun", [kit.PLAIN[0]]).verify(kit.request({}, body), now_s=kit.NOW)


def test_integer_timestamp_in_json(kit):
    body = json.loads(kit.mailgun_body(kit.PLAIN[0], kit.NOW))
    body["signature"]["timestamp"] = kit.NOW
    kit.build("mailgun", [kit.PLAIN[0]]).verify(
        kit.request({}, json.dumps(body).encode()), now_s=kit.NOW
    )


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[1, 2]",
        b'{"signature": "x"}',
        b'{"signature": {"timestamp": "1", "token": "t"}}',
        b'{"signature": {"timestamp": "1", "token": "", "signature": "00"}}',
        b'{"signature": {"timestamp": true, "token": "t", "signature": "00"}}',
        b"\xff\xfe",
    ],
)
def test_missing_signature_fields(kit, body):
    with pytest.raises(MissingSignature):
        kit.build("mailgun", [kit.PLAIN[0]]).verify(kit.request({}, body), now_s=kit.NOW)


@pytest.mark.parametrize("signature", ["zz", "abc", "0" * 64])
def test_bad_signature_values(kit, signature):
    body = json.loads(kit.mailgun_body(kit.PLAIN[0], kit.NOW))
    body["signature"]["signature"] = signature
    with pytest.raises(InvalidSignature):
        kit.build("mailgun", [kit.PLAIN[0]]).verify(
            kit.request({}, json.dumps(body).encode()), now_s=kit.NOW
        )


def test_no_sign_and_docs_say_why(kit):
    assert not isinstance(kit.build("mailgun", [kit.PLAIN[0]]), Signer)
    scheme = get_scheme("mailgun")
    assert scheme is not None and "body" in scheme.docs["signing"]
