"""Operator input for the store's reads: filter values arrive as text (query strings, CLI flags,
JSON) and are validated here once; a bad value raises :class:`InvalidParameter` naming the
parameter. Also the opaque keyset cursors and the ISO-8601 rendering of times.
"""

from __future__ import annotations

__all__ = [
    "Cursor",
    "EventFilter",
    "InvalidParameter",
    "decode_cursor",
    "encode_cursor",
    "iso_time",
    "parse_event_filter",
    "parse_limit",
    "parse_text",
    "parse_time",
]

import base64
import binascii
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from receiver.durations import parse_duration
from receiver.errors import ReceiverError
from receiver.models import EventStatus

_TEXT_LIMITS = {"provider": 64, "type": 200, "key": 600, "q": 500, "cause": 64}
_RELATIVE = re.compile(r"^\s*\d+(?:\.\d+)?\s*[smhdw]\s*$", re.ASCII)
_COMPACT_DATE = re.compile(r"^\s*\d{8}\s*$", re.ASCII)  # ISO-8601 basic: YYYYMMDD


class InvalidParameter(ReceiverError):
    """A filter or request value the operator got wrong; ``parameter`` names it."""

    code = "invalid_parameter"

    def __init__(self, parameter: str, detail: str) -> None:
        self.parameter = parameter
        self.detail = f"{parameter}: {detail}"
        super().__init__(self.detail)


def iso_time(ts_s: float | None) -> str | None:
    if ts_s is None:
        return None
    return (
        datetime.fromtimestamp(ts_s, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def parse_text(parameter: str, value: object) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidParameter(parameter, "must be a string")
    if not value.strip():
        raise InvalidParameter(parameter, "is blank")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidParameter(parameter, "is not valid UTF-8 text") from None
    if "\x00" in value:
        raise InvalidParameter(parameter, "contains a NUL character")
    limit = _TEXT_LIMITS.get(parameter, 500)
    if len(value) > limit:
        raise InvalidParameter(parameter, f"is longer than {limit} characters")
    return value


def parse_time(parameter: str, value: object, *, now_s: float) -> float | None:
    """ISO-8601 (UTC unless it says otherwise), Unix seconds, or a duration ago (``2h``)."""
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise InvalidParameter(parameter, "must be an ISO-8601 time or Unix seconds")
    if isinstance(value, str) and _RELATIVE.match(value):
        try:
            seconds: float = now_s - parse_duration(value)
        except ValueError:  # 0s: nothing ago
            raise InvalidParameter(
                parameter, "a duration ago must be more than zero (leave it out for now)"
            ) from None
    elif isinstance(value, str) and _COMPACT_DATE.match(value):
        seconds = _iso_seconds(parameter, value)  # 20240501 is a date, not 1970-08-23
    else:
        try:
            # ASCII only: float() also reads other scripts' digits (FULLWIDTH ONE as 1).
            if isinstance(value, str) and not value.isascii():
                raise ValueError(value)
            seconds = float(value)
        except OverflowError:  # a JSON integer of 400 digits: no float holds it
            raise InvalidParameter(parameter, "is out of range") from None
        except ValueError:
            seconds = _iso_seconds(parameter, str(value))
    if not math.isfinite(seconds) or not 0 <= seconds < 253402300800:  # up to year 9999
        raise InvalidParameter(parameter, "is out of range")
    return seconds


def _iso_seconds(parameter: str, value: str) -> float:
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise InvalidParameter(
            parameter,
            "must be an ISO-8601 time (2024-05-01T12:00:00Z), Unix seconds or a duration ago (2h)",
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def parse_limit(value: object, *, default: int, maximum: int, parameter: str = "limit") -> int:
    """A page size; values above ``maximum`` are capped, not refused."""
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise InvalidParameter(parameter, "must be a positive integer")
    if isinstance(value, str):
        digits = value.strip()
        if not (digits.isascii() and digits.isdigit()):  # isdigit() takes "²" too
            raise InvalidParameter(parameter, "must be a positive integer")
        # Past nine digits it is above any maximum: capped without making a huge int.
        value = int(digits) if len(digits) <= 9 else maximum
    if not isinstance(value, int) or value < 1:
        raise InvalidParameter(parameter, "must be a positive integer")
    return min(value, maximum)


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where the next page starts: below ``before_id`` (None: the first page), with times like
    ``since=2h`` resolved against the first page's clock (``now_s``), so a walk through the
    pages sees one window instead of one that slides while it walks."""

    before_id: int | None = None
    now_s: float | None = None

    def clock(self, now: Callable[[], float]) -> float:
        """The time relative filters are resolved against: the first page's, else ``now()``."""
        return self.now_s if self.now_s is not None else now()


def encode_cursor(kind: str, last_id: int, *, now_s: float) -> str:
    text = f"{kind}2:{last_id}:{round(now_s * 1000)}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(kind: str, value: object) -> Cursor:
    """The cursor a page continues from (an empty one for the first page)."""
    if value is None or value == "":
        return Cursor()
    if not isinstance(value, str) or len(value) > 80:
        raise InvalidParameter("cursor", "is not a cursor returned by this API")
    try:
        text = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        text = ""
    prefix, _, rest = text.partition(":")
    number, _, now_ms = rest.partition(":")
    is_v1 = prefix == f"{kind}1" and not now_ms  # from an earlier version: no clock
    is_v2 = prefix == f"{kind}2" and now_ms.isdigit() and len(now_ms) <= 15
    if not (is_v1 or is_v2) or not number.isdigit() or len(number) > 18:
        raise InvalidParameter("cursor", "is not a cursor returned by this API")
    return Cursor(int(number), int(now_ms) / 1000 if is_v2 else None)


@dataclass(frozen=True, slots=True, kw_only=True)
class EventFilter:
    provider: str | None = None
    status: str | None = None
    event_type: str | None = None
    key: str | None = None
    since_s: float | None = None
    until_s: float | None = None
    text: str | None = None

    @property
    def is_empty(self) -> bool:
        return self == EventFilter()


def parse_event_filter(params: Mapping[str, object], *, now_s: float) -> EventFilter:
    status = parse_text("status", params.get("status"))
    if status is not None and status not in {s.value for s in EventStatus}:
        known = ", ".join(s.value for s in EventStatus)
        raise InvalidParameter("status", f"must be one of: {known}")
    since = parse_time("since", params.get("since"), now_s=now_s)
    until = parse_time("until", params.get("until"), now_s=now_s)
    if since is not None and until is not None and until < since:
        raise InvalidParameter("until", "is earlier than since")
    return EventFilter(
        provider=parse_text("provider", params.get("provider")),
        status=status,
        event_type=parse_text("type", params.get("type")),
        key=parse_text("key", params.get("key")),
        since_s=since,
        until_s=until,
        text=parse_text("q", params.get("q")),
    )
