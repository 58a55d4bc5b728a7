"""While ``receiver serve`` writes JSON lines to stdout, what other code prints there (a
``python`` handler's ``print()``, a library's) becomes log lines too, ``printed`` with its text,
instead of raw text among them that a log collector cannot parse. A ``command`` handler's
stdout is not the process's (it is discarded), and stderr is left as it is."""

from __future__ import annotations

__all__ = ["PrintedLines", "capture_prints"]

import io
import sys
import threading
from typing import Any, TextIO

import structlog

# The longest printed line kept whole; the rest of a longer one is cut.
_MAX_LINE_CHARS = 4000


class PrintedLines(io.TextIOBase):
    """A text stream whose every line is logged (each thread's partial line kept apart, so
    prints from a handler's thread and the event loop never mix)."""

    def __init__(self, log: Any, original: TextIO) -> None:
        self._log = log
        self._original = original  # for fileno(): a child process given "our stdout"
        self._partial = threading.local()

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def fileno(self) -> int:
        return self._original.fileno()

    def write(self, text: str) -> int:
        pending = getattr(self._partial, "text", "") + text
        *lines, rest = pending.split("\n")
        self._partial.text = rest[:_MAX_LINE_CHARS]  # a line's start is kept, as when whole
        for line in lines:
            self._emit(line)
        return len(text)

    def flush(self) -> None:
        """Nothing: a line is logged whole, when its end comes (``print(x, end="",
        flush=True)`` then ``print(y)`` is one line, as a terminal would show it)."""

    def _emit(self, line: str) -> None:
        line = line.rstrip("\r")
        if line:
            self._log.info("printed", text=line[:_MAX_LINE_CHARS])


def capture_prints() -> None:
    """Make ``sys.stdout`` a :class:`PrintedLines` (after logging is configured: the log's own
    lines keep the stream they were bound to)."""
    if not isinstance(sys.stdout, PrintedLines):
        sys.stdout = PrintedLines(structlog.get_logger("receiver.printed"), sys.stdout)
