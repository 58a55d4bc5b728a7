"""Standard Webhooks (v1 and v1a) and the Svix senders, with the SDKs as oracles."""

from __future__ import annotations

import base64
import time

import pytest
import standardwebhooks
import svix.webhooks

from receiver.errors import InvalidSignature
from receiver.signatures.base import Signer, Unsigned


def _std_headers(kit, secret, ts, body=None, msg_id="msg_1"):
    sig = standardwebhooks.Webhook(secret).sign(msg_id, kit.utc(ts), (body or kit.BODY).decode())
    return {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": sig}


def _v1a_entry(kit, index, ts, msg_id="msg_1"):
    content = f"{msg_id}.{ts}.".encode() + kit.BODY
    return (
        "v1a," + base64.b64encode(kit.ed25519_signing_key(index).sign(content).signature).decode()
    )


def test_multi_signature_header_with_one_valid_entry_passes(kit):
    headers = _std_headers(kit, kit.WHSEC[0], kit.NOW)
    bogus = "v1," + base64.b64encode(b"\0" * 32).decode()
    headers["webhook-signature"] = f"{bogus} v2,abc {headers['webhook-signature']}"
    kit.build("standard-webhooks", [kit.WHSEC[0]]).verify(kit.request(headers), now_s=kit.NOW)


@pytest.mark.parametrize("good_first", [True, False])
def test_a_signature_header_sent_twice_passes_whichever_copy_is_good(kit, good_first):
    """HTTP joins a repeated header with ", ": each copy's entries still count."""
    headers = _std_headers(kit, kit.WHSEC[0], kit.NOW)
    bogus = "v1," + base64.b64encode(b"\0" * 32).decode()
    good = headers["webhook-signature"]
    headers["webhook-signature"] = f"{good}, {bogus}" if good_first else f"{bogus}, {good}"
    kit.build("standard-webhooks", [kit.WHSEC[0]]).verify(kit.request(headers), now_s=kit.NOW)


def test_mixed_v1_and_v1a_keys_accept_either_kind(kit):
    verifier = kit.build("standard-webhooks", [kit.WHSEC[0], kit.whpk(0)])
    verifier.verify(kit.request(_std_headers(kit, kit.WHSEC[0], kit.NOW)), now_s=kit.NOW)
    headers = _std_headers(kit, kit.WHSEC[1], kit.NOW)
    headers["webhook-signature"] = _v1a_entry(kit, 0, kit.NOW)
    verifier.verify(kit.request(headers), now_s=kit.NOW)


def test_more_v1a_signatures_than_keys_rotate_through_are_refused_unchecked(kit):
    """Each v1a entry is checked by hashing the whole body again (about 8 ms for 1 MB); 32 of
    them cost a quarter of a second of the event loop per unsigned request."""
    verifier = kit.build("standard-webhooks", [kit.whpk(0)])
    good = _v1a_entry(kit, 0, kit.NOW)
    others = [_v1a_entry(kit, 1, kit.NOW, msg_id=f"msg_{n}") for n in range(2, 6)]
    headers = _std_headers(kit, kit.WHSEC[0], kit.NOW)
    headers["webhook-signature"] = " ".join([*others[:3], good])  # a rotation: passes
    verifier.verify(kit.request(headers), now_s=kit.NOW)
    headers["webhook-signature"] = " ".join([*others, good, good])  # the same one twice: once
    with pytest.raises(InvalidSignature, match="more than 4 v1a signatures"):
        verifier.verify(kit.request(headers), now_s=kit.NOW)
    headers["webhook-signature"] = " ".join([*others[:3], good, good])
    verifier.verify(kit.request(headers), now_s=kit.NOW)


def test_a_v1_signature_does_not_satisfy_a_public_key(kit):
    verifier = kit.build("standard-webhooks", [kit.whpk(0)])
    with pytest.raises(InvalidSignature):
        verifier.verify(kit.request(_std_headers(kit, kit.WHSEC[0], kit.NOW)), now_s=kit.NOW)


def test_v1a_entry_labelled_v1_is_refused(kit):
    headers = _std_headers(kit, kit.WHSEC[0], kit.NOW)
    headers["webhook-signature"] = _v1a_entry(kit, 0, kit.NOW).replace("v1a,", "v1,")
    with pytest.raises(InvalidSignature):
        kit.build("standard-webhooks", [kit.whpk(0)]).verify(kit.request(headers), now_s=kit.NOW)


def test_unprefixed_base64_secret_is_accepted_like_the_sdk(kit):
    bare = kit.WHSEC[0].removeprefix("whsec_")
    headers = _std_headers(kit, kit.WHSEC[0], kit.NOW)
    kit.build("standard-webhooks", [bare]).verify(kit.request(headers), now_s=kit.NOW)


def test_public_key_only_verifier_cannot_sign(kit):
    verifier = kit.build("standard-webhooks", [kit.whpk(0)])
    assert not isinstance(verifier, Signer)


@pytest.mark.parametrize(
    ("secret", "problem"),
    [
        ("whsec_not*base64!", r"not base64 \(after its whsec_ prefix"),
        ("whsec_", "empty"),
        ("whpk_" + base64.b64encode(b"short").decode(), "32 bytes"),
        ("whpk_%%%%", "not base64"),
        ("whsk_" + base64.b64encode(b"x" * 31).decode(), "32 bytes"),
    ],
)
def test_bad_secrets_fail_at_build_without_quoting_the_secret(kit, secret, problem):
    with pytest.raises(ValueError, match=problem) as info:
        kit.build("standard-webhooks", [secret])
    assert secret.split("_", 1)[1] not in str(info.value) or not secret.split("_", 1)[1]


def test_no_secret_fails_at_build(kit):
    with pytest.raises(ValueError, match="secret"):
        kit.build("standard-webhooks", [])


def test_our_signature_passes_standardwebhooks(kit):
    verifier = kit.build("standard-webhooks", [kit.WHSEC[0]])
    assert isinstance(verifier, Signer)
    headers = verifier.sign(
        Unsigned(body=kit.BODY, now_s=time.time(), event_id="msg_9", url=kit.URL)
    )
    assert standardwebhooks.Webhook(kit.WHSEC[0]).verify(kit.BODY, headers) == {
        "id": "evt_1",
        "type": "demo",
    }


@pytest.mark.parametrize("scheme", ["svix", "clerk", "resend"])
def test_our_signature_passes_svix(kit, scheme):
    verifier = kit.build(scheme, [kit.WHSEC[1]])
    assert isinstance(verifier, Signer)
    headers = verifier.sign(
        Unsigned(body=kit.BODY, now_s=time.time(), event_id="msg_9", url=kit.URL)
    )
    assert set(headers) == {"svix-id", "svix-timestamp", "svix-signature"}
    svix.webhooks.Webhook(kit.WHSEC[1]).verify(kit.BODY, headers)


def test_svix_schemes_do_not_read_webhook_headers(kit):
    headers = _std_headers(kit, kit.WHSEC[0], kit.NOW)
    from receiver.errors import MissingSignature

    with pytest.raises(MissingSignature):
        kit.build("svix", [kit.WHSEC[0]]).verify(kit.request(headers), now_s=kit.NOW)
