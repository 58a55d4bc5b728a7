"""Slack, with ``slack_sdk`` as the oracle, and the url_verification handshake."""

from __future__ import annotations

import json

from slack_sdk.signature import Clock, SignatureVerifier

from receiver.signatures.base import Handshaker, Signer, Unsigned


class FrozenClock(Clock):
    def __init__(self, now: float) -> None:
        self._now = now

    def now(self) -> float:
        return self._now


def test_our_signature_passes_slack_sdk(kit):
    verifier = kit.build("slack", [kit.PLAIN[0]])
    assert isinstance(verifier, Signer)
    headers = verifier.sign(Unsigned(body=kit.BODY, now_s=kit.NOW, event_id="Ev1", url=kit.URL))
    oracle = SignatureVerifier(kit.PLAIN[0], clock=FrozenClock(kit.NOW))
    assert oracle.is_valid(
        kit.BODY, headers["X-Slack-Request-Timestamp"], headers["X-Slack-Signature"]
    )


def test_form_encoded_slash_command_body_is_signed_raw(kit):
    body = b"token=x&team_id=T1&command=%2Fweather&text=94070"
    signature = SignatureVerifier(kit.PLAIN[0]).generate_signature(
        timestamp=str(kit.NOW), body=body
    )
    headers = {"X-Slack-Signature": signature, "X-Slack-Request-Timestamp": str(kit.NOW)}
    kit.build("slack", [kit.PLAIN[0]]).verify(kit.request(headers, body), now_s=kit.NOW)


def test_url_verification_is_answered_with_the_challenge(kit):
    verifier = kit.build("slack", [kit.PLAIN[0]])
    assert isinstance(verifier, Handshaker)
    document = {
        "token": "x",
        "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
        "type": "url_verification",
    }
    body = json.dumps(document).encode()
    reply = verifier.handshake(kit.request({}, body), document)
    assert reply is not None
    assert reply.status == 200
    assert reply.content_type == "application/json"
    assert json.loads(reply.body) == {"challenge": document["challenge"]}


def test_ordinary_events_get_no_handshake(kit):
    verifier = kit.build("slack", [kit.PLAIN[0]])
    assert isinstance(verifier, Handshaker)
    for document in (
        {"type": "event_callback", "event_id": "Ev1"},
        None,
        [1],
        {"type": "url_verification"},
    ):
        assert verifier.handshake(kit.request(), document) is None
