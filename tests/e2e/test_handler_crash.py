"""The process dies inside a handler, before or after the handler's side effect (issue: "prove
it under crashes"): after a restart the job comes back once its lease runs out, with the same
idempotency key and the next attempt number, and the idempotent downstream ends with exactly one
effect per event."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.support.serve import ServeProcess, serve_env
from tests.support.sink import EVENTS, IdempotentSink, deliver_all, drained, until, worker_config


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("is_effect_first", [False, True], ids=["before-effect", "after-effect"])
async def test_a_kill_inside_the_handler_brings_the_job_back_with_the_same_key(
    tmp_path: Path, sink: IdempotentSink, is_effect_first: bool
) -> None:
    sink.is_effect_first = is_effect_first
    sink.delay_s = 30.0  # the first runs never answer: the kill lands inside them
    config = worker_config(tmp_path, sink.url, lease_s=2)
    db = tmp_path / "receiver.db"
    server = ServeProcess(config, serve_env(), tmp_path / "serve.log")
    try:
        await asyncio.to_thread(server.start)
        keys = await deliver_all(server)
        await until(lambda: sink.in_flight >= 2, timeout_s=20, what="handlers in flight")
        cut_off = {key for key, attempts in sink.attempts.items() if attempts == [1]}
        await asyncio.to_thread(server.kill)
        sink.delay_s = 0.0
        await asyncio.to_thread(server.start)
        await drained(db)
    finally:
        await asyncio.to_thread(server.kill)
    assert len(keys) == EVENTS
    assert cut_off, "some handler runs were under way when the process died"
    for key in cut_off:
        # Same key on the run that came back, one attempt later.
        assert sink.attempts[key][:2] == [1, 2], (key, sink.attempts[key])
    assert set(sink.effects) == set(keys)
    assert all(count == 1 for count in sink.effects.values()), sink.effects
