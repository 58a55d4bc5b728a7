"""Raw HTTP/1.1 over a socket, for input no well-behaved client would send (bad header bytes,
unnormalised paths, slow or endless bodies), and Standard Webhooks signing of arbitrary bytes
(the SDK signs text only)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tests.support.factories import TEST_SECRET


def sign_raw(body: bytes, *, msg_id: bytes, timestamp: int, secret: str = TEST_SECRET) -> bytes:
    """A Standard Webhooks ``v1`` signature over ``id.timestamp.body``, all as bytes."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    content = msg_id + b"." + str(timestamp).encode() + b"." + body
    return b"v1," + base64.b64encode(hmac.new(key, content, hashlib.sha256).digest())


@dataclass(frozen=True, slots=True)
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def is_json_error(self) -> bool:
        if not self.headers.get("content-type", "").startswith("application/json"):
            return False
        data: Any = json.loads(self.body)
        return isinstance(data, dict) and set(data) == {"error", "detail"} and bool(data["error"])

    def json(self) -> Any:
        return json.loads(self.body)


def request_head(path: bytes, headers: Mapping[bytes, bytes], *, method: bytes = b"POST") -> bytes:
    lines = [method + b" " + path + b" HTTP/1.1", b"Host: 127.0.0.1"]
    lines += [name + b": " + value for name, value in headers.items()]
    return b"\r\n".join(lines) + b"\r\n\r\n"


async def read_response(reader: asyncio.StreamReader) -> RawResponse | None:
    """One response, or None when the server closed the connection without answering."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in header_lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    try:
        body = await reader.readexactly(length)
    except (asyncio.IncompleteReadError, ConnectionError):
        body = b""
    return RawResponse(status=int(status_line.split()[1]), headers=headers, body=body)


async def exchange(port: int, data: bytes, *, timeout_s: float = 20.0) -> RawResponse | None:
    """Send ``data`` to 127.0.0.1:``port`` and read one response."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(timeout_s):
            return await read_response(reader)
    finally:
        writer.close()


def chunked(piece: bytes) -> bytes:
    """One chunk in HTTP/1.1 chunked transfer coding."""
    return f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
