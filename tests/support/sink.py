"""An idempotent downstream for handler tests, and helpers that watch a live database."""

from __future__ import annotations

import asyncio
import sqlite3
from collections import Counter
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from tests.support.factories import SECRET_ENV, event_body, signed_headers
from tests.support.serve import ServeProcess, serve_config

EVENTS = 12


@dataclass
class IdempotentSink:
    """Applies an effect the first time it sees an ``Idempotency-Key``; 200 to every repeat.

    ``is_effect_first``: apply the effect, then take ``delay_s`` to answer (a crash then lands
    after the side effect); otherwise take ``delay_s`` first (a crash lands before it).
    """

    delay_s: float
    is_effect_first: bool = True
    deliveries: Counter[str] = field(default_factory=Counter)
    effects: Counter[str] = field(default_factory=Counter)
    attempts: dict[str, list[int]] = field(default_factory=dict)
    in_flight: int = 0
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        key = request.headers["Idempotency-Key"]
        self.deliveries[key] += 1
        self.attempts.setdefault(key, []).append(int(request.headers["Receiver-Attempt"]))
        if self.is_effect_first:
            self._apply(key)
        self.in_flight += 1
        try:
            await asyncio.sleep(self.delay_s)
        finally:
            self.in_flight -= 1
        if not self.is_effect_first:
            self._apply(key)
        return web.json_response({"ok": True})

    def _apply(self, key: str) -> None:
        if key not in self.effects:  # the downstream's own dedupe, keyed by Idempotency-Key
            self.effects[key] += 1


def worker_config(tmp_path: Path, sink_url: str, **worker: Any) -> Path:
    provider = {
        "scheme": "standard-webhooks",
        "secret_envs": [SECRET_ENV],
        "handler": {"kind": "http", "url": sink_url, "timeout_s": 10},
    }
    settings = {"concurrency": 4, "lease_s": 2, "poll_interval_s": 0.2, **worker}
    return serve_config(tmp_path, providers={"sw": provider}, worker=settings)


async def deliver_all(server: ServeProcess) -> list[str]:
    """Signed Standard Webhooks deliveries; returns the dedupe keys the receiver answered."""
    keys: list[str] = []
    async with aiohttp.ClientSession() as session:
        for n in range(EVENTS):
            body = event_body(n)
            headers = signed_headers(body, msg_id=f"msg_{n}")
            url = f"{server.ingest_url}/webhooks/sw"
            async with session.post(url, data=body, headers=headers) as resp:
                assert resp.status == 200, await resp.text()
                answer = await resp.json()
            assert answer["status"] == "accepted"
            keys.append(answer["key"])
    return keys


def read_db(db: Path, sql: str) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as conn:
        return conn.execute(sql).fetchall()


async def until(condition: Callable[[], bool], *, timeout_s: float, what: str) -> None:
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.05)

    try:
        await asyncio.wait_for(poll(), timeout=timeout_s)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def drained(db: Path, *, timeout_s: float = 60.0) -> None:
    async def poll() -> None:
        while True:
            [(pending,)] = await asyncio.to_thread(
                read_db, db, "SELECT count(*) FROM events WHERE status != 'succeeded'"
            )
            if pending == 0:
                return
            await asyncio.sleep(0.1)

    try:
        await asyncio.wait_for(poll(), timeout=timeout_s)
    except TimeoutError:
        raise AssertionError("the queue did not drain") from None
