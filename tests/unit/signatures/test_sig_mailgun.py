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


def test_a_token_seen_before_passes_again_only_with_the_same_body(kit):
    """The signature covers timestamp and token, not the body: without remembering tokens, one
    captured signature would carry any forged event for its 900 s."""
    verifier = kit.build("mailgun", [kit.PLAIN[0]])
    original = kit.mailgun_body(kit.PLAIN[0], kit.NOW, event={"id": "ev1", "event": "delivered"})
    verifier.verify(kit.request({}, original), now_s=kit.NOW)
    verifier.verify(kit.request({}, original), now_s=kit.NOW + 5)  # the same request again
    forged = json.loads(original)
    forged["event-data"] = {"id": "FORGED", "event": "complained"}
    with pytest.raises(InvalidSignature, match="replay"):
        verifier.verify(kit.request({}, json.dumps(forged).encode()), now_s=kit.NOW + 10)
    fresh = kit.mailgun_body(kit.PLAIN[0], kit.NOW, token="u" * 50, event={"id": "ev2"})
    verifier.verify(kit.request({}, fresh), now_s=kit.NOW + 10)  # a new token is a new delivery


def test_a_token_shifted_into_the_timestamp_is_the_same_signature(kit):
    """The signed content is ``timestamp + token``: the timestamp's last digit moved to the
    token's front signs the same, and a memory of tokens took it for a new delivery. With the
    window off (``tolerance_s: 0``) that let one captured signature carry any body."""
    verifier = kit.build("mailgun", [kit.PLAIN[0]], tolerance_s=0)
    original = kit.mailgun_body(kit.PLAIN[0], kit.NOW, event={"id": "ev1", "event": "delivered"})
    verifier.verify(kit.request({}, original), now_s=kit.NOW)
    forged = json.loads(original)
    timestamp, token = str(forged["signature"]["timestamp"]), forged["signature"]["token"]
    forged["signature"]["timestamp"], forged["signature"]["token"] = (
        timestamp[:-1],
        timestamp[-1] + token,
    )
    forged["event-data"] = {"id": "FORGED", "event": "complained"}
    with pytest.raises(InvalidSignature, match="replay"):
        verifier.verify(kit.request({}, json.dumps(forged).encode()), now_s=kit.NOW + 10)


def test_the_token_memory_is_bounded_and_forgets_what_the_window_refuses_anyway():
    from receiver.signatures.mailgun import UsedTokens

    tokens = UsedTokens(keep_s=900, max_tokens=3)
    assert tokens.admits("a", b"1", now_s=0)
    assert not tokens.admits("a", b"2", now_s=1)
    for name in ("b", "c", "d"):  # a fourth token pushes the oldest out
        assert tokens.admits(name, b"1", now_s=2)
    assert tokens.admits("a", b"2", now_s=3)
    assert not tokens.admits("d", b"2", now_s=1799)  # still within twice the window
    assert tokens.admits("d", b"2", now_s=1803)  # past it: its timestamp could not pass
