"""What a large body costs: the CPU of storing it, with the full-text index on and off
(``storage.search_index``), and after it is stored the WAL written by status changes and the
time of ``/admin/stats``' query, with bodies of a given size.

    python -m bench.large_bodies            # 5 000 events; 40 KB and 500-byte bodies

Run it from two checkouts to compare schemas (the events are stored through receiver's own
ingest writer, the status changes are the worker's statement, a commit each). The bodies are
JSON carrying words, as real payloads do (the index's cost grows with the words it indexes).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import sqlite3
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from receiver.models import NewEvent
from receiver.store.sqlite import SqliteStore

_STATUSES = ("processing", "retrying", "succeeded")


@dataclass(frozen=True, slots=True)
class Cost:
    body_bytes: int
    wal_bytes_per_change: float
    stats_ms_per_1000_events: float
    store_cpu_us_indexed: float  # CPU (all threads) per stored event, search index on
    store_cpu_us_unindexed: float  # and off


def _event(n: int, body: bytes, now: float) -> NewEvent:
    return NewEvent(
        provider="shop",
        key=f"shop:evt_{n}",
        provider_event_id=f"evt_{n}",
        event_type="order.created",
        body=body,
        headers={"content-type": "application/json"},
        content_type="application/json",
        fingerprint=hashlib.sha256(body).hexdigest(),
        received_at_s=now,
        payload_expires_at_s=now + 86_400,
        dedupe_expires_at_s=now + 86_400,
        has_handler=True,
    )


def _words(body_bytes: int) -> str:
    return " ".join(f"word{n % 5000}" for n in range(body_bytes // 8 + 1))[:body_bytes]


async def _store(store: SqliteStore, *, events: int, body_bytes: int) -> float:
    """Store ``events`` events, in group commits of 250; the CPU it took per event, in µs."""
    filler = _words(body_bytes)
    now = time.time()
    started = time.process_time()
    for start in range(0, events, 250):
        bodies = [
            (n, json.dumps({"n": n, "filler": filler}).encode())
            for n in range(start, min(start + 250, events))
        ]
        await asyncio.gather(*(store.record(_event(n, b, now)) for n, b in bodies))
    return (time.process_time() - started) / events * 1e6


async def _store_and_time_stats(
    path: Path, *, events: int, body_bytes: int, search_index: bool
) -> tuple[float, float]:
    """Store ``events`` events: the CPU per event in µs, and the mean time of the stats
    query in ms."""
    store = SqliteStore(path, clock=time.time, search_index=search_index)
    await store.open()
    try:
        cpu_us = await _store(store, events=events, body_bytes=body_bytes)
        await store.queries.stats()  # warm the page cache
        started = time.perf_counter()
        for _ in range(5):
            await store.queries.stats()
        return cpu_us, (time.perf_counter() - started) / 5 * 1000
    finally:
        await store.close()


def _wal_bytes_of_status_changes(path: Path, changes: int) -> int:
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        before = os.path.getsize(f"{path}-wal")
        for n in range(changes):
            conn.execute("UPDATE events SET status = ? WHERE id = ?", (_STATUSES[n % 3], 1 + n))
        return os.path.getsize(f"{path}-wal") - before


def measure(*, events: int, changes: int, body_bytes: int) -> Cost:
    with tempfile.TemporaryDirectory() as tmp:
        unindexed_us, _ = asyncio.run(
            _store_and_time_stats(
                Path(tmp) / "unindexed.db", events=events, body_bytes=body_bytes, search_index=False
            )
        )
        path = Path(tmp) / "receiver.db"
        indexed_us, stats_ms = asyncio.run(
            _store_and_time_stats(path, events=events, body_bytes=body_bytes, search_index=True)
        )
        wal = _wal_bytes_of_status_changes(path, min(changes, events))
    return Cost(
        body_bytes=body_bytes,
        wal_bytes_per_change=wal / min(changes, events),
        stats_ms_per_1000_events=stats_ms / events * 1000,
        store_cpu_us_indexed=indexed_us,
        store_cpu_us_unindexed=unindexed_us,
    )


def main(argv: Sequence[str] | None = None) -> list[Cost]:
    parser = argparse.ArgumentParser(prog="python -m bench.large_bodies")
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--changes", type=int, default=1000)
    parser.add_argument("--body-bytes", type=int, nargs="+", default=[40_000, 500])
    args = parser.parse_args(argv)
    costs = [
        measure(events=args.events, changes=args.changes, body_bytes=size)
        for size in args.body_bytes
    ]
    print(
        "| body bytes | store CPU per event, search index on / off"
        " | WAL per status change | /admin/stats per 1 000 events |"
    )
    print("| --- | --- | --- | --- |")
    for cost in costs:
        print(
            f"| {cost.body_bytes:,}"
            f" | {cost.store_cpu_us_indexed:.0f} / {cost.store_cpu_us_unindexed:.0f} µs"
            f" | {cost.wal_bytes_per_change / 1000:.1f} KB"
            f" | {cost.stats_ms_per_1000_events:.2f} ms |"
        )
    return costs


if __name__ == "__main__":
    main()
