"""SIGTERM while ``receiver serve`` upgrades a large database: the step is rolled back and the
process exits at once, saying so. It used to finish the migration first (minutes for millions
of events, past an orchestrator's grace, so it was killed and the work thrown away anyway)."""

from __future__ import annotations

import contextlib
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.schema import build_schema
from tests.support.serve import serve_config, serve_env

_EVENTS = 300_000  # a migration of several seconds


def _version_6_file(path: Path) -> None:
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        build_schema(conn, 6)
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO events (provider, key, provider_event_id, fingerprint, body, headers,"
            " status, received_at, last_seen_at, payload_expires_at, dedupe_expires_at)"
            " VALUES ('sw', ?, ?, ?, ?, '{}', 'received', 0, 0, 9e9, 9e9)",
            (
                (f"sw:e{n}", f"e{n}", f"{n:064x}", b'{"note": "%d and some words"}' % n)
                for n in range(_EVENTS)
            ),
        )
        conn.execute("COMMIT")


def _wait_for(log: Path, text: str, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in log.read_text():
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.02)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_stop_during_an_upgrade_rolls_it_back_and_exits_saying_so(tmp_path: Path) -> None:
    db = tmp_path / "receiver.db"
    _version_6_file(db)
    config = serve_config(tmp_path)
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "receiver", "serve", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=serve_env(),
            cwd=tmp_path,
        )
    try:
        _wait_for(log, '"schema_migrating"', proc, timeout_s=60)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    output = log.read_text()
    assert code == 1, output
    assert "stopped while upgrading the schema" in output and "to version 7" in output
    assert "rolled back, the file is at version 6" in output
    assert '"schema_migrated"' not in output and "Traceback" not in output
    with contextlib.closing(sqlite3.connect(db)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (6,)
        assert conn.execute("SELECT count(*) FROM events WHERE body IS NOT NULL").fetchone() == (
            _EVENTS,
        )
        assert conn.execute("PRAGMA quick_check").fetchone() == ("ok",)
