"""The SIGKILL harness: stream deliveries at a real ``receiver serve``, kill it mid-stream,
restart, and check that every acknowledged event survived (DESIGN guarantee 1).

The harness reports what it found instead of asserting, so it can itself be tested against a
build that acknowledges before COMMIT (tests/support/broken_ack.py): there it must report
losses. ``CrashReport.assert_sound()`` is the verdict for a correct build.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp

from tests.support.factories import event_body, signed_headers
from tests.support.serve import ServeProcess

BROKEN_ACK_ARGV_PREFIX = (
    "-c",
    "import tests.support.broken_ack; from receiver.cli import main; raise SystemExit(main())",
)


def event_key(n: int) -> str:
    return f"sw:e{n}"


@dataclass
class CrashReport:
    """What the clients were told, and what the database holds after each kill."""

    acked: dict[int, str] = field(default_factory=dict)  # event n -> receiver id in the 2xx
    lost: set[int] = field(default_factory=set)  # acknowledged, then missing after a kill
    changed: set[int] = field(default_factory=set)  # acknowledged again under another id
    statuses: Counter[int] = field(default_factory=Counter)  # 0: no answer (connection died)
    problems: list[str] = field(default_factory=list)  # integrity or job-count violations
    cycles: int = 0
    deliveries: int = 0

    def record(self, n: int, status: int, answer: dict[str, str] | None) -> None:
        self.deliveries += 1
        self.statuses[status] += 1
        if status != 200 or answer is None:
            return
        previous = self.acked.setdefault(n, answer["id"])
        if previous != answer["id"]:
            self.changed.add(n)

    @property
    def server_errors(self) -> int:
        return sum(count for status, count in self.statuses.items() if status >= 500)

    def assert_sound(self) -> None:
        assert not self.problems, self.problems[:5]
        assert not self.lost, f"acknowledged but lost after SIGKILL: {sorted(self.lost)[:10]}"
        assert not self.changed, f"acknowledged under two ids: {sorted(self.changed)[:10]}"
        assert self.server_errors == 0, f"5xx answers: {self.statuses}"


async def deliver(
    session: aiohttp.ClientSession, url: str, n: int, *, age_s: float = 0.0
) -> tuple[int, dict[str, str] | None]:
    """POST event ``n``, signed at ``now - age_s`` (a retry carries a new timestamp)."""
    body = event_body(n)
    at = datetime.now(tz=UTC) - timedelta(seconds=age_s)
    headers = signed_headers(body, msg_id=f"e{n}", at=at)
    try:
        async with session.post(url, data=body, headers=headers) as resp:
            return resp.status, (await resp.json()) if resp.status == 200 else None
    except (TimeoutError, aiohttp.ClientError):
        return 0, None


def delivery_plan(
    new: range, *, redelivery_ratio: float, rng: random.Random
) -> list[tuple[int, float]]:
    """New events in order, each followed with probability ``redelivery_ratio`` by a
    redelivery of an earlier event (from any earlier cycle too), with a random age."""
    plan: list[tuple[int, float]] = []
    for n in new:
        plan.append((n, 0.0))
        if n and rng.random() < redelivery_ratio:
            plan.append((rng.randrange(n), rng.uniform(1, 120)))
    return plan


async def stream(
    url: str,
    plan: Sequence[tuple[int, float]],
    report: CrashReport,
    stop: asyncio.Event,
    *,
    clients: int = 1,
    concurrency: int = 16,
    timeout_s: float = 10.0,
) -> None:
    """Send the plan from ``clients`` sessions with ``concurrency`` requests each in flight."""
    queue: asyncio.Queue[tuple[int, float]] = asyncio.Queue()
    for item in plan:
        queue.put_nowait(item)

    async def client() -> None:
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as session:

            async def worker() -> None:
                while not stop.is_set() and not queue.empty():
                    n, age_s = queue.get_nowait()
                    status, answer = await deliver(session, url, n, age_s=age_s)
                    report.record(n, status, answer)

            await asyncio.gather(*(worker() for _ in range(concurrency)))

    await asyncio.gather(*(client() for _ in range(clients)))


def stored_events(db: Path, report: CrashReport | None = None) -> dict[str, int]:
    """Key -> id of every stored event; integrity and one-job-per-event problems go to
    ``report.problems`` (or raise AssertionError without a report)."""
    problems: list[str] = []
    with sqlite3.connect(db) as conn:
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
        if integrity != "ok":
            problems.append(f"integrity_check: {integrity}")
        events = dict(conn.execute("SELECT key, id FROM events").fetchall())
        jobs, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT event_id) FROM jobs"
        ).fetchone()
        orphans = conn.execute(
            "SELECT count(*) FROM events WHERE id NOT IN (SELECT event_id FROM jobs)"
        ).fetchone()[0]
    conn.close()
    if not jobs == distinct == len(events) or orphans:
        problems.append(
            f"{len(events)} events, {jobs} jobs for {distinct} events, {orphans} orphans"
        )
    if report is None:
        assert not problems, problems
    else:
        report.problems.extend(problems)
    return events


def check_acknowledged(db: Path, report: CrashReport) -> None:
    """Every acknowledged event must be stored under the id it was acknowledged with."""
    stored = stored_events(db, report)
    for n, event_id in report.acked.items():
        if str(stored.get(event_key(n))) != event_id:
            report.lost.add(n)


async def _wait_for_acks(
    report: CrashReport, target: int, task: asyncio.Task[None], *, deadline_s: float
) -> None:
    deadline = time.monotonic() + deadline_s
    while len(report.acked) < target and time.monotonic() < deadline and not task.done():
        await asyncio.sleep(0.005)


async def run_crash_cycles(
    server: ServeProcess,
    db: Path,
    *,
    cycles: int,
    events_per_cycle: int,
    kill_after_acks: tuple[int, int] = (50, 50),
    redelivery_ratio: float = 0.3,
    clients: int = 1,
    concurrency: int = 16,
    seed: int = 7,
    final_sample: int = 100,
) -> CrashReport:
    """Start, stream, SIGKILL once ``kill_after_acks`` (a random count in that range) new
    events were acknowledged in this cycle, check the store; ``cycles`` times. Then restart
    once more and redeliver a sample of acknowledged events: each must be a duplicate under
    its original id."""
    report = CrashReport()
    rng = random.Random(seed)
    try:
        for cycle in range(cycles):
            server.start()
            url = server.ingest_url + "/webhooks/sw"
            new = range(cycle * events_per_cycle, (cycle + 1) * events_per_cycle)
            plan = delivery_plan(new, redelivery_ratio=redelivery_ratio, rng=rng)
            stop = asyncio.Event()
            target = len(report.acked) + rng.randint(*kill_after_acks)
            task = asyncio.create_task(
                stream(url, plan, report, stop, clients=clients, concurrency=concurrency)
            )
            await _wait_for_acks(report, target, task, deadline_s=20)
            server.kill()  # with requests in flight: the stream has not finished
            stop.set()
            await task
            report.cycles += 1
            check_acknowledged(db, report)
        server.start()
        url = server.ingest_url + "/webhooks/sw"
        sample = rng.sample(sorted(report.acked), k=min(final_sample, len(report.acked)))
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            for n in sample:
                status, answer = await deliver(session, url, n, age_s=200)
                report.record(n, status, answer)
                if answer is None or answer["status"] != "duplicate":
                    report.lost.add(n)
    finally:
        server.kill()
    return report
