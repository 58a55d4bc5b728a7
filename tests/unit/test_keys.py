"""Value sources for event IDs, types and ordering keys."""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from receiver.keys import (
    Document,
    SourceSyntaxError,
    UnreadableJson,
    headers_read,
    json_array_items,
    parse_source,
    signed_url,
)
from receiver.models import InboundRequest


def _doc(body: bytes = b"", headers: dict[str, str] | None = None, **query: str) -> Document:
    request = InboundRequest(
        provider="p",
        method="POST",
        url="http://127.0.0.1/webhooks/p",
        headers=headers or {},
        body=body,
        query=query,
    )
    return Document(request)


@pytest.mark.parametrize(
    ("expr", "body", "headers", "expected"),
    [
        ("header:Webhook-Id", b"", {"webhook-id": "msg_1"}, "msg_1"),
        ("json:id", b'{"id": "evt_1"}', {}, "evt_1"),
        ("json:data.object.id", b'{"data": {"object": {"id": 7}}}', {}, "7"),
        ("json:items.1.id", b'{"items": [{"id": "a"}, {"id": "b"}]}', {}, "b"),
        ("form:MessageSid", b"MessageSid=SM1&Body=hi", {}, "SM1"),
        ("{header:x-hook?}:{header:x-delivery}", b"", {"x-delivery": "d1"}, ":d1"),
        ("{header:x-hook}:{json:id}", b'{"id": "e"}', {"x-hook": "h"}, "h:e"),
    ],
)
def test_sources_extract(expr: str, body: bytes, headers: dict[str, str], expected: str) -> None:
    assert parse_source(expr).extract(_doc(body, headers)) == expected


@pytest.mark.parametrize(
    ("expr", "body"),
    [
        ("json:id", b"not json"),
        ("json:id", b'{"id": null}'),
        ("json:id", b'{"id": {"nested": 1}}'),
        ("json:id", b'{"id": true}'),
        ("json:id", b'{"id": ""}'),
        ("json:a.b", b'{"a": [1, 2]}'),
        ("json:a.5", b'{"a": [1, 2]}'),
        ("json:id", b"[" * 100_000),  # deeply nested: no RecursionError escapes
        ("header:missing", b""),
        ("{header:x-hook}:{json:id}", b'{"id": "e"}'),
    ],
)
def test_missing_values_extract_as_none(expr: str, body: bytes) -> None:
    assert parse_source(expr).extract(_doc(body)) is None


def test_body_sha256() -> None:
    body = b"\xff\x00raw"
    assert parse_source("body_sha256").extract(_doc(body)) == hashlib.sha256(body).hexdigest()


def test_query_source() -> None:
    assert parse_source("query:id").extract(_doc(id="q1")) == "q1"


@pytest.mark.parametrize(
    "expr", ["", "id", "xml:id", "json:", "json:a..b", "{header:x", "{header:x?}", "{}"]
)
def test_bad_expressions_are_refused(expr: str) -> None:
    with pytest.raises(SourceSyntaxError):
        parse_source(expr)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"id": 1.10}', "1.10"),  # as sent, not as a float prints it
        (b'{"id": 0.1000000000000000055511151231257827}', "0.1000000000000000055511151231257827"),
        (b'{"id": 1e2}', "1E+2"),
        (b'{"id": 123456789012345678901234567890}', "123456789012345678901234567890"),
        (b'{"id": 18446744073709551616}', "18446744073709551616"),  # past 64 bits
        (b'{"id": -9223372036854775808}', "-9223372036854775808"),
    ],
)
def test_numeric_ids_are_read_exactly(body: bytes, expected: str) -> None:
    assert parse_source("json:id").extract(_doc(body)) == expected


def test_numbers_that_differ_as_sent_never_share_a_key() -> None:
    source = parse_source("json:id")
    ids = [
        source.extract(_doc(b'{"id": %s}' % n)) for n in (b"1.1", b"1.10", b"1.1000000000000001")
    ]
    assert len(set(ids)) == 3


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"id": "\\ud800x"}', "\ud800x"),  # a lone surrogate escape: JSON all the same
        (b'{"id": "a", "id": "b"}', "b"),  # a repeated name: the last one counts
    ],
)
def test_the_fast_and_the_exact_parser_agree(body: bytes, expected: str) -> None:
    assert parse_source("json:id").extract(_doc(body)) == expected


@pytest.mark.parametrize(
    "body", [b"[NaN]", b'{"id": Infinity}', b"\xef\xbb\xbf{}", b'{"id": "a"', b"\xff"]
)
def test_what_is_not_json_stays_not_json(body: bytes) -> None:
    assert _doc(body).json is None


@pytest.mark.parametrize(
    ("body", "items"),
    [
        (b"[]", []),
        (b' [ {"a": 1.50} ,\n {"b": "\xc3\xa9"} ] \n', [b'{"a": 1.50}', b'{"b": "\xc3\xa9"}']),
        (b'[1,"x",[2,3],null]', [b"1", b'"x"', b"[2,3]", b"null"]),
    ],
)
def test_array_items_keep_their_own_bytes(body: bytes, items: list[bytes]) -> None:
    found = json_array_items(body, limit=100)
    assert found is not None
    assert [raw for _, raw in found] == items
    assert [value for value, _ in found] == [json.loads(raw, parse_float=Decimal) for raw in items]


@pytest.mark.parametrize(
    "body",
    [b"", b"{}", b"[1,]", b"[1 2]", b"[1", b"[1] x", b"[,1]", b"[NaN]", b"\xff[1]"],
)
def test_what_is_not_one_json_array_has_no_items(body: bytes) -> None:
    assert json_array_items(body, limit=100) is None


def test_array_items_stop_one_past_the_limit_without_reading_on() -> None:
    """Past the limit the rest is never parsed: the caller refuses the batch as too large."""
    assert json_array_items(b"[1,2,3,4,oops", limit=2) == [(1, b"1"), (2, b"2"), (3, b"3")]
    assert json_array_items(b"[1,2]", limit=2) == [(1, b"1"), (2, b"2")]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b'[{"a": 1e' + b"9" * 30 + b"}]", "out of the range"),
        (b"[" + b"7" * 5000 + b"]", "integer of too many digits"),
        (b"[" * 10_000, "nests too deeply"),
    ],
)
def test_an_array_the_exact_parser_cannot_read_says_why(body: bytes, words: str) -> None:
    with pytest.raises(UnreadableJson, match=words):
        json_array_items(body, limit=10)


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.text()
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=12,
)


@given(st.lists(_JSON, max_size=6), st.sampled_from([None, 0, 2]), st.booleans())
def test_any_array_splits_into_its_elements(
    values: list[object], indent: int | None, ascii_only: bool
) -> None:
    text = json.dumps(values, indent=indent, ensure_ascii=ascii_only)
    found = json_array_items(text.encode(), limit=100)
    assert found is not None
    expected = json.loads(text, parse_float=Decimal)
    assert [value for value, _ in found] == expected
    for value, raw in found:  # each element's bytes parse to that element alone
        assert json.loads(raw, parse_float=Decimal) == value


_FORM = {"content-type": "application/x-www-form-urlencoded"}


@pytest.mark.parametrize(
    "variant",
    [
        b"MessageSid=SM1&Body=pay+10&From=%2B15550001",
        b"From=%2B15550001&Body=pay+10&MessageSid=SM1",  # reordered
        b"MessageSid=%53M1&Body=pay%2010&From=%2b15550001",  # encoded otherwise
        b"MessageSid=SM1&Body=pay+10&From=%2B15550001&Body=pay+10",  # a value repeated
    ],
)
def test_form_sha256_is_the_same_for_every_form_of_the_same_parameters(variant: bytes) -> None:
    """Twilio signs the sorted parameters, not the bytes: one signature covers all of these,
    so they must be one event, not a new key per variant of a captured request."""
    reference = b"MessageSid=SM1&Body=pay+10&From=%2B15550001"
    extract = parse_source("form_sha256").extract
    assert extract(_doc(variant, _FORM)) == extract(_doc(reference, _FORM))


def test_form_sha256_tells_different_parameters_apart_whatever_the_content_type() -> None:
    """The verifier reads the body as a form whatever Content-Type says: so does the key, or a
    captured request re-sent as text/plain with its parameters reordered was a new event."""
    extract = parse_source("form_sha256").extract
    assert extract(_doc(b"MessageSid=SM1&Body=a", _FORM)) != extract(
        _doc(b"MessageSid=SM1&Body=b", _FORM)
    )
    reference = extract(_doc(b"MessageSid=SM1&Body=pay+10", _FORM))
    for headers in ({}, {"content-type": "text/plain"}):
        assert extract(_doc(b"Body=pay%2010&MessageSid=SM1", headers)) == reference


def test_form_sha256_in_twilios_json_mode_is_the_query_and_the_raw_body() -> None:
    body = b'{"MessageSid": "SM1", "Body": "a"}'
    digest = hashlib.sha256(body).hexdigest()
    request = InboundRequest(
        provider="p",
        method="POST",
        url=f"http://127.0.0.1/webhooks/p?bodySHA256={digest}",
        headers={"content-type": "application/json"},
        body=body,
    )
    expected = hashlib.sha256(f"?bodySHA256={digest}".encode() + body).hexdigest()
    assert parse_source("form_sha256").extract(Document(request)) == expected


def test_a_public_url_with_its_own_query_fixes_the_query_the_key_covers() -> None:
    """Twilio signs public_url's query, not the request's: a query added to a captured request
    must not make a new key (nor one removed)."""
    extract = parse_source("form_sha256").extract
    public = "https://example.com/hook?menu=main"
    keys = {
        extract(Document(doc.request, url=signed_url(public, doc.request.url)))
        for doc in (_form_doc(""), _form_doc("?menu=main"), _form_doc("?menu=forged"))
    }
    assert len(keys) == 1


@pytest.mark.parametrize(
    ("headers", "body", "expected"),
    [
        ({"idempotency-key": "idem-1"}, b'{"id": "e1"}', "idem-1"),  # the first one present
        ({}, b'{"id": "e1"}', "e1"),  # the next one
        ({}, b"{}", hashlib.sha256(b"{}").hexdigest()),  # the last resort
    ],
)
def test_alternatives_take_the_first_value_found(
    headers: dict[str, str], body: bytes, expected: str
) -> None:
    source = parse_source("header:Idempotency-Key || json:id || body_sha256")
    assert source.extract(_doc(body, headers)) == expected


def test_alternatives_that_all_miss_extract_as_none() -> None:
    assert parse_source("header:A || {json:b}:{json:c}").extract(_doc(b'{"b": 1}')) is None


@pytest.mark.parametrize("expr", ["header:A ||", "|| body_sha256", "header:A || || json:b"])
def test_an_empty_alternative_is_refused(expr: str) -> None:
    with pytest.raises(SourceSyntaxError):
        parse_source(expr)


def test_body_sha256_of_a_batch_element_is_the_elements_own_bytes() -> None:
    request = _doc(b'[{"a": 1}, {"a": 2}]').request
    items = json_array_items(request.body, limit=100)
    assert items is not None
    extract = parse_source("json:sg_event_id || body_sha256").extract
    keys = [extract(Document(request, json_value=value, body=raw)) for value, raw in items]
    assert keys == [hashlib.sha256(raw).hexdigest() for _, raw in items]


def _form_doc(query: str) -> Document:
    request = InboundRequest(
        provider="p",
        method="POST",
        url=f"http://127.0.0.1/webhooks/p{query}",
        headers=_FORM,
        body=b"MessageSid=SM1&Digits=1",
    )
    return Document(request)


def test_form_sha256_covers_the_query_string_as_twilio_signs_it() -> None:
    """The same parameters posted to two query strings carry two different signatures (Twilio
    signs the URL): two events, not one answered as a duplicate of the other."""
    extract = parse_source("form_sha256").extract
    main, billing = extract(_form_doc("?menu=main")), extract(_form_doc("?menu=billing"))
    assert main != billing
    assert extract(_form_doc("?menu=main")) == main
    # Without a query string the key is what it always was: the sorted parameters alone.
    assert extract(_form_doc("")) == hashlib.sha256(b"Digits1MessageSidSM1").hexdigest()


def _delivered(body: bytes, *fields: str) -> Document:
    doc = _doc(body)
    return Document(doc.request, delivery_fields=frozenset(fields))


@pytest.mark.parametrize(
    ("first", "retry"),
    [
        (  # Intercom's first attempt may carry no count; its retry does
            b'{"id":"n1","topic":"t","n":2.50}',
            b'{"topic": "t", "n": 2.50, "id": "n1", "delivery_attempts": 2}',
        ),
        (  # Mailgun JSON: signed again for the retry
            b'{"signature":{"timestamp":"1","token":"a"},"event-data":{"id":"e","n":1.5}}',
            b'{"event-data": {"n": 1.5, "id": "e"}, "signature": {"timestamp": "2", "token": "b"}}',
        ),
        (  # Mailgun legacy form: the same fields in another order, signed again
            b"timestamp=1&token=a&signature=00&event=opened&Message-Id=%3Cm%3E",
            b"Message-Id=%3Cm%3E&signature=ff&event=opened&token=b&timestamp=2",
        ),
    ],
)
def test_event_sha256_leaves_out_what_belongs_to_the_delivery(first: bytes, retry: bytes) -> None:
    fields = ("signature", "timestamp", "token", "delivery_attempts")
    digest = parse_source("event_sha256").extract(_delivered(first, *fields))
    assert digest == _delivered(retry, *fields).event_sha256
    assert digest != hashlib.sha256(first).hexdigest()


@pytest.mark.parametrize(
    ("one", "other"),
    [
        (b'{"webhookTimestamp":1,"data":{"id":"a"}}', b'{"webhookTimestamp":1,"data":{"id":"b"}}'),
        (b"webhookTimestamp=1&event=opened", b"webhookTimestamp=1&event=clicked"),
        (  # numbers beyond what a float holds
            b'{"webhookTimestamp":1,"n":123456789012345678901234567890}',
            b'{"webhookTimestamp":1,"n":123456789012345678901234567891}',
        ),
        (b'{"webhookTimestamp":1,"n":0.1000000000000000001}', b'{"webhookTimestamp":1,"n":0.1}'),
        (b'{"webhookTimestamp":1,"n":1.5}', b'{"webhookTimestamp":1,"n":"1.5"}'),  # not a string
        (b'{"webhookTimestamp":1,"n":[1,2]}', b'{"webhookTimestamp":1,"n":"[1,2]"}'),
        (b'{"data":{"webhookTimestamp":1}}', b'{"data":{"webhookTimestamp":2}}'),  # not top-level
    ],
)
def test_event_sha256_still_tells_two_events_apart(one: bytes, other: bytes) -> None:
    assert (
        _delivered(one, "webhookTimestamp").event_sha256
        != _delivered(other, "webhookTimestamp").event_sha256
    )


_NOT_AN_OBJECT_WITH_FIELDS = [
    b"[1,2]",
    b"\xff\xfe binary",
    b"event=opened",
    b"",
    b'{"signature":1,"a":' + b"[" * 2000 + b"]" * 2000 + b"}",  # too deep to parse
]


@pytest.mark.parametrize("body", [b'{"id": "e"}', *_NOT_AN_OBJECT_WITH_FIELDS])
def test_event_sha256_is_the_body_hash_for_a_scheme_without_delivery_fields(body: bytes) -> None:
    assert _doc(body).event_sha256 == hashlib.sha256(body).hexdigest()


@pytest.mark.parametrize("body", _NOT_AN_OBJECT_WITH_FIELDS)
def test_event_sha256_hashes_whole_what_it_cannot_take_apart(body: bytes) -> None:
    """Not a JSON object, a form without the fields, or too deep to read: the whole body,
    never an error. (A JSON object is written again, its fields present or not.)"""
    assert _delivered(body, "signature").event_sha256 == hashlib.sha256(body).hexdigest()


def test_event_sha256_reads_a_body_deeper_than_orjson_writes_exactly() -> None:
    deep = b"[" * 300 + b"]" * 300  # orjson writes 255 levels at most
    assert (
        _delivered(
            b'{"webhookTimestamp":1,"a":' + deep + b',"n":1}', "webhookTimestamp"
        ).event_sha256
        != _delivered(
            b'{"webhookTimestamp":1,"a":' + deep + b',"n":2}', "webhookTimestamp"
        ).event_sha256
    )


@pytest.mark.parametrize(
    ("expr", "headers"),
    [
        ("header:X-Id", {"X-Id"}),
        ("{header:X-Hook?}:{header:X-Delivery}", {"X-Hook", "X-Delivery"}),
        ("header:Idempotency-Key || json:id || body_sha256", {"Idempotency-Key"}),
        ("json:id", set()),
    ],
)
def test_headers_read_names_every_header_an_expression_reads(expr: str, headers: set[str]) -> None:
    assert headers_read(expr) == headers
