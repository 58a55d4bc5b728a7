"""A command handler under the real ``receiver serve`` (uvloop): a command that exits without
reading its stdin is judged by its exit code alone."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import time
from contextlib import closing
from pathlib import Path

import aiohttp
import pytest

from tests.support.serve import ServeProcess, serve_config, serve_env

EVENTS = 60


def _statuses(db: Path) -> dict[str, int]:
    with closing(sqlite3.connect(db)) as conn:
        rows = conn.execute("SELECT status, count(*) FROM events GROUP BY status").fetchall()
    return dict(rows)


@pytest.mark.timeout(120)
async def test_a_command_that_exits_before_reading_stdin_succeeds(tmp_path: Path) -> None:
    true = shutil.which("true")
    assert true is not None
    handler = {"kind": "command", "argv": [true]}
    provider = {"scheme": "none", "event_id": "json:id", "handler": handler, "max_attempts": 1}
    config = serve_config(tmp_path, providers={"p": provider}, worker={"concurrency": 8})
    server = ServeProcess(config, serve_env(), tmp_path / "serve.log")
    server.start()
    try:
        async with aiohttp.ClientSession() as session:
            for n in range(EVENTS):
                body = {"id": f"e{n}", "pad": "x" * 200_000}  # more than a pipe buffer holds
                async with session.post(server.ingest_url + "/webhooks/p", json=body) as resp:
                    assert resp.status == 200
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            statuses = _statuses(tmp_path / "receiver.db")
            if statuses.get("succeeded", 0) + statuses.get("dead", 0) == EVENTS:
                break
            await asyncio.sleep(0.1)
        server.terminate()
    finally:
        server.kill()
    assert statuses == {"succeeded": EVENTS}, server.log_path.read_text()[-3000:]
