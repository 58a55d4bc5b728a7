"""SendGrid Event Webhook: ECDSA P-256, with ``EventWebhook`` as the oracle."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from sendgrid.helpers.eventwebhook import EventWebhook
from sendgrid.helpers.eventwebhook.eventwebhook_header import EventWebhookHeader

from receiver.signatures.base import Signer
from receiver.signatures.registry import get_scheme

BATCH = b'[{"email":"a@example.test","event":"delivered","sg_event_id":"e1"}]\r\n'


def _signed(kit, body=BATCH):
    case = next(c for c in kit.cases if c.scheme == "sendgrid")
    return case.sign(0, body, kit.NOW)


def test_oracle_and_receiver_agree(kit):
    signed = _signed(kit)
    signature = signed.headers[EventWebhookHeader.SIGNATURE]
    timestamp = signed.headers[EventWebhookHeader.TIMESTAMP]
    oracle = EventWebhook(kit.sendgrid_public_key(0))
    assert oracle.verify_signature(BATCH.decode(), signature, timestamp)
    kit.build("sendgrid", [kit.sendgrid_public_key(0)]).verify(
        kit.request(signed.headers, BATCH), now_s=kit.NOW
    )


def test_pem_public_key_is_accepted(kit):
    pem = (
        kit.p256_private_key(0)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    signed = _signed(kit)
    kit.build("sendgrid", [pem]).verify(kit.request(signed.headers, BATCH), now_s=kit.NOW)


def _der(key) -> str:
    raw = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(raw).decode()


@pytest.mark.parametrize(
    ("make_key", "problem"),
    [
        (lambda: "not base64 at all!", "base64 DER"),
        (lambda: base64.b64encode(b"garbage").decode(), "base64 DER"),
        (lambda: _der(ec.generate_private_key(ec.SECP384R1()).public_key()), "P-256"),
        (lambda: _der(rsa.generate_private_key(65537, 2048).public_key()), "P-256"),
    ],
)
def test_bad_keys_fail_at_build(kit, make_key, problem):
    with pytest.raises(ValueError, match=problem):
        kit.build("sendgrid", [make_key()])


def test_batch_scheme_without_signer(kit):
    scheme = get_scheme("sendgrid")
    assert scheme is not None
    assert scheme.is_batch and scheme.event_id == "json:sg_event_id || body_sha256"
    assert not isinstance(kit.build("sendgrid", [kit.sendgrid_public_key(0)]), Signer)
    assert "private key" in scheme.docs["signing"]
