"""Hostile input at the ingest listener: never a 5xx, never a stored row for a refused delivery,
memory bounded by the body cap, and a JSON error with a code for every answer our code gives
(where aiohttp's own HTTP parser answers first, a 4xx is all we can ask)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import zlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from receiver.server.ingest_routes import BODY_BUDGET
from tests.integration.conftest import Harness
from tests.support.factories import SECRET_ENV, event_body, signed_headers
from tests.support.rawhttp import (
    RawResponse,
    chunked,
    exchange,
    read_response,
    request_head,
    sign_raw,
)
from tests.support.serve import ServeProcess, serve_config, serve_env

SW_BY_JSON_ID = {"scheme": "standard-webhooks", "secret_envs": [SECRET_ENV], "event_id": "json:id"}


def _rows(harness: Harness) -> int:
    with sqlite3.connect(harness.receiver.config.settings.storage.path) as conn:
        count = int(conn.execute("SELECT count(*) FROM events").fetchone()[0])
    conn.close()
    return count


def _port(harness: Harness) -> int:
    port = harness.client.server.port
    assert port is not None
    return port


def _signed_raw_head(
    path: bytes, body: bytes, *, msg_id: bytes, content_type: bytes, extra: dict[bytes, bytes]
) -> bytes:
    timestamp = int(time.time())
    headers = {
        b"Content-Type": content_type,
        b"Content-Length": str(len(body)).encode(),
        b"webhook-id": msg_id,
        b"webhook-timestamp": str(timestamp).encode(),
        b"webhook-signature": sign_raw(body, msg_id=msg_id, timestamp=timestamp),
        **extra,
    }
    return request_head(path, headers)


async def _post_signed(
    harness: Harness,
    body: bytes,
    *,
    msg_id: bytes,
    content_type: bytes = b"application/json",
    provider: bytes = b"sw",
    extra: dict[bytes, bytes] | None = None,
) -> RawResponse:
    head = _signed_raw_head(
        b"/webhooks/" + provider, body, msg_id=msg_id, content_type=content_type, extra=extra or {}
    )
    response = await exchange(_port(harness), head + body)
    assert response is not None, "the server closed the connection without answering"
    return response


def _error_code(response: RawResponse) -> str:
    assert response.is_json_error, (response.status, response.headers, response.body[:200])
    code: str = response.json()["error"]
    return code


def test_raw_signer_agrees_with_the_sdk() -> None:
    body = event_body("oracle")
    sdk = signed_headers(body, msg_id="oracle", at=datetime.fromtimestamp(1_700_000_000, UTC))
    raw = sign_raw(body, msg_id=b"oracle", timestamp=1_700_000_000)
    assert raw.decode() == sdk["webhook-signature"]


# --- bodies -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "status", "code"),
    [
        (b"application/json", 400, "invalid_body"),  # declared JSON, cannot be JSON
        (b"application/octet-stream", 200, None),  # opaque bytes: stored byte-exact
    ],
)
async def test_non_utf8_signed_body(
    harness: Harness, content_type: bytes, status: int, code: str | None
) -> None:
    body = b'{"type": "\xff\xfe\xc3("}' + bytes(range(128, 256))
    resp = await _post_signed(harness, body, msg_id=b"nonutf8", content_type=content_type)
    assert resp.status == status
    if code is not None:
        assert _error_code(resp) == code
        assert _rows(harness) == 0
        return
    stored = await harness.receiver.store.get_event(int(resp.json()["id"]))
    assert stored is not None and stored.body == body


async def test_non_utf8_unsigned_body_is_401_json(harness: Harness) -> None:
    body = bytes(range(256))
    head = request_head(b"/webhooks/sw", {b"Content-Length": str(len(body)).encode()})
    resp = await exchange(_port(harness), head + body)
    assert resp is not None and resp.status == 401
    assert _error_code(resp) == "missing_signature"


async def test_duplicate_json_keys_are_stored_as_sent_and_dedupe_stably(
    make_harness: Any,
) -> None:
    harness: Harness = await make_harness(providers={"swj": SW_BY_JSON_ID})
    body = b'{"id": "first", "type": "a", "id": "second", "type": "b"}'
    first = await _post_signed(harness, body, msg_id=b"dk", provider=b"swj")
    again = await _post_signed(harness, body, msg_id=b"dk", provider=b"swj")
    assert (first.status, again.status) == (200, 200)
    assert first.json()["status"] == "accepted"
    assert again.json()["status"] == "duplicate"
    assert again.json()["id"] == first.json()["id"]
    # Python's json keeps the last duplicate; what matters is that the choice is stable.
    assert first.json()["key"] == "swj:second"
    stored = await harness.receiver.store.get_event(int(first.json()["id"]))
    assert stored is not None and stored.body == body


@pytest.mark.parametrize("opener", [b"[", b'{"a":'])
async def test_json_nested_100000_levels_is_400_not_a_crash(
    harness: Harness, opener: bytes
) -> None:
    closer = b"]" if opener == b"[" else b"}"
    body = opener * 100_000 + b"1" + closer * 100_000
    resp = await _post_signed(harness, body, msg_id=b"deep")
    assert resp.status == 400
    assert _error_code(resp) == "invalid_body"
    # It is JSON by its syntax: the answer says why it cannot be read, not "not valid JSON".
    assert "nests too deeply" in resp.json()["detail"]
    # As opaque bytes the same delivery is fine: the ID comes from the header.
    resp = await _post_signed(harness, body, msg_id=b"deep", content_type=b"text/plain")
    assert resp.status == 200, resp.body


@pytest.mark.parametrize(
    ("content_type", "code"),
    [(b"application/json", "invalid_body"), (b"text/plain", "missing_event_id")],
)
async def test_a_100000_digit_event_id_is_400(
    make_harness: Any, content_type: bytes, code: str
) -> None:
    harness: Harness = await make_harness(providers={"swj": SW_BY_JSON_ID})
    body = b'{"id": ' + b"7" * 100_000 + b"}"
    resp = await _post_signed(
        harness, body, msg_id=b"n", provider=b"swj", content_type=content_type
    )
    assert resp.status == 400
    assert _error_code(resp) == code
    assert _rows(harness) == 0


@pytest.mark.parametrize(
    ("content_type", "code"),
    [(b"application/json", "invalid_body"), (b"text/plain", "missing_event_id")],
)
@pytest.mark.parametrize(
    ("number", "words"),
    [
        (b"1e" + b"9" * 35, "a number out of the range that can be read"),
        (b"7" * 5000, "an integer of too many digits"),
    ],
)
async def test_a_number_past_the_exact_range_is_400_not_a_500(
    make_harness: Any, content_type: bytes, code: str, number: bytes, words: str
) -> None:
    """orjson refuses it, the exact parser's ``Decimal`` raised InvalidOperation (not a
    ValueError): the answer was a 500, which a provider retries for days."""
    harness: Harness = await make_harness(providers={"swj": SW_BY_JSON_ID})
    body = b'{"id": "evt_n", "amount": ' + number + b"}"
    resp = await _post_signed(
        harness, body, msg_id=b"n", provider=b"swj", content_type=content_type
    )
    assert resp.status == 400, resp.body
    assert _error_code(resp) == code
    assert words in resp.json()["detail"]
    assert _rows(harness) == 0


async def test_an_event_id_too_long_for_a_key_is_400(make_harness: Any) -> None:
    harness: Harness = await make_harness(providers={"swj": SW_BY_JSON_ID})
    body = b'{"id": ' + b"7" * 4000 + b"}"  # parses (under Python's 4300-digit limit)
    resp = await _post_signed(harness, body, msg_id=b"n", provider=b"swj")
    assert resp.status == 400
    assert _error_code(resp) == "missing_event_id"


async def test_distinct_overflowing_numeric_ids_are_not_one_event(make_harness: Any) -> None:
    harness: Harness = await make_harness(providers={"swj": SW_BY_JSON_ID})
    first = await _post_signed(harness, b'{"id": 1e999999}', msg_id=b"a", provider=b"swj")
    second = await _post_signed(harness, b'{"id": 2e999999}', msg_id=b"b", provider=b"swj")
    # Read exactly ("1e999999", not a float's infinity): two different events.
    assert [first.status, second.status] == [200, 200]
    assert [first.json()["key"], second.json()["key"]] == ["swj:1E+999999", "swj:2E+999999"]
    assert second.json()["status"] == "accepted"


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b'{"id": "s1", "type": "\\ud800", "acct": "a"}', id="type"),
        pytest.param(b'{"id": "s2", "type": "t", "acct": "\\udbff"}', id="serialize_by"),
        pytest.param(b'{"id": "s3", "type": "x\\udc80\\ud800y", "acct": "a"}', id="mixed"),
        pytest.param(b'{"id": "s4", "type": "a\\r\\nb\\u0000", "acct": "a"}', id="control"),
    ],
)
async def test_a_metadata_field_that_is_not_text_is_stored_replaced(
    make_harness: Any, body: bytes
) -> None:
    """JSON may escape half a surrogate pair, or a control character; a type or ordering key is
    metadata, kept with U+FFFD in its place (an event ID is refused: the next test)."""
    provider = {**SW_BY_JSON_ID, "event_type": "json:type", "serialize_by": "json:acct"}
    harness: Harness = await make_harness(providers={"swj": provider})
    resp = await _post_signed(harness, body, msg_id=b"m", provider=b"swj")
    assert resp.status == 200, resp.body
    with sqlite3.connect(harness.receiver.config.settings.storage.path) as conn:
        row = conn.execute(
            "SELECT event_type, serialize_key, body FROM events JOIN payloads ON event_id = id"
        ).fetchone()
    conn.close()
    event_type, serialize_key, stored = row
    assert event_type.isprintable() and serialize_key.isprintable()
    assert "\ufffd" in event_type + serialize_key
    assert bytes(stored) == body  # the body itself is untouched


@pytest.mark.parametrize(
    ("event_id", "detail"),
    [
        (b"evt_\\ud800", "UTF-8"),
        (b"evt_\\nX", "control characters"),
        (b"evt_\\u0000X", "control characters"),
        (b"evt_\\r\\nX-Injected: 1", "control characters"),
        (b"evt_\x7fX", "control characters"),
        (b"evt_\\u0085X", "control characters"),  # C1: NEL, a line break to some parsers
        (b"evt_\\u2028X", "line breaks"),
        (b"evt_trail ", "white space"),  # an Idempotency-Key header would lose it
        (b"\\u00a0evt_lead", "white space"),
    ],
)
async def test_an_event_id_that_is_not_printable_text_is_400(
    make_harness: Any, event_id: bytes, detail: str
) -> None:
    """Replacing such characters would make two different IDs one key, and the key travels to
    handlers as a header and an environment variable: refused at once instead."""
    harness: Harness = await make_harness(providers={"swj": SW_BY_JSON_ID})
    body = b'{"id": "' + event_id + b'"}'
    resp = await _post_signed(harness, body, msg_id=b"m", provider=b"swj")
    assert resp.status == 400
    assert _error_code(resp) == "missing_event_id"
    assert detail in resp.json()["detail"]
    assert _rows(harness) == 0


# --- headers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("msg_id", "extra"),
    [
        pytest.param(b"latin1-header", {b"X-Note": b"caf\xe9 \xff"}, id="other-header"),
        pytest.param(b"id-\xff\xfe", {}, id="webhook-id"),
    ],
)
async def test_non_utf8_header_bytes_on_a_signed_delivery_are_not_5xx(
    harness: Harness, msg_id: bytes, extra: dict[bytes, bytes]
) -> None:
    body = event_body("latin1")
    resp = await _post_signed(harness, body, msg_id=msg_id, extra=extra)
    # Another header's bytes are kept replaced; an ID that is not text is refused.
    assert resp.status == (200 if msg_id == b"latin1-header" else 400), resp.body


async def test_a_content_type_with_bytes_that_are_not_utf8_is_stored_not_a_5xx(
    harness: Harness,
) -> None:
    """The one header value stored in its own column: it used to fail the write (503)."""
    body = event_body("ctype")
    resp = await _post_signed(
        harness, body, msg_id=b"ctype", content_type=b"application/json; charset=\xff"
    )
    assert resp.status == 200, resp.body
    with sqlite3.connect(harness.receiver.config.settings.storage.path) as conn:
        (stored,) = conn.execute("SELECT content_type FROM events").fetchone()
    conn.close()
    assert stored == "application/json; charset=\ufffd"


async def test_an_event_whose_write_fails_does_not_fail_its_batch_neighbours(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that fails for one event's own data, not the storage's (here its headers
    cannot be written): the group commit is tried again event by event, so only that one is
    refused and the others in its batch are stored."""
    from receiver.store import ingest_writer

    store = harness.receiver.store
    real = ingest_writer._headers_json

    def unwritable_for_one(ev: Any) -> str:
        if ev.key == "sw:h":
            raise ValueError("these headers cannot be written")
        return str(real(ev))

    monkeypatch.setattr(ingest_writer, "_headers_json", unwritable_for_one)
    innocent = event_body("innocent")
    # Hold the writer so both deliveries queue into the same group commit (private hooks:
    # there is no public way to choose batch boundaries).
    async with store.db._write_lock:
        blocker = asyncio.create_task(
            harness.post("sw", event_body(0), signed_headers(event_body(0), msg_id="first"))
        )
        for _ in range(500):
            if store.writer._flusher is not None and not store.writer._pending:
                break  # the first one's batch is waiting for the writer
            await asyncio.sleep(0.01)
        hostile = asyncio.create_task(
            harness.post("sw", event_body("h"), signed_headers(event_body("h"), msg_id="h"))
        )
        neighbour = asyncio.create_task(
            harness.post("sw", innocent, signed_headers(innocent, msg_id="innocent"))
        )
        for _ in range(500):
            if len(store.writer._pending) >= 2:
                break
            await asyncio.sleep(0.01)
        assert len(store.writer._pending) == 2  # the next group commit holds both
    with structlog.testing.capture_logs() as logs:
        first, refused, stored = await blocker, await hostile, await neighbour
    assert (first.status, refused.status, stored.status) == (200, 503, 200)
    assert [e["event"] for e in logs if e["event"] == "ingest_write_failed"] == [
        "ingest_write_failed"
    ]
    assert _rows(harness) == 2


async def test_a_64_kib_header_is_a_4xx(harness: Harness) -> None:
    body = event_body(1)
    head = request_head(
        b"/webhooks/sw",
        {b"Content-Length": str(len(body)).encode(), b"X-Big": b"a" * 65_536},
    )
    resp = await exchange(_port(harness), head + body)
    # aiohttp's parser refuses the line before our code runs (400), or closes the connection.
    assert resp is None or 400 <= resp.status < 500
    assert _rows(harness) == 0


async def test_many_headers_totalling_64_kib_are_not_a_5xx(harness: Harness) -> None:
    body = event_body(1)
    headers = {f"X-H{i}".encode(): b"b" * 500 for i in range(130)}
    headers[b"Content-Length"] = str(len(body)).encode()
    resp = await exchange(_port(harness), request_head(b"/webhooks/sw", headers) + body)
    assert resp is None or 400 <= resp.status < 500
    if resp is not None and resp.headers.get("content-type", "").startswith("application/json"):
        assert _error_code(resp) in {"missing_signature", "bad_request"}


# --- Expect: 100-continue ------------------------------------------------------------------


async def _expecting(port: int, path: bytes, headers: dict[bytes, bytes]) -> RawResponse | None:
    """Send only the head with ``Expect: 100-continue``; the first answer to it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request_head(path, {b"Expect": b"100-continue", **headers}))
        await writer.drain()
        async with asyncio.timeout(10):
            return await read_response(reader)
    finally:
        writer.close()


@pytest.mark.parametrize(
    ("path", "length", "status", "code"),
    [
        (b"/webhooks/nope", b"10", 404, "unknown_provider"),
        (b"/webhooks/sw", b"99999999", 413, "payload_too_large"),
    ],
)
async def test_a_request_refused_before_its_body_gets_no_100_continue(
    harness: Harness, path: bytes, length: bytes, status: int, code: str
) -> None:
    resp = await _expecting(_port(harness), path, {b"Content-Length": length})
    assert resp is not None and resp.status == status  # not 100: no body is wanted
    assert _error_code(resp) == code


async def test_an_unknown_expectation_is_417_json(harness: Harness) -> None:
    head = request_head(b"/webhooks/sw", {b"Expect": b"200-ok", b"Content-Length": b"2"})
    resp = await exchange(_port(harness), head + b"{}")
    assert resp is not None and resp.status == 417
    assert _error_code(resp) == "expectation_failed"


async def test_100_continue_invites_the_body_of_a_request_that_will_be_read(
    harness: Harness,
) -> None:
    body = event_body("expect")
    headers = {k.encode(): v.encode() for k, v in signed_headers(body, msg_id="ex").items()}
    headers[b"Content-Length"] = str(len(body)).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", _port(harness))
    try:
        writer.write(request_head(b"/webhooks/sw", {b"Expect": b"100-continue", **headers}))
        await writer.drain()
        async with asyncio.timeout(10):
            interim = await reader.readuntil(b"\r\n\r\n")
            assert interim.startswith(b"HTTP/1.1 100")
            writer.write(body)
            await writer.drain()
            resp = await read_response(reader)
    finally:
        writer.close()
    assert resp is not None and resp.status == 200
    assert resp.json()["status"] == "accepted"


# --- provider names -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        b"/webhooks/..",
        b"/webhooks/%2e%2e",
        b"/webhooks/%2E%2E",
        b"/webhooks/..%2Fsw",
        b"/webhooks/%2e%2e%2fsw",
        b"/webhooks/sw%2F",
        b"/webhooks/sw%2f..",
        b"/webhooks/sw%00",
        b"/webhooks/sw%20",
        b"/webhooks/SW",
        b"/webhooks/%C3%A9",
        b"/webhooks/%F0%9F%92%A5",
        b"/webhooks/%ff",
        b"/webhooks/sw/..",
        b"/webhooks/./sw",
        b"/webhooks//sw",
        b"/webhooks/../webhooks/sw",
        b"/webhooks/" + b"a" * 4000,
    ],
)
async def test_path_tricks_in_the_provider_name_are_404_json(harness: Harness, path: bytes) -> None:
    body = event_body(1)
    headers = {k.encode(): v.encode() for k, v in signed_headers(body, msg_id="p").items()}
    headers[b"Content-Length"] = str(len(body)).encode()
    resp = await exchange(_port(harness), request_head(path, headers) + body)
    assert resp is not None and resp.status == 404, resp
    assert _error_code(resp) in {"unknown_provider", "not_found"}
    assert _rows(harness) == 0


@pytest.mark.parametrize(
    "path",
    [b"/webhooks/" + b"a" * 9000, "/webhooks/\u00e9\u4e2d".encode(), b"/webhooks/s\x00w"],
)
async def test_paths_the_http_parser_refuses_are_4xx(harness: Harness, path: bytes) -> None:
    resp = await exchange(_port(harness), request_head(path, {b"Content-Length": b"0"}))
    assert resp is None or 400 <= resp.status < 500


# --- size and time limits -----------------------------------------------------------------


async def test_declared_oversized_body_is_413_before_any_byte_is_sent(
    make_harness: Any,
) -> None:
    harness: Harness = await make_harness(server={"max_body_bytes": 1000})
    head = request_head(b"/webhooks/sw", {b"Content-Length": b"10000000"})
    resp = await exchange(_port(harness), head, timeout_s=10)  # no body at all follows
    assert resp is not None and resp.status == 413
    assert _error_code(resp) == "payload_too_large"


async def test_endless_chunked_body_is_413_once_past_the_cap(make_harness: Any) -> None:
    harness: Harness = await make_harness(server={"max_body_bytes": 1000})
    head = request_head(b"/webhooks/sw", {b"Transfer-Encoding": b"chunked"})
    # Just past the cap and no terminating chunk: an answer can only come from the cap.
    resp = await exchange(_port(harness), head + chunked(b"x" * 600) * 2, timeout_s=10)
    assert resp is not None and resp.status == 413
    assert _error_code(resp) == "payload_too_large"
    assert resp.headers.get("connection", "").lower() == "close"


async def test_gzip_bomb_is_413_after_the_cap(make_harness: Any) -> None:
    harness: Harness = await make_harness(server={"max_body_bytes": 65_536})
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = b"\0" * 1_000_000
    bomb = b"".join(packer.compress(zeros) for _ in range(200)) + packer.flush()  # 200 MB
    head = request_head(
        b"/webhooks/sw",
        {b"Content-Encoding": b"gzip", b"Content-Length": str(len(bomb)).encode()},
    )
    resp = await exchange(_port(harness), head + bomb, timeout_s=30)
    assert resp is not None and resp.status == 413
    assert _error_code(resp) == "payload_too_large"


async def test_slow_body_is_cut_at_the_read_timeout_and_never_stored(make_harness: Any) -> None:
    harness: Harness = await make_harness(server={"read_timeout_s": 1})
    body = event_body("slow")
    headers = {k.encode(): v.encode() for k, v in signed_headers(body, msg_id="slow").items()}
    headers[b"Content-Length"] = str(len(body)).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", _port(harness))

    async def trickle() -> None:  # 1 byte/s, bounded; stops when the server hangs up
        writer.write(request_head(b"/webhooks/sw", headers))
        for byte in body[:10]:
            writer.write(bytes([byte]))
            try:
                await writer.drain()
            except ConnectionError:
                return
            await asyncio.sleep(1)

    sender = asyncio.create_task(trickle())
    started = time.monotonic()
    try:
        async with asyncio.timeout(15):
            resp = await read_response(reader)
        elapsed_s = time.monotonic() - started
    finally:
        sender.cancel()
        writer.close()
    assert resp is None or resp.status == 408
    if resp is not None:
        assert _error_code(resp) == "request_timeout"
        assert resp.headers.get("connection", "").lower() == "close"
    assert elapsed_s < 8  # cut at ~1 s, not after the 10 s the whole trickle would take
    assert _rows(harness) == 0


async def test_bodies_held_at_once_are_capped_and_a_refused_one_is_503_with_retry_after(
    make_harness: Any,
) -> None:
    """Nothing is verified before a body is read: many large bodies at once must not grow the
    process without bound. A delivery past the budget is told to come back."""
    harness: Harness = await make_harness(
        server={"max_body_bytes": 1000, "body_memory_bytes": 1500}
    )
    port = _port(harness)
    # One delivery holds 999 bytes of the budget while the last byte of its body is awaited.
    _slow_reader, slow_writer = await asyncio.open_connection("127.0.0.1", port)
    head = request_head(b"/webhooks/sw", {b"Content-Length": b"1000"})
    slow_writer.write(head + b"{" + b"x" * 998)
    await slow_writer.drain()
    await asyncio.sleep(0.2)
    try:
        declared = request_head(b"/webhooks/sw", {b"Content-Length": b"900"})
        busy = await exchange(port, declared + b"x" * 900)
        assert busy is not None and busy.status == 503
        assert _error_code(busy) == "server_busy"
        assert busy.headers["retry-after"] == "1"
        chunked_head = request_head(b"/webhooks/sw", {b"Transfer-Encoding": b"chunked"})
        busy = await exchange(port, chunked_head + chunked(b"x" * 600) + b"0\r\n\r\n")
        assert busy is not None and busy.status == 503
        assert _error_code(busy) == "server_busy"
        small = event_body("fits")  # what is left of the budget still serves small bodies
        assert len(small) < 500
        resp = await harness.post("sw", small, signed_headers(small, msg_id="fits"))
        assert resp.status == 200
    finally:
        slow_writer.close()
    await asyncio.sleep(0.2)  # the slow one is gone: its share comes back
    later = event_body("later", pad="p" * 600)
    resp = await harness.post("sw", later, signed_headers(later, msg_id="later"))
    assert resp.status == 200
    assert harness.receiver.ingest_app[BODY_BUDGET].held_bytes == 0
    busy = harness.receiver.metrics.registry.get_sample_value(
        "receiver_deliveries_total", {"provider": "sw", "outcome": "server_busy"}
    )
    assert busy == 2


async def test_connections_that_declare_a_body_and_send_none_hold_no_budget(
    make_harness: Any,
) -> None:
    """The budget counted a body's declared size before a byte arrived: 64 connections that
    declared a megabyte each and sent nothing refused every delivery (503) for as long as
    they stayed open, a cheap way to shut ingest for anyone."""
    harness: Harness = await make_harness(
        server={"max_body_bytes": 1_048_576, "body_memory_bytes": 4 * 1_048_576}
    )
    port = _port(harness)
    idle = []
    for _ in range(8):  # declared 8 MiB in all, twice the budget
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request_head(b"/webhooks/sw", {b"Content-Length": b"1048576"}))
        await writer.drain()
        idle.append(writer)
    await asyncio.sleep(0.2)
    try:
        body = event_body("while-idle")
        resp = await harness.post("sw", body, signed_headers(body, msg_id="while-idle"))
        assert resp.status == 200, await resp.text()
    finally:
        for writer in idle:
            writer.close()


def _memory_kib(pid: int) -> dict[str, int]:
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in {"VmRSS", "VmHWM"}:
            fields[name] = int(value.split()[0])
    return fields


async def _send_large(port: int, *, body_bytes: int, is_declared: bool) -> int:
    """POST ``body_bytes`` of junk (declared or chunked); the answer's status, 0 for none."""
    if is_declared:
        head = request_head(b"/webhooks/sw", {b"Content-Length": str(body_bytes).encode()})
    else:
        head = request_head(b"/webhooks/sw", {b"Transfer-Encoding": b"chunked"})
    piece = b"z" * 65_536
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head)
        for _ in range(body_bytes // len(piece)):
            writer.write(piece if is_declared else chunked(piece))
            await writer.drain()
        if not is_declared:
            writer.write(b"0\r\n\r\n")
        await writer.drain()
        async with asyncio.timeout(30):
            resp = await read_response(reader)
    except ConnectionError:
        return 0
    finally:
        writer.close()
    return 0 if resp is None else resp.status


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_memory_stays_flat_under_a_flood_of_oversized_bodies(tmp_path: Path) -> None:
    cap = 256 * 1024
    server = ServeProcess(
        serve_config(tmp_path, server={"max_body_bytes": cap}), serve_env(), tmp_path / "serve.log"
    )
    server.start()
    try:
        assert server.proc is not None
        pid = server.proc.pid
        port = int(server.settings["server"]["port"])
        semaphore = asyncio.Semaphore(8)

        async def one(i: int) -> int:
            async with semaphore:
                return await _send_large(port, body_bytes=10 * cap, is_declared=i % 2 == 0)

        warmup = await asyncio.gather(*(one(i) for i in range(16)))
        before = _memory_kib(pid)
        statuses = await asyncio.gather(*(one(i) for i in range(200)))
        after = _memory_kib(pid)
    finally:
        server.kill()
    assert set(warmup) | set(statuses) <= {413, 0}
    assert statuses.count(413) >= 150  # most floods got their answer
    # 8 concurrent bodies of 10x the cap, if buffered whole, would add ~20 MiB each round.
    assert after["VmRSS"] - before["VmRSS"] < 8 * 1024, (before, after)
    assert after["VmHWM"] - before["VmHWM"] < 16 * 1024, (before, after)


# --- property: arbitrary bytes and header values ------------------------------------------

_header_text = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=80)


@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    body=st.binary(max_size=4096),
    msg_id=_header_text,
    timestamp=st.one_of(_header_text, st.just(None)),
    signature=st.one_of(_header_text, st.just(None)),
    content_type=st.one_of(
        st.sampled_from(["application/json", "application/octet-stream", "text/plain"]),
        _header_text,
    ),
    extra=st.dictionaries(st.from_regex(r"\AX-[A-Za-z0-9-]{1,20}\Z"), _header_text, max_size=4),
)
async def test_arbitrary_bytes_and_headers_are_never_a_5xx(
    harness: Harness,
    body: bytes,
    msg_id: str,
    timestamp: str | None,
    signature: str | None,
    content_type: str,
    extra: dict[str, str],
) -> None:
    """``None`` for the timestamp or signature means: a correct one (so storage is reached)."""
    now = str(int(time.time()))
    ts = now if timestamp is None else timestamp
    if signature is None:
        sig = sign_raw(body, msg_id=msg_id.encode(), timestamp=int(now)).decode()
        ts = now
    else:
        sig = signature
    headers = {**extra, "content-type": content_type, "webhook-id": msg_id}
    headers["webhook-timestamp"] = ts
    headers["webhook-signature"] = sig
    resp = await harness.post("sw", body, headers)
    text = await resp.read()
    assert resp.status < 500, (resp.status, text[:200])
    if resp.status >= 400:
        data = json.loads(text)
        assert set(data) == {"error", "detail"}


async def test_a_signature_header_listing_thousands_of_entries_is_refused_unread(
    make_harness: Any,
) -> None:
    """Each listed signature cost a MAC per configured key before the answer: 20 000 entries
    made one request cost 28 ms of CPU. More than 32 is refused; a genuine list is a few."""
    harness: Harness = await make_harness()
    body = event_body("many")
    headers = signed_headers(body, msg_id="many")
    junk = " ".join(f"v1,{'A' * 43}=" for _ in range(40))
    flooded = {**headers, "webhook-signature": f"{junk} {headers['webhook-signature']}"}
    resp = await harness.post("sw", body, flooded)
    assert resp.status == 401
    assert (await resp.json())["error"] == "invalid_signature"
    few = {**headers, "webhook-signature": f"v1,{'A' * 43}= {headers['webhook-signature']}"}
    assert (await harness.post("sw", body, few)).status == 200
