"""``receiver backup`` beside a real ``receiver serve`` under traffic, the documented restore
from it, and ``receiver compact``, refused while a server runs on the file."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.support.crash import deliver
from tests.support.serve import ServeProcess, serve_config, serve_env


def _cli(*argv: str, config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "receiver", *argv, "--config", str(config)],
        capture_output=True,
        text=True,
        env=serve_env(),
        timeout=60,
        check=False,
    )


def _keys(db: Path) -> set[str]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return {row[0] for row in conn.execute("SELECT key FROM events")}


async def _deliver_range(url: str, numbers: range) -> set[str]:
    """The keys of the events acknowledged as accepted."""
    async with aiohttp.ClientSession() as session:
        answers = await asyncio.gather(*(deliver(session, url, n) for n in numbers))
    return {f"sw:e{n}" for n, (status, _) in zip(numbers, answers, strict=True) if status == 200}


def _restore(backup: Path, db: Path) -> None:
    """The README's restore, the server stopped: -wal and -shm gone, the copy in place."""
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    backup.replace(db)


@pytest.mark.timeout(120)
async def test_a_backup_under_traffic_restores_every_event_acknowledged_before_it(
    tmp_path: Path,
) -> None:
    config = serve_config(tmp_path)
    db, dest = tmp_path / "receiver.db", tmp_path / "backups" / "receiver-1.db"
    dest.parent.mkdir()
    server = ServeProcess(config, serve_env(), tmp_path / "serve.log")
    server.start()
    try:
        url = f"{server.ingest_url}/webhooks/sw"
        before = await _deliver_range(url, range(200))
        assert len(before) == 200
        # The server goes on committing while the copy is taken.
        traffic = asyncio.ensure_future(_deliver_range(url, range(200, 600)))
        done = await asyncio.to_thread(_cli, "backup", str(dest), "--json", config=config)
        during = await traffic
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert report["path"] == str(dest) and report["schema_version"] >= 7
        assert report["events"] >= 200
        again = await asyncio.to_thread(_cli, "backup", str(dest), config=config)
        assert again.returncode == 1 and "never overwrites" in again.stderr
    finally:
        server.terminate()
    assert os.listdir(dest.parent) == [dest.name]  # no partial file left beside it
    copied = _keys(dest)
    assert before <= copied <= before | during
    with contextlib.closing(sqlite3.connect(dest)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)

    _restore(dest, db)
    server.start()
    try:
        async with aiohttp.ClientSession() as session:
            status, answer = await deliver(session, f"{server.ingest_url}/webhooks/sw", 0)
        assert (status, answer and answer["status"]) == (200, "duplicate")
    finally:
        server.terminate()
    assert _keys(db) == copied


@pytest.mark.timeout(120)
async def test_compact_is_refused_beside_a_server_and_gives_purged_space_back(
    tmp_path: Path,
) -> None:
    config = serve_config(tmp_path)
    db = tmp_path / "receiver.db"
    server = ServeProcess(config, serve_env(), tmp_path / "serve.log")
    server.start()
    try:
        acked = await _deliver_range(f"{server.ingest_url}/webhooks/sw", range(300))
        refused = await asyncio.to_thread(_cli, "compact", config=config)
        assert refused.returncode == 1
        assert "is serving" in refused.stderr and "stop it first" in refused.stderr
    finally:
        server.terminate()
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as conn:
        conn.execute("DELETE FROM payloads")  # as a purge of every payload does
        conn.execute("UPDATE events SET payload_purged_at = received_at")
    size = db.stat().st_size
    done = await asyncio.to_thread(_cli, "compact", "--json", config=config)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["bytes_before"] == size > report["bytes_after"] == db.stat().st_size
    assert _keys(db) == acked
    server.start()  # the server starts on the compacted file, and the lock is free again
    server.terminate()
