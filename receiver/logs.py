"""Logging, configured once: structlog, JSON when stdout is not a terminal.

Event names are stable snake_case (``event_accepted``, ``signature_rejected``, …). Nothing here
ever receives a secret, a signature or a body: callers log ``body_bytes`` and a short hash.
"""

from __future__ import annotations

__all__ = ["configure_logging", "dropped_lines", "reset_logging", "unfiltered_logger"]

import json
import logging
import re
import sys
import time
from collections.abc import MutableMapping
from typing import Any, Literal, TextIO

import orjson
import structlog

from receiver.text import SHOWN_AS_ESCAPES, printable

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


# What a terminal acts on (a ``tail -f`` of the log) that JSON leaves raw (orjson escapes only
# the C0 controls): DEL, the C1 controls, the line separators and the bidirectional controls.
_RAW_IN_JSON = re.compile(f"[{SHOWN_AS_ESCAPES}]")


def _dumps(event: object, **_: object) -> str:
    """orjson on the hot path (a log line per request); the standard library for what orjson
    refuses (text carrying undecodable bytes as surrogates), so a log line never raises."""
    try:
        text = orjson.dumps(event, default=str).decode("utf-8")
    except (TypeError, orjson.JSONEncodeError):
        return json.dumps(event, default=str)  # ASCII only: everything escaped
    # ASCII (almost every line) is checked in C at once; the search only for the rest.
    if not text.isascii() and _RAW_IN_JSON.search(text):
        text = _RAW_IN_JSON.sub(lambda m: f"\\u{ord(m.group(0)):04x}", text)
    return text


class _UtcTimestamp:
    """``timestamp``: ISO 8601 UTC with microseconds, as structlog's ``TimeStamper(fmt="iso",
    utc=True)`` writes it, with the date and time formatted once per second (there is a log line
    per request)."""

    __slots__ = ("_prefix", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(
        self, logger: object, method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        micros = min(round((now - second) * 1_000_000), 999_999)
        event_dict["timestamp"] = f"{self._prefix}.{micros:06d}Z"
        return event_dict


def _printable(
    logger: object, method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Console lines only (JSON escapes these itself): text a caller controls (an unknown
    provider's name from the URL) is shown escaped, so it cannot move the cursor, erase the
    line before it, or write a forged one over it on the operator's terminal."""
    for name, value in event_dict.items():
        if isinstance(value, str):
            event_dict[name] = printable(value, keep_layout=name == "exception")
    return event_dict


class _Output(structlog.PrintLogger):
    """A line that cannot be written (stdout on a full disk, a closed pipe) is dropped and
    counted, never raised: it used to fail the request that logged it, so a full log volume
    left every delivery unanswered (and aiohttp's own report of that failed the same way)."""

    dropped = 0  # lines dropped since start, for ``receiver_log_lines_dropped_total``

    def msg(self, message: str) -> None:
        # To the stream bound at configuration, always: structlog's own writes to whatever
        # ``sys.stdout`` is now when it was bound to stdout, which ``receiver.printed`` makes
        # a stream that logs (and so writes here again).
        try:
            with self._lock:
                self._file.write(message + "\n")
                self._file.flush()
        except (OSError, ValueError):  # ValueError: the stream was closed
            _Output.dropped += 1

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


class _OutputFactory:
    """Like ``structlog.PrintLoggerFactory``: the stream is bound now, a logger's name ignored."""

    def __init__(self, file: TextIO) -> None:
        self._file = file

    def __call__(self, *_: object) -> _Output:
        return _Output(self._file)


def dropped_lines() -> int:
    """How many log lines could not be written since start."""
    return _Output.dropped


def configure_logging(
    level: str = "info", fmt: Literal["auto", "json", "console"] = "auto"
) -> bool:
    """Configure structlog (and route the standard library's logging through it); whether the
    lines are JSON."""
    is_json = fmt == "json" or (fmt == "auto" and not sys.stdout.isatty())
    render: list[structlog.typing.Processor] = (
        [structlog.processors.JSONRenderer(serializer=_dumps)]
        if is_json
        else [_printable, structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty())]
    )
    numeric_level = _LEVELS.get(level, logging.INFO)
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            _UtcTimestamp(),
            structlog.processors.format_exc_info,
            *render,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=_OutputFactory(sys.stdout),
        cache_logger_on_first_use=False,
    )
    _route_stdlib_logging(numeric_level, render)
    # aiohttp's access log duplicates our canonical request line.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # aiosqlite logs every statement with its parameters (bodies, headers) at DEBUG: never that.
    logging.getLogger("aiosqlite").setLevel(logging.INFO)
    return is_json


class _StdlibLines(logging.Handler):
    """Records of the standard library's ``logging`` (a python handler's
    ``logging.getLogger(__name__)``, a library's warning, asyncio's "Task exception was never
    retrieved") as lines of this log, in its format, on its stream, instead of bare text on
    stderr or nothing at all."""

    def __init__(self, level: int, render: list[structlog.typing.Processor]) -> None:
        super().__init__(level)
        self.setFormatter(
            structlog.stdlib.ProcessorFormatter(
                foreign_pre_chain=[
                    structlog.stdlib.add_logger_name,
                    structlog.processors.add_log_level,
                    _UtcTimestamp(),
                    structlog.processors.format_exc_info,
                ],
                processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *render],
            )
        )
        self._output = _Output(sys.stdout)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # a record whose arguments do not fit its message: the library's bug
            line = f"{record.name}: {record.msg!r} (a log record that could not be formatted)"
        self._output.msg(line)


def _route_stdlib_logging(level: int, render: list[structlog.typing.Processor]) -> None:
    _unroute_stdlib_logging()  # configured again (a test): one handler, on the new stream
    root = logging.getLogger()
    root.addHandler(_StdlibLines(level, render))
    root.setLevel(level)


def _unroute_stdlib_logging() -> None:
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _StdlibLines)]:
        root.removeHandler(handler)


def reset_logging() -> None:
    """Undo :func:`configure_logging` (tests): structlog's defaults, the root logger's own."""
    structlog.reset_defaults()
    _unroute_stdlib_logging()
    logging.getLogger().setLevel(logging.WARNING)


def unfiltered_logger(name: str) -> Any:
    """A logger that ignores the configured level, for the few lines an operator must see at
    every start whatever it is (a provider whose deliveries are not verified)."""
    return structlog.wrap_logger(
        None,
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        logger_factory_args=(name,),
    )
