"""The listeners open before the database does: an upgrade's migration can take minutes, and a
liveness probe that found nothing listening killed the process mid-migration (the step rolled
back, and the next start began it again)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from receiver.config import load_config
from receiver.runtime import Receiver
from receiver.store.database import Database
from tests.support import factories
from tests.support.factories import write_config


async def test_while_the_database_migrates_the_process_is_alive_but_not_ready(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    migrating, finish = asyncio.Event(), asyncio.Event()
    real_migrate = Database._migrate

    async def slow_migration(self: Database, *args: Any, **kwargs: Any) -> None:
        migrating.set()
        await finish.wait()
        await real_migrate(self, *args, **kwargs)

    monkeypatch.setattr(Database, "_migrate", slow_migration)
    providers = {"shop": {"scheme": "none", "event_id": "json:id"}}
    env = factories.test_environ()
    receiver = Receiver(load_config(write_config(tmp_path, providers=providers), environ=env))
    starting = asyncio.ensure_future(receiver.start())
    try:
        await asyncio.wait_for(migrating.wait(), timeout=10)
        admin = f"http://127.0.0.1:{receiver.admin_port}"
        ingest = f"http://127.0.0.1:{receiver.ingest_port}"
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{admin}/healthz") as resp:
                assert resp.status == 200
            async with session.get(f"{admin}/readyz") as resp:
                assert resp.status == 503
                reasons = (await resp.json())["reasons"]
            assert reasons["store"] == "the store is still opening (an upgrade migrates it first)"
            async with session.post(f"{ingest}/webhooks/shop", data=b'{"id": "during"}') as resp:
                assert resp.status == 503 and "Retry-After" in resp.headers
                assert (await resp.json())["error"] == "storage_unavailable"
            async with session.get(f"{admin}/admin/events", params={"q": "during"}) as resp:
                assert resp.status == 503
            finish.set()
            await asyncio.wait_for(starting, timeout=10)
            # What was refused while the store opened is not held against it afterwards: ready
            # at once (not 10 s later, "ingest's last group commit failed"), and search on the
            # full-text index (not remembered as missing for the life of the process).
            async with session.get(f"{admin}/readyz") as resp:
                assert resp.status == 200, await resp.text()
            assert await receiver.store.queries.has_fts_index()
            async with session.post(
                f"{ingest}/webhooks/shop", data=b'{"id": "during"}'
            ) as resp:  # the provider's retry
                assert (resp.status, (await resp.json())["status"]) == (200, "accepted")
    finally:
        finish.set()
        if not starting.done():
            await asyncio.wait({starting})
        await receiver.stop()
