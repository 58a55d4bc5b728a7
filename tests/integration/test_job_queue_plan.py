"""Claiming stays cheap as finished jobs pile up: they stay in ``jobs`` for the whole dedupe
window (weeks, millions of rows), so the claim query must never scan them."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from receiver.store import jobs
from receiver.store.migrations import SCHEMA_VERSION, migrations, split_sql
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


async def test_queue_depth_and_wakeup_queries_search_the_provider_index(tmp_path: Path) -> None:
    """The worker's periodic reads (queue depth, next wake-up) are the real statements, traced
    as they run: each searches ``jobs_provider_ready`` by provider and status."""
    store = SqliteStore(tmp_path / "q.db")
    await store.open()
    traced: list[str] = []
    reader = store.db._reader
    assert reader is not None
    await reader._execute(reader._conn.set_trace_callback, traced.append)
    try:
        queue = jobs.JobQueue(store.db)
        await queue.stats(["a", "b"], now=1e9)
        await queue.next_change_at(["a", "b"], now=1e9)
    finally:
        await reader._execute(reader._conn.set_trace_callback, None)
        await store.close()
    statements = [sql for sql in traced if "FROM jobs" in sql]
    assert len(statements) == 2, traced
    with sqlite3.connect(tmp_path / "q.db") as conn:
        conn.execute("ANALYZE")
        for sql in statements:
            plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql)]
            reads = [step for step in plan if " jobs " in f" {step} "]
            assert reads, plan
            assert all("jobs_provider_ready (provider=? AND status=?)" in s for s in reads), plan
        # The depth count reads every waiting job: from the index alone, not their rows too
        # (the oldest unfinished age's column is in the index for it).
        (count, _) = statements
        plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + count)]
        assert all("COVERING INDEX" in step for step in plan if " jobs " in f" {step} "), plan


async def test_a_version_2_database_loses_the_redundant_ready_index(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    with sqlite3.connect(path, isolation_level=None) as conn:
        for version in (1, 2):
            for statement in split_sql(migrations()[version]):
                conn.execute(statement)
        conn.execute("PRAGMA user_version = 2")
    store = SqliteStore(path)
    await store.open()
    await store.close()
    with sqlite3.connect(path) as conn:
        indexes = {row[0] for row in conn.execute("SELECT name FROM pragma_index_list('jobs')")}
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    assert version == SCHEMA_VERSION == 7
    assert "jobs_ready" not in indexes
    assert "jobs_provider_ready" in indexes
