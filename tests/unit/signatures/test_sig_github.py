"""GitHub and the other X-Hub-Signature senders (Intercom, Bitbucket, Jira)."""

from __future__ import annotations

import pytest

from receiver.errors import InvalidSignature, MissingSignature
from receiver.keys import Document, parse_source
from receiver.signatures.base import Signer, Unsigned
from receiver.signatures.registry import get_scheme


def test_legacy_sha1_header_alone_is_not_accepted(kit):
    headers = {"X-Hub-Signature": "sha1=" + kit.hmac_hex(kit.PLAIN[0], kit.BODY, "sha1")}
    with pytest.raises(MissingSignature):
        kit.build("github", [kit.PLAIN[0]]).verify(kit.request(headers), now_s=kit.NOW)


def test_sha1_value_in_the_sha256_header_is_invalid(kit):
    headers = {"X-Hub-Signature-256": "sha1=" + kit.hmac_hex(kit.PLAIN[0], kit.BODY, "sha1")}
    with pytest.raises(InvalidSignature):
        kit.build("github", [kit.PLAIN[0]]).verify(kit.request(headers), now_s=kit.NOW)


def test_uppercase_hex_is_accepted(kit):
    headers = {"X-Hub-Signature-256": "sha256=" + kit.hmac_hex(kit.PLAIN[0], kit.BODY).upper()}
    kit.build("github", [kit.PLAIN[0]]).verify(kit.request(headers), now_s=kit.NOW)


def test_event_id_is_scoped_by_hook_id(kit):
    scheme = get_scheme("github")
    assert scheme is not None and scheme.event_id is not None
    source = parse_source(scheme.event_id)
    request = kit.request({"X-GitHub-Delivery": "guid-1", "X-GitHub-Hook-ID": "42"})
    assert source.extract(Document(request)) == "42:guid-1"
    assert source.extract(Document(kit.request({"X-GitHub-Delivery": "guid-1"}))) == ":guid-1"
    assert source.extract(Document(kit.request({"X-GitHub-Hook-ID": "42"}))) is None


@pytest.mark.parametrize(
    ("scheme", "id_header"),
    [
        ("github", "X-GitHub-Delivery"),
        ("bitbucket", "X-Request-UUID"),
        ("jira", "X-Atlassian-Webhook-Identifier"),
        ("intercom", None),
    ],
)
def test_sign_output_verifies_and_carries_the_delivery_id(kit, scheme, id_header):
    verifier = kit.build(scheme, [kit.PLAIN[0]])
    assert isinstance(verifier, Signer)
    headers = verifier.sign(Unsigned(body=kit.BODY, now_s=kit.NOW, event_id="d-1", url=kit.URL))
    verifier.verify(kit.request(headers), now_s=kit.NOW)
    if id_header:
        assert headers[id_header] == "d-1"


def test_bitbucket_uses_sha256_in_x_hub_signature_and_intercom_sha1(kit):
    sha1 = {"X-Hub-Signature": "sha1=" + kit.hmac_hex(kit.PLAIN[0], kit.BODY, "sha1")}
    sha256 = {"X-Hub-Signature": "sha256=" + kit.hmac_hex(kit.PLAIN[0], kit.BODY)}
    kit.build("intercom", [kit.PLAIN[0]]).verify(kit.request(sha1), now_s=kit.NOW)
    kit.build("bitbucket", [kit.PLAIN[0]]).verify(kit.request(sha256), now_s=kit.NOW)
    with pytest.raises(InvalidSignature):
        kit.build("bitbucket", [kit.PLAIN[0]]).verify(kit.request(sha1), now_s=kit.NOW)
