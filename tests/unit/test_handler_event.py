"""The event a python handler gets, as a test of that handler builds it."""

from __future__ import annotations

import dataclasses

import pytest

import receiver


def test_a_handlers_test_builds_the_event_a_real_run_gives() -> None:
    """``HandlerEvent`` was not exported, needed all nine fields, and took plain headers as
    they were: ``headers.get("x-a")`` missed ``X-A`` in a test while a real run found it."""
    event = receiver.HandlerEvent(
        id=1, key="stripe:evt_1", provider="stripe", body=b'{"id": "evt_1"}', headers={"X-A": "1"}
    )
    assert (event.headers["x-a"], event.headers.get("X-A")) == ("1", "1")
    assert event.json == {"id": "evt_1"}
    assert (event.type, event.attempt, event.is_replay, event.content_type) == (
        None,
        1,
        False,
        None,
    )
    with pytest.raises(TypeError):
        event.headers["X-B"] = "2"  # type: ignore[index]  # read-only, as in a real run
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.key = "other"  # type: ignore[misc]
