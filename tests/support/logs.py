"""Logs as ``receiver serve`` writes them, captured in a buffer instead of stdout."""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from receiver.logs import configure_logging, reset_logging


@contextmanager
def json_logs(monkeypatch: pytest.MonkeyPatch, level: str = "info") -> Iterator[io.StringIO]:
    """Structlog configured for JSON at ``level``, writing to the returned buffer (the logger
    factory binds the stream at configure time, so stdout is swapped first); reset afterwards."""
    buffer = io.StringIO()
    monkeypatch.setattr(sys, "stdout", buffer)
    configure_logging(level, "json")
    try:
        yield buffer
    finally:
        reset_logging()
