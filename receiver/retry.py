"""The retry policy: pure functions from an attempt's outcome to "retry in N seconds" or "dead".

Nothing here does I/O or reads the time: the caller passes ``now_s`` and a ``random`` function
(``random.random`` in production, a fixed value in tests), so the whole policy is table-tested.

- Exponential backoff with "equal jitter": the delay before attempt ``n + 1`` is uniform in
  ``[c / 2, c]`` with ``c = min(backoff_max_s, backoff_base_s * 2 ** (n - 1))``. Half of each
  delay is certain, so the attempts always span at least half the schedule: with full jitter
  (``[0, c]``) a run of short draws spent every attempt of an event within a downstream's
  five-minute deploy.
- ``Retry-After`` (delta seconds or an HTTP date) on a 429 or 503 is a floor, not the delay:
  the retry waits for the longer of it and the backoff. A load balancer answering
  ``Retry-After: 1`` through a deploy must not spend every attempt in ten seconds.
  ``backoff_max_s`` still bounds it, so one answer cannot park an event for a year.
- Permanent failures (HTTP 4xx other than 408, 409, 425, 429; a command's exit code listed in
  ``permanent_exit_codes``; a python handler raising ``PermanentError``) are dead at once.
- After the last attempt the event is dead, keeping the last error.
"""

from __future__ import annotations

__all__ = [
    "Dead",
    "Decision",
    "Failure",
    "Retry",
    "RetryPolicy",
    "backoff_s",
    "is_permanent_http_status",
    "parse_retry_after",
]

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime

# 4xx answers that say "try again later" rather than "this request is wrong".
_RETRYABLE_4XX = frozenset({408, 409, 425, 429})
_RETRY_AFTER_STATUSES = frozenset({429, 503})


@dataclass(frozen=True, slots=True, kw_only=True)
class Failure:
    """Why an attempt failed, as far as the policy cares."""

    error: str
    is_permanent: bool = False
    http_status: int | None = None
    retry_after: str | None = None  # the raw header value, parsed by the policy


@dataclass(frozen=True, slots=True, kw_only=True)
class Retry:
    delay_s: float
    error: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Dead:
    error: str
    is_permanent: bool


Decision = Retry | Dead


def is_permanent_http_status(status: int) -> bool:
    """A 4xx that retrying cannot fix. 5xx, 3xx and the "later" 4xx codes are retried."""
    return 400 <= status < 500 and status not in _RETRYABLE_4XX


def parse_retry_after(value: str | None, *, now_s: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta seconds or HTTP date), or None."""
    if value is None:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():  # isdigit() alone also takes "²", which float() refuses
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):  # a zone of 20 digits overflows
        return None
    if when.tzinfo is None:  # "-0000" parses naive; an HTTP date is always GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now_s)


def backoff_s(attempt: int, *, base_s: float, max_s: float, random: Callable[[], float]) -> float:
    """Equal jitter: uniform in [c / 2, c], c = min(max_s, base_s * 2 ** (attempt - 1))."""
    exponent = max(0, attempt - 1)
    # 2 ** 1100 overflows a float; anything past the cap is the cap anyway.
    ceiling = max_s if exponent >= 1000 else min(max_s, base_s * math.pow(2.0, exponent))
    return ceiling * (1.0 + min(1.0, max(0.0, random()))) / 2


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    max_attempts: int
    backoff_base_s: float
    backoff_max_s: float

    def decide(
        self, *, attempt: int, failure: Failure, now_s: float, random: Callable[[], float]
    ) -> Decision:
        """What to do after attempt number ``attempt`` (1-based) failed with ``failure``."""
        is_permanent = failure.is_permanent or (
            failure.http_status is not None and is_permanent_http_status(failure.http_status)
        )
        if is_permanent:
            return Dead(error=failure.error, is_permanent=True)
        if attempt >= self.max_attempts:
            return Dead(error=failure.error, is_permanent=False)
        waited = (
            parse_retry_after(failure.retry_after, now_s=now_s)
            if failure.http_status in _RETRY_AFTER_STATUSES
            else None
        )
        delay = backoff_s(
            attempt, base_s=self.backoff_base_s, max_s=self.backoff_max_s, random=random
        )
        if waited is not None:
            delay = min(max(waited, delay), self.backoff_max_s)
        return Retry(delay_s=delay, error=failure.error)
