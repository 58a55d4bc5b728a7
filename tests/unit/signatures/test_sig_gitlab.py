"""GitLab: the plain X-Gitlab-Token, and Standard Webhooks signing with a whsec_ token."""

from __future__ import annotations

import time

import pytest
import standardwebhooks
from pydantic import ValidationError

from receiver.errors import InvalidSignature, MissingSignature
from receiver.signatures.base import Signer, Unsigned


def _signed_headers(kit, secret, ts, msg_id="idem-1"):
    sig = standardwebhooks.Webhook(secret).sign(msg_id, kit.utc(ts), kit.BODY.decode())
    return {
        "Idempotency-Key": msg_id,
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": sig,
    }


def test_token_and_signing_token_together(kit):
    verifier = kit.build("gitlab", [kit.PLAIN[0], kit.WHSEC[0]])
    verifier.verify(kit.request({"X-Gitlab-Token": kit.PLAIN[0]}), now_s=kit.NOW)
    verifier.verify(kit.request(_signed_headers(kit, kit.WHSEC[0], kit.NOW)), now_s=kit.NOW)


def test_a_present_signature_must_hold_even_with_a_valid_token(kit):
    headers = _signed_headers(kit, kit.WHSEC[1], kit.NOW)
    headers["X-Gitlab-Token"] = kit.PLAIN[0]
    with pytest.raises(InvalidSignature):
        kit.build("gitlab", [kit.PLAIN[0], kit.WHSEC[0]]).verify(
            kit.request(headers), now_s=kit.NOW
        )


def test_signing_token_only_requires_the_signature(kit):
    with pytest.raises(MissingSignature):
        kit.build("gitlab", [kit.WHSEC[0]]).verify(
            kit.request({"X-Gitlab-Token": kit.WHSEC[0]}), now_s=kit.NOW
        )


def test_require_signature_option(kit):
    verifier = kit.build(
        "gitlab", [kit.PLAIN[0], kit.WHSEC[0]], options={"require_signature": True}
    )
    with pytest.raises(MissingSignature):
        verifier.verify(kit.request({"X-Gitlab-Token": kit.PLAIN[0]}), now_s=kit.NOW)
    verifier.verify(kit.request(_signed_headers(kit, kit.WHSEC[0], kit.NOW)), now_s=kit.NOW)
    with pytest.raises(ValueError, match="whsec_"):
        kit.build("gitlab", [kit.PLAIN[0]], options={"require_signature": True})
    with pytest.raises(ValidationError):
        kit.build("gitlab", [kit.PLAIN[0]], options={"mode": "token"})


def test_token_compare_is_exact(kit):
    verifier = kit.build("gitlab", [kit.PLAIN[0]])
    for token in (kit.PLAIN[0] + "x", kit.PLAIN[0][:-1], kit.PLAIN[0].upper()):
        with pytest.raises(InvalidSignature):
            verifier.verify(kit.request({"X-Gitlab-Token": token}), now_s=kit.NOW)


def test_sign_output(kit):
    verifier = kit.build("gitlab", [kit.WHSEC[0], kit.PLAIN[0]])
    assert isinstance(verifier, Signer)
    headers = verifier.sign(
        Unsigned(body=kit.BODY, now_s=time.time(), event_id="idem-7", url=kit.URL)
    )
    assert headers["Idempotency-Key"] == headers["webhook-id"] == "idem-7"
    assert headers["X-Gitlab-Token"] == kit.PLAIN[0]
    standardwebhooks.Webhook(kit.WHSEC[0]).verify(kit.BODY, headers)
