"""Value sources for event IDs, types and ordering keys."""

from __future__ import annotations

import hashlib

import pytest

from receiver.keys import Document, SourceSyntaxError, parse_source
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
