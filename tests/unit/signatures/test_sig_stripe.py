"""Stripe, with the ``stripe`` SDK as the oracle."""

from __future__ import annotations

import time

import pytest
import stripe

from receiver.errors import InvalidSignature
from receiver.signatures.base import Signer, Unsigned


def _header(kit, secret, ts, body=None):
    payload = (body or kit.BODY).decode()
    return stripe.WebhookSignature.generate_signature_header(payload, secret, timestamp=ts)


def test_roll_header_with_two_v1_entries_passes_for_either_secret(kit):
    a, b = kit.STRIPE_SECRETS
    sig_a = _header(kit, a, kit.NOW).split(",v1=")[1]
    sig_b = _header(kit, b, kit.NOW).split(",v1=")[1]
    header = f"t={kit.NOW},v1={sig_a},v1={sig_b}"
    for secret in (a, b):
        verifier = kit.build("stripe", [secret])
        verifier.verify(kit.request({"Stripe-Signature": header}), now_s=kit.NOW)


def test_only_v1_entries_count(kit):
    valid = _header(kit, kit.STRIPE_SECRETS[0], kit.NOW).split(",v1=")[1]
    header = f"t={kit.NOW},v0={valid},v1={'0' * 64}"
    with pytest.raises(InvalidSignature):
        kit.build("stripe", [kit.STRIPE_SECRETS[0]]).verify(
            kit.request({"Stripe-Signature": header}), now_s=kit.NOW
        )


def test_key_is_the_whole_whsec_string_not_its_base64(kit):
    header = _header(kit, kit.STRIPE_SECRETS[0], kit.NOW)
    verifier = kit.build("stripe", [kit.STRIPE_SECRETS[0].removeprefix("whsec_")])
    with pytest.raises(InvalidSignature):
        verifier.verify(kit.request({"Stripe-Signature": header}), now_s=kit.NOW)


def test_future_timestamp_is_refused_unlike_the_sdk(kit):
    from receiver.errors import TimestampOutOfTolerance

    header = _header(kit, kit.STRIPE_SECRETS[0], kit.NOW + 3600)
    with pytest.raises(TimestampOutOfTolerance):
        kit.build("stripe", [kit.STRIPE_SECRETS[0]]).verify(
            kit.request({"Stripe-Signature": header}), now_s=kit.NOW
        )


@pytest.mark.parametrize("header", ["v1=00", "t=1700000000", "t=1700000000,v1", "t1700000000v1"])
def test_incomplete_headers_are_invalid(kit, header):
    with pytest.raises(InvalidSignature):
        kit.build("stripe", [kit.STRIPE_SECRETS[0]]).verify(
            kit.request({"Stripe-Signature": header}), now_s=kit.NOW
        )


def test_our_signature_passes_the_sdk(kit):
    verifier = kit.build("stripe", [kit.STRIPE_SECRETS[0]])
    assert isinstance(verifier, Signer)
    now = time.time()
    headers = verifier.sign(Unsigned(body=kit.BODY, now_s=now, event_id="evt_1", url=kit.URL))
    assert set(headers) == {"Stripe-Signature"}
    assert stripe.WebhookSignature.verify_header(
        kit.BODY.decode(), headers["Stripe-Signature"], kit.STRIPE_SECRETS[0], tolerance=300
    )
    event = stripe.Webhook.construct_event(
        kit.BODY.decode(), headers["Stripe-Signature"], kit.STRIPE_SECRETS[0]
    )
    assert event["id"] == "evt_1"
