"""Claiming stays cheap as finished jobs pile up: they stay in ``jobs`` for the whole dedupe
window (weeks, millions of rows), so the claim query must never scan them."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from receiver.store import jobs
from receiver.store.sqlite import SqliteStore


async def test_the_claim_query_searches_indexes_and_scans_no_table(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "q.db")
    await store.open()
    await store.close()
    with sqlite3.connect(tmp_path / "q.db") as conn:
        conn.execute("ANALYZE")
        plan = [
            row[3]
            for row in conn.execute(
                "EXPLAIN QUERY PLAN " + jobs._CANDIDATES,
                {"provider": "p", "now": 1e10, "limit": 8},
            )
        ]
    searches = [step for step in plan if "jobs_provider_ready" in step]
    assert searches, plan
    # Narrowed by status too, not just by provider (which would walk every finished job).
    assert all("status=?" in step for step in searches), plan
    assert not [step for step in plan if step.startswith("SCAN j")], plan
