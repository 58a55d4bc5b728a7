"""Paddle Billing, with ``paddle_billing`` as the oracle."""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest
from paddle_billing.Notifications import PaddleSignature, Secret, Verifier

from receiver.errors import TimestampOutOfTolerance
from receiver.signatures.base import Signer, Unsigned


@dataclass
class PaddleRequest:
    headers: dict[str, str]
    body: bytes


def test_our_signature_passes_the_sdk_verifier(kit):
    verifier = kit.build("paddle", [kit.PLAIN[0]])
    assert isinstance(verifier, Signer)
    headers = verifier.sign(
        Unsigned(body=kit.BODY, now_s=time.time(), event_id="evt_1", url=kit.URL)
    )
    assert Verifier().verify(PaddleRequest(headers, kit.BODY), Secret(kit.PLAIN[0]))
    assert PaddleSignature().verify(
        headers["Paddle-Signature"], kit.BODY.decode(), [Secret(kit.PLAIN[1]), Secret(kit.PLAIN[0])]
    )


def test_several_h1_entries_one_valid(kit):
    digest = PaddleSignature.calculate_hmac(
        kit.PLAIN[0], f"{kit.NOW}:".encode() + kit.BODY
    ).hexdigest()
    header = f"ts={kit.NOW};h1={'ab' * 32};h1={digest}"
    kit.build("paddle", [kit.PLAIN[0]]).verify(
        kit.request({"Paddle-Signature": header}), now_s=kit.NOW
    )


def test_default_window_is_five_seconds_both_ways(kit):
    case = next(c for c in kit.cases if c.scheme == "paddle")
    verifier = case.build(0)
    verifier.verify(case.request(0, ts=kit.NOW - 5), now_s=kit.NOW)
    verifier.verify(case.request(0, ts=kit.NOW + 5), now_s=kit.NOW)
    for ts in (kit.NOW - 6, kit.NOW + 6):
        with pytest.raises(TimestampOutOfTolerance):
            verifier.verify(case.request(0, ts=ts), now_s=kit.NOW)
