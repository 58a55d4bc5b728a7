"""The log line's shape: what log shippers parse."""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import structlog

from receiver.logs import _UtcTimestamp
from tests.support.logs import json_logs


@pytest.fixture
def stdout(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    with json_logs(monkeypatch, "info") as buffer:
        yield buffer


def test_a_json_line_has_level_event_and_a_utc_iso_timestamp(stdout: io.StringIO) -> None:
    before = datetime.now(UTC)
    structlog.get_logger("t").info("event_accepted", key="p:1", status=200)
    after = datetime.now(UTC)
    line = json.loads(stdout.getvalue())
    assert line["event"] == "event_accepted"
    assert line["level"] == "info"
    assert (line["key"], line["status"]) == ("p:1", 200)
    stamp = line["timestamp"]
    assert stamp.endswith("Z")
    moment = datetime.fromisoformat(stamp.removesuffix("Z") + "+00:00")
    assert before.replace(microsecond=0) <= moment <= after


def test_debug_lines_are_dropped_at_info(stdout: io.StringIO) -> None:
    structlog.get_logger("t").debug("noise")
    assert stdout.getvalue() == ""


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (1_700_000_000.0, "2023-11-14T22:13:20.000000Z"),
        (1_700_000_000.25, "2023-11-14T22:13:20.250000Z"),
        (1_700_000_001.000001, "2023-11-14T22:13:21.000001Z"),  # the next second: new prefix
        (1_700_000_000.999999, "2023-11-14T22:13:20.999999Z"),  # and back: recomputed again
    ],
)
def test_the_timestamp_matches_the_standard_library_to_the_microsecond(
    monkeypatch: pytest.MonkeyPatch, now: float, expected: str
) -> None:
    stamper = _UtcTimestamp()
    stamper(None, "info", {})  # a cached second from "now" must not leak into the next call
    monkeypatch.setattr("receiver.logs.time.time", lambda: now)
    stamp = stamper(None, "info", {})["timestamp"]
    assert stamp == expected
    assert stamp == datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_a_console_line_shows_control_characters_escaped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An unknown provider's name comes from the URL: raw, ESC sequences in it erased the line
    on the operator's terminal and wrote a forged one in its place."""
    import sys

    from receiver.logs import configure_logging, reset_logging

    buffer = io.StringIO()
    monkeypatch.setattr(sys, "stdout", buffer)
    configure_logging("info", "console")
    try:
        # No ASCII space, "=" or quote: the renderer would quote (and so escape) the value.
        forged = "\x1b[2K\x1b[G[info]\xa0event_accepted\u2028\x1b[8m"
        structlog.get_logger("t").info("request_rejected", provider=forged)
        try:
            raise ValueError("boom")
        except ValueError:
            structlog.get_logger("t").exception("unhandled_error")
    finally:
        reset_logging()
    text = buffer.getvalue()
    assert "\x1b" not in text and "\u2028" not in text
    assert "x1b[2K" in text  # shown, escaped
    assert "Traceback (most recent call last):\n" in text  # a traceback keeps its lines


def test_a_json_line_escapes_what_a_terminal_would_act_on(stdout: io.StringIO) -> None:
    """orjson escapes only C0 controls: a C1 CSI or U+2028 from an unknown provider's name
    reached the log file raw, for a ``tail -f`` to act on."""
    name = "x\x9b2K\u2028y\x7f\u202egnp.exe"  # and a right-to-left override
    structlog.get_logger("t").info("request_rejected", provider=name)
    line = stdout.getvalue()
    assert not any(c in line for c in "\x9b\u2028\x7f\u202e")
    assert json.loads(line)["provider"] == name  # the same text, escaped


def test_the_standard_librarys_logging_becomes_lines_of_this_log(stdout: io.StringIO) -> None:
    """A python handler's ``logging.getLogger(__name__).info`` was dropped, its warnings went
    to stderr as bare text, and asyncio's "Task exception was never retrieved" too."""
    import logging

    mine = logging.getLogger("myapp.hooks")
    mine.debug("dropped at info")
    mine.info("charged %s", "cus_1")
    try:
        raise ValueError("boom")
    except ValueError:
        mine.exception("could not charge")
    lines = [json.loads(line) for line in stdout.getvalue().splitlines()]
    assert [(line["event"], line["level"], line["logger"]) for line in lines] == [
        ("charged cus_1", "info", "myapp.hooks"),
        ("could not charge", "error", "myapp.hooks"),
    ]
    assert "ValueError: boom" in lines[1]["exception"] and lines[1]["timestamp"].endswith("Z")


def test_printed_lines_are_logged_whole_per_thread_and_cut_when_too_long() -> None:
    import threading

    from receiver.printed import PrintedLines

    class Log:
        def __init__(self) -> None:
            self.lines: list[str] = []

        def info(self, event: str, *, text: str) -> None:
            assert event == "printed"
            self.lines.append(text)

    log = Log()
    stream = PrintedLines(log, sys.__stdout__)  # type: ignore[arg-type]
    stream.write("from the loop, ")
    other = threading.Thread(target=lambda: stream.write("from a thread\n"))
    other.start()
    other.join()
    stream.flush()  # nothing yet: the line has not ended
    stream.write("in two pieces\r\n\n" + "x" * 5000 + "\n")
    assert log.lines == ["from a thread", "from the loop, in two pieces", "x" * 4000]
    stream.write("y" * 3000)
    stream.write("z" * 3000)  # still no end: the line so far is cut as a whole one would be
    stream.write("\n")
    assert log.lines[-1] == "y" * 3000 + "z" * 1000
