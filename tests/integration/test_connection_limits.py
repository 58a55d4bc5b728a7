"""Connection-level protections of a running receiver (its real listeners, not a test client,
which cancels a handler whose client went away): a client that never finishes its request head
does not keep its socket, and one that hangs up mid-body is a quiet rejection."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from receiver.config import load_config
from receiver.runtime import Receiver
from tests.support import factories
from tests.support.factories import event_body, signed_headers
from tests.support.rawhttp import read_response, request_head

IDLE_S = 0.5


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Receiver]:
    path = factories.write_config(tmp_path, server={"idle_timeout_s": IDLE_S})
    env = factories.test_environ()
    receiver = Receiver(load_config(path, environ=env), environ=env)
    await receiver.start()
    try:
        yield receiver
    finally:
        await receiver.stop()


async def _closed_after(reader: asyncio.StreamReader, *, limit_s: float) -> float:
    """Seconds until the server hangs up (read returns EOF or the connection resets)."""
    started = time.monotonic()
    async with asyncio.timeout(limit_s):
        try:
            while await reader.read(1024):
                pass
        except ConnectionError:
            pass
    return time.monotonic() - started


@pytest.mark.parametrize(
    "sent",
    [b"", b"POST /webhooks/sw HT", b"POST /webhooks/sw HTTP/1.1\r\nHost: x\r\n"],
    ids=["nothing", "half a request line", "headers never ended"],
)
async def test_a_request_head_that_never_completes_is_closed(
    running: Receiver, sent: bytes
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", running.ingest_port)
    try:
        writer.write(sent)
        await writer.drain()
        waited = await _closed_after(reader, limit_s=IDLE_S + 10)
    finally:
        writer.close()
    assert waited < IDLE_S + 5  # aiohttp's own default would hold it for an hour


async def test_headers_dripped_byte_by_byte_do_not_hold_the_socket(running: Receiver) -> None:
    """Slowloris: each byte arrives well inside the timeout, the head never completes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", running.ingest_port)

    async def drip() -> None:
        for byte in b"POST /webhooks/sw HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000:
            writer.write(bytes([byte]))
            try:
                await writer.drain()
            except ConnectionError:
                return
            await asyncio.sleep(IDLE_S / 5)

    dripping = asyncio.create_task(drip())
    try:
        waited = await _closed_after(reader, limit_s=IDLE_S + 10)
    finally:
        dripping.cancel()
        writer.close()
    assert waited < IDLE_S + 5


async def test_a_kept_alive_connection_serves_requests_then_closes_when_idle(
    running: Receiver,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", running.ingest_port)
    try:
        for n in range(2):
            body = event_body(f"alive{n}")
            headers = {
                k.encode(): v.encode() for k, v in signed_headers(body, msg_id=f"a{n}").items()
            }
            headers[b"Content-Length"] = str(len(body)).encode()
            writer.write(request_head(b"/webhooks/sw", headers) + body)
            await writer.drain()
            resp = await read_response(reader)
            assert resp is not None and resp.status == 200
            await asyncio.sleep(IDLE_S / 4)  # a pause shorter than the timeout keeps it
        waited = await _closed_after(reader, limit_s=IDLE_S + 10)
    finally:
        writer.close()
    assert waited < IDLE_S + 5


@pytest.mark.parametrize("abort", [False, True], ids=["FIN", "RST"])
async def test_a_client_that_hangs_up_mid_body_is_a_quiet_rejection(
    running: Receiver, capsys: pytest.CaptureFixture[str], abort: bool
) -> None:
    """Anyone can do this: it must not write an error with a traceback each time."""
    _reader, writer = await asyncio.open_connection("127.0.0.1", running.ingest_port)
    writer.write(request_head(b"/webhooks/sw", {b"Content-Length": b"100"}) + b'{"a": 1}')
    await writer.drain()
    await asyncio.sleep(0.2)  # the route is reading the body now
    if abort:
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()
    rejections = running.metrics.rejections.labels("sw", "client_disconnected")
    async with asyncio.timeout(10):
        while rejections._value.get() < 1:
            await asyncio.sleep(0.02)
    out = capsys.readouterr().out
    assert "client_disconnected" in out
    assert "unhandled_error" not in out and "Traceback" not in out


def _signed_request(msg_id: str) -> bytes:
    body = event_body(msg_id)
    headers = {k.encode(): v.encode() for k, v in signed_headers(body, msg_id=msg_id).items()}
    headers[b"Content-Length"] = str(len(body)).encode()
    return request_head(b"/webhooks/sw", headers) + body


async def test_past_max_connections_a_new_one_is_answered_503_and_the_rest_serve_on(
    tmp_path: Path,
) -> None:
    """Idle connections (a client that opens them and sends nothing) ran the process out of
    file descriptors, and with it the admin listener, the worker and the database."""
    path = factories.write_config(tmp_path, server={"max_connections": 3, "idle_timeout_s": 30})
    env = factories.test_environ()
    receiver = Receiver(load_config(path, environ=env), environ=env)
    await receiver.start()
    held = []
    try:
        for _ in range(3):
            held.append(await asyncio.open_connection("127.0.0.1", receiver.ingest_port))
        await asyncio.sleep(0.1)  # the server has taken them
        reader, writer = await asyncio.open_connection("127.0.0.1", receiver.ingest_port)
        refused = await read_response(reader)
        writer.close()
        assert refused is not None and refused.status == 503
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["error"] == "server_busy"
        refusals = receiver.metrics.connections_refused.labels("server")
        assert refusals._value.get() == 1
        # The held ones still serve, and a freed place serves a new client.
        first_reader, first_writer = held[0]
        first_writer.write(_signed_request("capped-1"))
        answer = await read_response(first_reader)
        assert answer is not None and answer.status == 200
        for _, writer in held:
            writer.close()
        await asyncio.sleep(0.2)
        reader, writer = await asyncio.open_connection("127.0.0.1", receiver.ingest_port)
        writer.write(_signed_request("capped-2"))
        answer = await read_response(reader)
        writer.close()
        assert answer is not None and answer.status == 200
    finally:
        await receiver.stop()


async def test_a_head_with_more_header_lines_than_a_webhook_needs_is_refused(
    running: Receiver,
) -> None:
    """aiohttp's default, 128 header lines of 8 KiB each kept until the head ends, let a few
    hundred connections hold a gigabyte."""
    reader, writer = await asyncio.open_connection("127.0.0.1", running.ingest_port)
    many = {f"X-Filler-{i}".encode(): b"a" * 100 for i in range(65)}
    writer.write(request_head(b"/webhooks/sw", {**many, b"Content-Length": b"0"}))
    answer = await read_response(reader)
    writer.close()
    assert answer is not None and answer.status == 400
