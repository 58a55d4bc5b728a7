"""Discord: Ed25519 with PyNaCl as the signer, and the two PING handshakes."""

from __future__ import annotations

import json

import pytest

from receiver.errors import InvalidSignature
from receiver.signatures.base import Handshaker, Signer
from receiver.signatures.registry import get_scheme


def test_interaction_ping_gets_pong(kit):
    verifier = kit.build("discord", [kit.discord_public_key(0)])
    assert isinstance(verifier, Handshaker)
    reply = verifier.handshake(kit.request(), {"id": "1", "type": 1, "token": "t", "version": 1})
    assert reply is not None and reply.status == 200
    assert json.loads(reply.body) == {"type": 1}


def test_webhook_event_ping_gets_204_without_body(kit):
    verifier = kit.build("discord", [kit.discord_public_key(0)])
    assert isinstance(verifier, Handshaker)
    reply = verifier.handshake(kit.request(), {"version": 1, "application_id": "9", "type": 0})
    assert reply is not None
    assert (reply.status, reply.body) == (204, b"")


@pytest.mark.parametrize(
    "document",
    [
        {"version": 1, "application_id": "9", "type": 1, "event": {"type": "ENTITLEMENT_CREATE"}},
        {"id": "1", "type": 2, "token": "t"},
        {"type": True},
        None,
        "PING",
    ],
)
def test_other_deliveries_get_no_handshake(kit, document):
    verifier = kit.build("discord", [kit.discord_public_key(0)])
    assert isinstance(verifier, Handshaker)
    assert verifier.handshake(kit.request(), document) is None


def test_truncated_signature_is_invalid(kit):
    signature = kit.ed25519_signing_key(0).sign(str(kit.NOW).encode() + kit.BODY).signature
    headers = {"X-Signature-Ed25519": signature.hex()[:-2], "X-Signature-Timestamp": str(kit.NOW)}
    with pytest.raises(InvalidSignature):
        kit.build("discord", [kit.discord_public_key(0)]).verify(
            kit.request(headers), now_s=kit.NOW
        )


@pytest.mark.parametrize(("key", "problem"), [("zz" * 32, "hex"), ("ab" * 31, "32 bytes")])
def test_bad_public_key_fails_at_build(kit, key, problem):
    with pytest.raises(ValueError, match=problem) as info:
        kit.build("discord", [key])
    assert key not in str(info.value)


def test_receiver_cannot_sign_and_says_why(kit):
    assert not isinstance(kit.build("discord", [kit.discord_public_key(0)]), Signer)
    scheme = get_scheme("discord")
    assert scheme is not None and "private key" in scheme.docs["signing"]
