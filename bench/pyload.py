"""A small aiohttp load generator with wrk's output, for the tiny mode (tests, no wrk needed).

It reads the same per-thread request slices as bench/load.lua and prints the same
``BENCH_JSON {...}`` line. It is much slower than wrk: use it to exercise the harness, not to
measure it.

    python -m bench.pyload --url http://127.0.0.1:PORT/webhooks/bench --reqs PREFIX \
        --threads 2 --connections 8 --duration 1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import aiohttp


class _Slice:
    def __init__(self, path: Path) -> None:
        self.items: list[tuple[dict[str, str], bytes]] = []
        for line in path.read_text(encoding="utf-8").splitlines():
            event_id, ts, sig, body = line.split("\t", 3)
            headers = {
                "Content-Type": "application/json",
                "webhook-id": event_id,
                "webhook-timestamp": ts,
                "webhook-signature": sig,
            }
            self.items.append((headers, body.encode()))
        if not self.items:
            raise SystemExit(f"empty request slice {path}")
        self.next = 0
        self.wraps = 0

    def take(self) -> tuple[dict[str, str], bytes]:
        if self.next >= len(self.items):
            self.next = 0
            self.wraps += 1
        item = self.items[self.next]
        self.next += 1
        return item


def _percentile(sorted_ms: list[float], p: float) -> float:
    if not sorted_ms:
        return 0.0
    index = min(len(sorted_ms) - 1, max(0, round(p / 100 * len(sorted_ms)) - 1))
    return sorted_ms[index]


async def run(
    url: str, prefix: Path, threads: int, connections: int, duration_s: float, timeout_s: float
) -> dict[str, object]:
    slices = [_Slice(prefix.with_name(f"{prefix.name}.{t}.tsv")) for t in range(threads)]
    latencies: list[float] = []
    errors = {"connect": 0, "read": 0, "write": 0, "status": 0, "timeout": 0}
    started = time.perf_counter()
    deadline = started + duration_s

    async def worker(session: aiohttp.ClientSession, piece: _Slice) -> None:
        while time.perf_counter() < deadline:
            headers, body = piece.take()
            t0 = time.perf_counter()
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    if response.status >= 400:
                        errors["status"] += 1
            except TimeoutError:
                errors["timeout"] += 1
                continue
            except aiohttp.ClientConnectionError:
                errors["connect"] += 1
                await asyncio.sleep(0.01)
                continue
            latencies.append((time.perf_counter() - t0) * 1000)

    connector = aiohttp.TCPConnector(limit=connections, force_close=False)
    client_timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=client_timeout) as session:
        await asyncio.gather(*(worker(session, slices[c % threads]) for c in range(connections)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "requests": len(latencies) + errors["status"],
        "duration_s": elapsed,
        "errors": errors,
        "wraps": sum(s.wraps for s in slices),
        "latency_ms": {
            "p50": _percentile(latencies, 50),
            "p90": _percentile(latencies, 90),
            "p99": _percentile(latencies, 99),
            "p999": _percentile(latencies, 99.9),
            "max": latencies[-1] if latencies else 0.0,
            "mean": sum(latencies) / len(latencies) if latencies else 0.0,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--reqs", required=True, type=Path, help="request slice prefix")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--duration", type=float, default=1.0)
    parser.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args()
    result = asyncio.run(
        run(args.url, args.reqs, args.threads, args.connections, args.duration, args.timeout)
    )
    print("BENCH_JSON " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
