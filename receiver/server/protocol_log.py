"""What aiohttp itself logs about the connections it serves, made fit for our logs.

aiohttp answers malformed HTTP (a bad header line, a header over 8 KiB, a broken chunk) before
any route runs, and reports it on the stdlib logger ``aiohttp.server`` as an error with a
traceback whose message repeats the raw bytes: header values (signatures included) or the start
of a body. Anyone can send that, as often as they like. Such reports become one ``info`` line
naming only the error's class and status, as does a client that hung up mid-answer; anything
else on that logger is a real server fault and stays an error, traceback included.
"""

from __future__ import annotations

__all__ = ["route_aiohttp_server_log"]

import logging
from collections.abc import Callable

import structlog
from aiohttp.http_exceptions import HttpProcessingError

_AIOHTTP_SERVER = "aiohttp.server"

log = structlog.get_logger("receiver.http")


class _ServerLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        # Told of each malformed request (the metrics' counter): a log line alone is no alert.
        self.on_protocol_error: Callable[[], None] | None = None

    def emit(self, record: logging.LogRecord) -> None:
        exc = record.exc_info[1] if record.exc_info else None
        args = record.args if isinstance(record.args, tuple) else ()
        remote = args[0] if len(args) == 1 and isinstance(args[0], str) else None
        if isinstance(exc, HttpProcessingError):
            if self.on_protocol_error is not None:
                self.on_protocol_error()
            log.info(
                "http_protocol_error", error=type(exc).__name__, status=exc.code, remote=remote
            )
            return
        if isinstance(exc, ConnectionError):  # the client hung up: no fault of the server's
            log.info("client_disconnected", error=type(exc).__name__, remote=remote)
            return
        log.error("http_server_error", message=record.getMessage()[:200], exc_info=record.exc_info)


def route_aiohttp_server_log(on_protocol_error: Callable[[], None] | None = None) -> None:
    """Send ``aiohttp.server`` records through :class:`_ServerLog` only (idempotent), telling
    ``on_protocol_error`` of each malformed request."""
    logger = logging.getLogger(_AIOHTTP_SERVER)
    handler = next((h for h in logger.handlers if isinstance(h, _ServerLog)), None)
    if handler is None:
        handler = _ServerLog()
        logger.addHandler(handler)
    handler.on_protocol_error = on_protocol_error
    logger.propagate = False
