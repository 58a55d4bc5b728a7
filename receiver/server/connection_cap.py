"""At most so many open connections per listener; the next one is answered ``503`` and closed.

Each connection holds a file descriptor and, until its request head is complete (at most
``server.idle_timeout_s``), the head's bytes. Without a cap, clients that open connections and
send nothing run the process out of descriptors, and then the admin listener, the worker's
handler connections and the database fail with the ingest listener. With it, only new ingest
connections wait: ``503 server_busy`` with ``Retry-After``, which providers retry. Limits per
client (and on new connections per second) belong to the proxy in front, which sees the
clients' own addresses.
"""

from __future__ import annotations

__all__ = ["cap_connections"]

import asyncio
import time
from collections.abc import Callable
from typing import cast

import orjson
import structlog
from aiohttp import web

log = structlog.get_logger("receiver.http")

_RETRY_AFTER_S = 1
_LOG_EVERY_S = 10.0
_ARRIVAL_S = 5.0  # far longer than a connection takes from its handler to being made
_BODY = orjson.dumps(
    {"error": "server_busy", "detail": "too many connections are open; retry shortly"}
)
_ANSWER = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: application/json\r\n"
    b"Content-Length: " + str(len(_BODY)).encode() + b"\r\n"
    b"Retry-After: " + str(_RETRY_AFTER_S).encode() + b"\r\n"
    b"Connection: close\r\n\r\n" + _BODY
)


class _Refused(asyncio.Protocol):
    """Answers 503 without reading anything, and closes."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport, whatever its class: uvloop's derive from no asyncio one.
        cast(asyncio.WriteTransport, transport).write(_ANSWER)
        transport.close()


class _CappedServer(web.Server):
    """aiohttp's connection factory, with a cap on the connections it has open or opening."""

    max_connections: int
    listener: str
    handler_class: type[web.RequestHandler]
    on_refused: Callable[[str], None]
    _last_logged: float
    _unlogged: int
    # Handlers made but not yet connected (the loop connects them a moment later, so a burst
    # would pass a cap that counted connected ones only), with when they were made.
    _arriving: dict[web.RequestHandler, float]

    def __call__(self) -> asyncio.Protocol:  # type: ignore[override]
        now = time.monotonic()
        for handler, made_at in list(self._arriving.items()):
            if now - made_at > _ARRIVAL_S:  # its connection failed before it was made
                del self._arriving[handler]
        if len(self._connections) + len(self._arriving) < self.max_connections:
            handler = super().__call__()
            handler.__class__ = self.handler_class  # a subclass of the same layout
            self._arriving[handler] = now
            return handler
        self.on_refused(self.listener)
        self._unlogged += 1
        now = time.monotonic()
        if now - self._last_logged >= _LOG_EVERY_S:  # one line per burst, not per connection
            log.warning(
                "connections_refused",
                listener=self.listener,
                count=self._unlogged,
                max_connections=self.max_connections,
            )
            self._last_logged, self._unlogged = now, 0
        return _Refused()

    def connection_made(self, handler: web.RequestHandler, transport: asyncio.Transport) -> None:
        self._arriving.pop(handler, None)
        super().connection_made(handler, transport)


def cap_connections(
    runner: web.AppRunner,
    *,
    listener: str,
    max_connections: int,
    on_refused: Callable[[str], None],
    handler_class: type[web.RequestHandler] = web.RequestHandler,
) -> None:
    """Cap ``runner``'s open connections (after ``setup()``, before its site starts). Each
    connection is served by a ``handler_class``: aiohttp's own, or a subclass of it that adds
    no state."""
    server = runner.server
    if server is None:
        raise RuntimeError("cap_connections needs a runner that is set up")
    # The runner built aiohttp's own Server; it becomes the capped kind, state and all.
    server.__class__ = _CappedServer
    capped: _CappedServer = server  # type: ignore[assignment]
    capped.max_connections = max_connections
    capped.listener = listener
    capped.on_refused = on_refused
    capped.handler_class = handler_class
    capped._last_logged = float("-inf")
    capped._unlogged = 0
    capped._arriving = {}
