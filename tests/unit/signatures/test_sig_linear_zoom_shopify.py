"""Linear (timestamp in the body), Zoom (URL validation) and Shopify (event id choice)."""

from __future__ import annotations

import json

import pytest

from receiver.errors import InvalidSignature, TimestampOutOfTolerance
from receiver.keys import Document, parse_source
from receiver.signatures.base import Handshaker
from receiver.signatures.registry import get_scheme


def _linear_request(kit, body):
    return kit.request({"Linear-Signature": kit.hmac_hex(kit.PLAIN[0], body)}, body)


@pytest.mark.parametrize(
    "body",
    [
        b'{"type":"Issue"}',
        b'{"webhookTimestamp":"soon"}',
        b'{"webhookTimestamp":1.5e12}',
        b'{"webhookTimestamp":true}',
        b"[]",
        b"\xff",
    ],
)
def test_linear_needs_a_signed_millisecond_timestamp(kit, body):
    with pytest.raises(InvalidSignature):
        kit.build("linear", [kit.PLAIN[0]]).verify(_linear_request(kit, body), now_s=kit.NOW)


def test_linear_window_is_60_seconds_in_milliseconds(kit):
    verifier = kit.build("linear", [kit.PLAIN[0]])
    now_ms = kit.NOW * 1000
    verifier.verify(_linear_request(kit, kit.linear_body(now_ms + 59_999)), now_s=kit.NOW)
    with pytest.raises(TimestampOutOfTolerance):
        verifier.verify(_linear_request(kit, kit.linear_body(now_ms - 60_001)), now_s=kit.NOW)


def _zoom_validation(kit, index):
    document = {
        "event": "endpoint.url_validation",
        "payload": {"plainToken": "qgg8vlvZRS6UYooatFL8Aw"},
        "event_ts": 1,
    }
    body = json.dumps(document).encode()
    case = next(c for c in kit.cases if c.scheme == "zoom")
    return case.sign(index, body, kit.NOW), document


def test_zoom_url_validation_uses_the_secret_that_signed_it(kit):
    verifier = kit.build("zoom", [kit.PLAIN[0], kit.PLAIN[1]])
    assert isinstance(verifier, Handshaker)
    for index in (0, 1):
        signed, document = _zoom_validation(kit, index)
        request = kit.request(signed.headers, signed.body)
        verifier.verify(request, now_s=kit.NOW)
        reply = verifier.handshake(request, document)
        assert reply is not None and reply.status == 200
        plain = "qgg8vlvZRS6UYooatFL8Aw"
        assert json.loads(reply.body) == {
            "plainToken": plain,
            "encryptedToken": kit.hmac_hex(kit.PLAIN[index], plain.encode()),
        }


def test_zoom_ordinary_event_gets_no_handshake(kit):
    verifier = kit.build("zoom", [kit.PLAIN[0]])
    assert isinstance(verifier, Handshaker)
    for document in ({"event": "meeting.started"}, {"event": "endpoint.url_validation"}, None):
        assert verifier.handshake(kit.request(), document) is None


def test_shopify_event_id_is_the_event_id_scoped_by_shop_and_topic(kit):
    scheme = get_scheme("shopify")
    assert scheme is not None and scheme.event_id is not None
    source = parse_source(scheme.event_id)
    headers = {
        "X-Shopify-Shop-Domain": "shop.myshopify.com",
        "X-Shopify-Topic": "orders/create",
        "X-Shopify-Event-Id": "98880550-7158-44d4-b7cd-2c97c8a091b5",
        "X-Shopify-Webhook-Id": "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043",
    }
    assert source.extract(Document(kit.request(headers))) == (
        "shop.myshopify.com:orders/create:98880550-7158-44d4-b7cd-2c97c8a091b5"
    )
    retry = {**headers, "X-Shopify-Webhook-Id": "another-delivery"}
    assert source.extract(Document(kit.request(retry))) == source.extract(
        Document(kit.request(headers))
    )
