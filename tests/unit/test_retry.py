"""The retry policy, as a table: attempt + failure -> retry after N seconds, or dead."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from receiver.retry import (
    Dead,
    Decision,
    Failure,
    Retry,
    RetryPolicy,
    backoff_s,
    is_permanent_http_status,
    parse_retry_after,
)
from receiver.settings import WorkerSettings

NOW = 1_700_000_000.0
POLICY = RetryPolicy(max_attempts=5, backoff_base_s=2.0, backoff_max_s=60.0)


def _http_date(seconds_from_now: float) -> str:
    when = datetime.fromtimestamp(NOW, tz=UTC) + timedelta(seconds=seconds_from_now)
    return format_datetime(when, usegmt=True)


def fixed(value: float) -> Callable[[], float]:
    return lambda: value


@pytest.mark.parametrize(
    ("attempt", "failure", "random", "expected"),
    [
        # Exponential backoff with equal jitter: c = min(cap, base * 2 ** (n - 1)), and the
        # delay is c / 2 plus random() times c / 2.
        (1, Failure(error="boom"), 1.0, Retry(delay_s=2.0, error="boom")),
        (2, Failure(error="boom"), 1.0, Retry(delay_s=4.0, error="boom")),
        (3, Failure(error="boom"), 1.0, Retry(delay_s=8.0, error="boom")),
        (3, Failure(error="boom"), 0.5, Retry(delay_s=6.0, error="boom")),
        (3, Failure(error="boom"), 0.0, Retry(delay_s=4.0, error="boom")),
        # Doubling continues until the cap (see the backoff table below for the cap itself).
        (4, Failure(error="boom"), 1.0, Retry(delay_s=16.0, error="boom")),
        # The last attempt: dead, keeping the last error.
        (5, Failure(error="last one"), 1.0, Dead(error="last one", is_permanent=False)),
        (9, Failure(error="late"), 1.0, Dead(error="late", is_permanent=False)),
        # Permanent failures are dead at once, whatever the attempt.
        (1, Failure(error="bad", is_permanent=True), 1.0, Dead(error="bad", is_permanent=True)),
        (
            1,
            Failure(error="HTTP 400", http_status=400),
            1.0,
            Dead(error="HTTP 400", is_permanent=True),
        ),
        (
            1,
            Failure(error="HTTP 404", http_status=404),
            1.0,
            Dead(error="HTTP 404", is_permanent=True),
        ),
        (
            1,
            Failure(error="HTTP 422", http_status=422),
            1.0,
            Dead(error="HTTP 422", is_permanent=True),
        ),
        # 4xx that mean "later" are retried like 5xx.
        (1, Failure(error="HTTP 408", http_status=408), 1.0, Retry(delay_s=2.0, error="HTTP 408")),
        (1, Failure(error="HTTP 409", http_status=409), 1.0, Retry(delay_s=2.0, error="HTTP 409")),
        (1, Failure(error="HTTP 425", http_status=425), 1.0, Retry(delay_s=2.0, error="HTTP 425")),
        (2, Failure(error="HTTP 500", http_status=500), 0.25, Retry(delay_s=2.5, error="HTTP 500")),
        (1, Failure(error="HTTP 302", http_status=302), 1.0, Retry(delay_s=2.0, error="HTTP 302")),
        # Retry-After on 429/503, in seconds or as an HTTP date, bounded by the cap.
        (
            1,
            Failure(error="HTTP 429", http_status=429, retry_after="7"),
            1.0,
            Retry(delay_s=7.0, error="HTTP 429"),
        ),
        (
            2,
            Failure(error="HTTP 503", http_status=503, retry_after=_http_date(30)),
            1.0,
            Retry(delay_s=30.0, error="HTTP 503"),
        ),
        (
            1,
            Failure(error="HTTP 429", http_status=429, retry_after="86400"),
            1.0,
            Retry(delay_s=60.0, error="HTTP 429"),
        ),
        # Retry-After is a floor under the backoff, not the delay: a load balancer answering
        # "1" through a deploy must not spend every attempt in seconds.
        (
            4,
            Failure(error="HTTP 503", http_status=503, retry_after="1"),
            1.0,
            Retry(delay_s=16.0, error="HTTP 503"),
        ),
        (
            4,
            Failure(error="HTTP 429", http_status=429, retry_after="0"),
            0.5,
            Retry(delay_s=12.0, error="HTTP 429"),
        ),
        # A date in the past asks for nothing: the backoff.
        (
            1,
            Failure(error="HTTP 503", http_status=503, retry_after=_http_date(-30)),
            1.0,
            Retry(delay_s=2.0, error="HTTP 503"),
        ),
        # Unparsable Retry-After falls back to backoff.
        (
            1,
            Failure(error="HTTP 429", http_status=429, retry_after="soon"),
            1.0,
            Retry(delay_s=2.0, error="HTTP 429"),
        ),
        # Retry-After on other statuses is not a promise: backoff.
        (
            1,
            Failure(error="HTTP 500", http_status=500, retry_after="30"),
            1.0,
            Retry(delay_s=2.0, error="HTTP 500"),
        ),
        # Even with Retry-After, the last attempt is the last.
        (
            5,
            Failure(error="HTTP 429", http_status=429, retry_after="7"),
            1.0,
            Dead(error="HTTP 429", is_permanent=False),
        ),
    ],
)
def test_policy_decides(attempt: int, failure: Failure, random: float, expected: Decision) -> None:
    assert POLICY.decide(attempt=attempt, failure=failure, now_s=NOW, random=fixed(random)) == (
        expected
    )


@pytest.mark.parametrize(
    ("attempt", "random", "expected"),
    [
        (1, 1.0, 2.0),
        (5, 1.0, 32.0),
        (6, 1.0, 60.0),  # 64 > cap
        (50, 1.0, 60.0),
        (5000, 1.0, 60.0),  # no float overflow
        (6, 0.5, 45.0),
        (6, 0.0, 30.0),  # half of each delay is certain
        (0, 1.0, 2.0),  # attempt numbers start at 1; 0 is treated as 1
        (3, 1.5, 8.0),  # a random() outside [0, 1] is clamped
        (3, -1.0, 4.0),
    ],
)
def test_backoff_is_equal_jitter_under_a_cap(attempt: int, random: float, expected: float) -> None:
    assert backoff_s(attempt, base_s=2.0, max_s=60.0, random=fixed(random)) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", 0.0),
        ("120", 120.0),
        (" 15 ", 15.0),
        (_http_date(45), 45.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # long past
        ("-5", None),
        ("1.5", None),
        ("tomorrow", None),
        ("\u00b2", None),  # a digit to str.isdigit(), not to float(): was a crash
        ("\u0661\u0662", None),  # ARABIC-INDIC digits
        ("Mon, 01 Jan 2024 00:00:00 +99999999999999999999", None),  # was an OverflowError
        ("", None),
        (None, None),
    ],
)
def test_retry_after_parsing(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, now_s=NOW) == expected


@pytest.mark.parametrize(
    ("status", "is_permanent"),
    [
        (400, True),
        (401, True),
        (403, True),
        (404, True),
        (410, True),
        (422, True),
        (499, True),
        (408, False),
        (409, False),
        (425, False),
        (429, False),
        (500, False),
        (502, False),
        (503, False),
        (301, False),
    ],
)
def test_permanent_http_statuses(status: int, is_permanent: bool) -> None:
    assert is_permanent_http_status(status) is is_permanent


def test_the_default_schedule_outlasts_a_downstream_deploy() -> None:
    """README "Handlers": with the defaults an event is dead 43 to 85 minutes after its first
    failure. Full jitter from one second spent all ten attempts in at most 8.5 minutes (often
    far less), so a downstream's deploy buried every event that arrived during it."""
    defaults = WorkerSettings()
    spans = [
        sum(
            backoff_s(
                attempt,
                base_s=defaults.backoff_base_s,
                max_s=defaults.backoff_max_s,
                random=fixed(draw),
            )
            for attempt in range(1, defaults.max_attempts)
        )
        for draw in (0.0, 1.0)
    ]
    assert [round(span / 60) for span in spans] == [43, 85]
