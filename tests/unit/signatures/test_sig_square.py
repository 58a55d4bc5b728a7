"""Square, with ``square.utils.webhooks_helper.verify_signature`` as the oracle."""

from __future__ import annotations

import pytest
from square.utils.webhooks_helper import verify_signature

from receiver.errors import InvalidSignature
from receiver.signatures.base import Signer, Unsigned

NOTIFY = "https://square.example.test/webhooks/square"


def test_our_signature_passes_the_sdk(kit):
    verifier = kit.build("square", [kit.PLAIN[0]], public_url=NOTIFY)
    assert isinstance(verifier, Signer)
    headers = verifier.sign(Unsigned(body=kit.BODY, now_s=kit.NOW, event_id="e", url=NOTIFY))
    assert verify_signature(
        request_body=kit.BODY.decode(),
        signature_header=headers["x-square-hmacsha256-signature"],
        signature_key=kit.PLAIN[0],
        notification_url=NOTIFY,
    )
    verifier.verify(
        kit.request(headers, url="http://127.0.0.1:8080/webhooks/square"), now_s=kit.NOW
    )


def test_options_notification_url_wins_over_public_url(kit):
    headers = {
        "x-square-hmacsha256-signature": kit.hmac_b64(kit.PLAIN[0], NOTIFY.encode() + kit.BODY)
    }
    verifier = kit.build(
        "square", [kit.PLAIN[0]], options={"notification_url": NOTIFY}, public_url=kit.URL
    )
    verifier.verify(kit.request(headers), now_s=kit.NOW)
    with pytest.raises(InvalidSignature):
        kit.build("square", [kit.PLAIN[0]], public_url=kit.URL).verify(
            kit.request(headers), now_s=kit.NOW
        )


def test_a_url_is_required(kit):
    with pytest.raises(ValueError, match="public_url"):
        kit.build("square", [kit.PLAIN[0]])


def test_unknown_option_is_refused(kit):
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        kit.build("square", [kit.PLAIN[0]], options={"url": NOTIFY})
