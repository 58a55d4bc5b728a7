"""Hundreds of IDs, each redelivered by tens of simultaneous copies, as real retries are (each
with its own timestamp, so its own signature): one event and one job per ID, no 5xx
(DESIGN guarantee 2)."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.integration.conftest import Harness
from tests.support.factories import event_body, signed_headers


async def _deliver_copies(harness: Harness, *, ids: int, copies: int, seed: int) -> list[Any]:
    now = datetime.now(tz=UTC)
    deliveries: list[tuple[int, bytes, dict[str, str]]] = []
    for n in range(ids):
        body = event_body(n)
        for copy in range(copies):
            at = now - timedelta(seconds=copy * 7)  # retries are signed at different times
            deliveries.append((n, body, signed_headers(body, msg_id=f"cr{n}", at=at)))
    random.Random(seed).shuffle(deliveries)

    async def post(n: int, body: bytes, headers: dict[str, str]) -> tuple[int, int, Any]:
        resp = await harness.post("sw", body, headers)
        return n, resp.status, (await resp.json())

    return await asyncio.gather(*(post(*d) for d in deliveries))


def _table(harness: Harness) -> tuple[dict[str, tuple[int, int]], int, int]:
    with sqlite3.connect(harness.receiver.config.settings.storage.path) as conn:
        events = {
            key: (event_id, dups)
            for key, event_id, dups in conn.execute("SELECT key, id, duplicate_count FROM events")
        }
        jobs, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT event_id) FROM jobs"
        ).fetchone()
    conn.close()
    return events, jobs, distinct


@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    ("ids", "copies", "batch_max"),
    [
        pytest.param(200, 20, 256, id="200x20-default-batches"),
        # Tiny group commits: copies of one ID land in many different transactions.
        pytest.param(60, 20, 3, id="60x20-batches-of-3"),
    ],
)
async def test_simultaneous_copies_make_one_event_and_one_job_per_id(
    make_harness: Any, ids: int, copies: int, batch_max: int
) -> None:
    harness: Harness = await make_harness(storage={"batch_max": batch_max})
    results = await _deliver_copies(harness, ids=ids, copies=copies, seed=ids)

    assert {status for _, status, _ in results} == {200}
    by_id: dict[int, list[dict[str, str]]] = defaultdict(list)
    for n, _, answer in results:
        by_id[n].append(answer)
    assert len(by_id) == ids
    for n, answers in by_id.items():
        statuses = [a["status"] for a in answers]
        assert statuses.count("accepted") == 1, (n, statuses)
        assert statuses.count("duplicate") == copies - 1
        assert len({a["id"] for a in answers}) == 1
        assert {a["key"] for a in answers} == {f"sw:cr{n}"}

    # Counts of duplicates answered from memory are written just after: wait for them.
    await harness.receiver.store.writer.settle()
    events, jobs, distinct = _table(harness)
    assert len(events) == ids
    assert jobs == distinct == ids
    for n, answers in by_id.items():
        event_id, duplicate_count = events[f"sw:cr{n}"]
        assert str(event_id) == answers[0]["id"]
        assert duplicate_count == copies - 1
