"""``receiver events list|show``, ``receiver replay`` and ``receiver purge`` against a real
database that a running receiver also has open (WAL)."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from receiver.cli import main
from tests.integration.conftest import AdminHarness, MakeAdminHarness
from tests.support.factories import SECRET_ENV, TEST_SECRET

DAY_S = 86400.0


@pytest.fixture
async def admin_cli(
    admin_make_harness: MakeAdminHarness, monkeypatch: pytest.MonkeyPatch
) -> AdminHarness:
    """A receiver with three events (two of them dead); the CLI reads the same config."""
    monkeypatch.setenv(SECRET_ENV, TEST_SECRET)
    monkeypatch.delenv("RECEIVER_CONFIG", raising=False)
    h = await admin_make_harness()
    for provider, event_id, kind in (
        ("plain", "c1", "order.created"),
        ("short", "c2", "order.paid"),
        ("plain", "c3", "order.created"),
    ):
        await h.deliver(provider, {"id": event_id, "type": kind, "note": f"note {event_id}"})
        h.clock.advance(10)
    with sqlite3.connect(h.receiver.config.settings.storage.path) as conn:
        conn.execute("UPDATE jobs SET status = 'dead' WHERE event_id IN (1, 3)")
        conn.execute("UPDATE events SET status = 'dead' WHERE id IN (1, 3)")
    return h


async def _run(
    capsys: pytest.CaptureFixture[str], h: AdminHarness, *argv: str
) -> tuple[int, str, str]:
    capsys.readouterr()  # drop the receiver's own log lines; keep only the command's output
    try:
        code = await asyncio.to_thread(main, [*argv, "--config", str(h.config_path)])
    except SystemExit as exc:  # argparse's own usage errors (exit status 2)
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


async def test_events_list_table_and_json(
    admin_cli: AdminHarness, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = await _run(capsys, admin_cli, "events", "list")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "RECEIVED", "PROVIDER", "STATUS", "TYPE", "KEY", "DUPS"]
    assert [line.split()[0] for line in lines[1:]] == ["3", "2", "1"]
    assert "plain:c3" in lines[1]

    code, out, _ = await _run(capsys, admin_cli, "events", "list", "--json", "--status", "dead")
    assert code == 0
    data = json.loads(out)
    assert [e["id"] for e in data["events"]] == ["3", "1"]
    assert data["next_cursor"] is None


@pytest.mark.parametrize(
    ("flags", "ids"),
    [
        (["--provider", "short"], ["2"]),
        (["--type", "order.created", "--limit", "1"], ["3"]),
        (["--key", "plain:c1"], ["1"]),
        (["--q", "c2"], ["2"]),
        (["--since", "1h"], ["3", "2", "1"]),
        (["--until", "2000-01-01T00:00:00Z"], []),
    ],
)
async def test_events_list_filters(
    admin_cli: AdminHarness, capsys: pytest.CaptureFixture[str], flags: list[str], ids: list[str]
) -> None:
    code, out, _ = await _run(capsys, admin_cli, "events", "list", "--json", *flags)
    assert code == 0
    assert [e["id"] for e in json.loads(out)["events"]] == ids


async def test_bad_filter_exits_2_naming_the_flag(
    admin_cli: AdminHarness, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = await _run(capsys, admin_cli, "events", "list", "--since", "soonish")
    assert code == 2
    assert err.startswith("error: --since:")
    code, _, err = await _run(capsys, admin_cli, "events", "list", "--status", "nope")
    assert (code, err.startswith("error: --status:")) == (2, True)
    code, _, err = await _run(capsys, admin_cli, "replay", "--until", "0s", "--dry-run")
    assert (code, err.startswith("error: --until:")) == (2, True)  # was a traceback


async def test_events_show(admin_cli: AdminHarness, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = await _run(capsys, admin_cli, "events", "show", "2")
    assert code == 0
    assert "short:c2" in out
    assert '"note": "note c2"' in out
    code, out, _ = await _run(capsys, admin_cli, "events", "show", "2", "--json")
    data = json.loads(out)
    assert (data["id"], data["encoding"], data["job"]["status"]) == ("2", "utf-8", "queued")
    code, _, err = await _run(capsys, admin_cli, "events", "show", "99")
    assert code == 1
    assert "no event with id 99" in err


async def test_replay_by_ids_with_dry_run_then_for_real(
    admin_cli: AdminHarness, capsys: pytest.CaptureFixture[str]
) -> None:
    db = admin_cli.receiver.config.settings.storage.path
    code, out, _ = await _run(capsys, admin_cli, "replay", "1", "3", "--reason", "x", "--dry-run")
    assert code == 0
    assert "would replay 2" in out
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM requeues").fetchone()[0] == 0
    code, out, _ = await _run(capsys, admin_cli, "replay", "1", "3", "--reason", "fixed", "--json")
    assert code == 0
    assert json.loads(out)["replayed"] == 2
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT event_id, cause, actor, reason FROM requeues").fetchall()
        jobs = conn.execute("SELECT status, is_replay FROM jobs WHERE event_id = 1").fetchone()
    assert sorted(rows) == [(1, "replay", "cli", "fixed"), (3, "replay", "cli", "fixed")]
    assert jobs == ("queued", 1)
    # An unknown id, or one whose provider has no handler, is reported and fails the command.
    code, out, _ = await _run(capsys, admin_cli, "replay", "2", "77", "--reason", "r")
    assert code == 1
    assert "replayed 0" in out
    assert "skipped 1: not found" in out
    assert "skipped 1: no handler" in out


async def test_replay_by_filter(
    admin_cli: AdminHarness, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["replay", "--provider", "plain", "--status", "dead", "--since", "1d", "--reason", "r"]
    code, out, _ = await _run(capsys, admin_cli, *argv, "--json")
    assert code == 0
    report = json.loads(out)
    assert (report["matched"], report["replayed"], report["sample"]) == (2, 2, ["3", "1"])


async def test_replay_by_filter_continues_with_the_cursor_it_prints(
    admin_cli: AdminHarness, capsys: pytest.CaptureFixture[str]
) -> None:
    """A type filter stays true after a replay: "run again" replayed the newest event twice."""
    argv = ["replay", "--type", "order.created", "--limit", "1"]
    code, out, _ = await _run(capsys, admin_cli, *argv)
    assert code == 0 and "ids: 3" in out
    cursor = out.split("continue with --cursor ")[1].split()[0]
    code, out, _ = await _run(capsys, admin_cli, *argv, "--cursor", cursor)
    assert code == 0 and "ids: 1" in out and "more events match" not in out


async def test_events_list_continues_with_the_cursor_it_prints(
    admin_cli: AdminHarness, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = await _run(capsys, admin_cli, "events", "list", "--limit", "2")
    assert code == 0
    cursor = out.split("continue with --cursor ")[1].split(",")[0]
    code, out, _ = await _run(capsys, admin_cli, "events", "list", "--cursor", cursor)
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["1"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["replay", "--reason", "r"], "give event ids, or at least one filter"),
        (["replay", "1", "--provider", "plain", "--reason", "r"], "not both"),
        (["replay", "1", "--reason", "  "], "--reason"),
        (["replay", "--status", "dead", "--reason", "r", "--limit", "0"], "--limit"),
        (["replay", "--status", "dead", "--cursor", "nonsense"], "--cursor"),
        (["replay", "99999999999999999999999", "--dry-run"], "is not an event id"),
        (["events", "show", "99999999999999999999999"], "is not an event id"),
    ],
)
async def test_replay_usage_errors(
    admin_cli: AdminHarness, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, _, err = await _run(capsys, admin_cli, *argv)
    assert code == 2
    assert message in err


async def test_replay_without_a_reason(
    admin_cli: AdminHarness, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = await _run(capsys, admin_cli, "replay", "1")
    assert code == 0
    assert "replayed 1" in out
    db = admin_cli.receiver.config.settings.storage.path
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT event_id, actor, reason FROM requeues").fetchall()
    assert rows == [(1, "cli", None)]


async def test_purge_once(
    admin_make_harness: MakeAdminHarness,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(SECRET_ENV, TEST_SECRET)
    h = await admin_make_harness()
    h.clock.advance(-3 * DAY_S)  # received three days ago: past every window of "short"
    await h.deliver("short", {"id": "old", "type": "t"})
    h.clock.advance(3 * DAY_S - 1800)  # half an hour ago: payload (1h) still kept
    await h.deliver("short", {"id": "recent", "type": "t"})
    code, out, _ = await _run(capsys, h, "purge", "--json")
    assert code == 0
    assert json.loads(out) == {"payloads_purged": 1, "events_deleted": 1, "rejections_deleted": 0}
    code, out, _ = await _run(capsys, h, "purge")
    assert "payloads purged: 0" in out


async def test_subprocess_run_while_the_receiver_has_the_database_open(
    admin_cli: AdminHarness,
) -> None:
    config = admin_cli.config_path
    # No webhook secret in the environment: an operator's shell has none, and these commands
    # only read and write the store (the config names SECRET_ENV for its ``sw`` provider).
    env: dict[str, Any] = {"PYTHONPATH": str(Path.cwd()), "PATH": ""}
    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "receiver", "events", "list", "--json", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert [e["id"] for e in json.loads(proc.stdout)["events"]] == ["3", "2", "1"]
    # The receiver keeps working on the same file.
    answer = await admin_cli.deliver("plain", {"id": "after-cli", "type": "t"})
    assert answer["status"] == "accepted"


async def test_a_reader_that_goes_away_ends_the_listing_quietly(admin_cli: AdminHarness) -> None:
    """``receiver events list --json | head -1`` printed ``error: Broken pipe`` (exit 1), or a
    traceback from the interpreter's last flush."""
    env: dict[str, Any] = {"PYTHONPATH": str(Path.cwd()), "PATH": ""}
    argv = ["events", "list", "--json", "--config", str(admin_cli.config_path)]
    read_end, write_end = os.pipe()
    os.close(read_end)  # gone before the first line is written
    try:
        proc = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "receiver", *argv],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            env=env,
            check=False,
        )
    finally:
        os.close(write_end)
    assert (proc.returncode, proc.stderr) == (141, "")


@pytest.mark.parametrize(
    "argv",
    [["events", "list"], ["events", "show", "1"], ["replay", "1"], ["purge"]],
)
def test_a_missing_database_is_an_error_not_an_empty_one(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
) -> None:
    from tests.support.factories import write_config

    monkeypatch.setenv(SECRET_ENV, TEST_SECRET)
    db = tmp_path / "misspelt" / "receiver.db"
    config = write_config(tmp_path, storage={"path": str(db)})
    assert main([*argv, "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert f"no database at {db}" in err
    assert "storage.path" in err
    assert not db.parent.exists()  # nothing created


@pytest.mark.parametrize("content", ["empty", "another_apps"])
def test_a_file_that_is_not_a_receiver_database_is_left_alone(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    content: str,
) -> None:
    """storage.path naming an empty file or another application's SQLite database: a
    read-only command wrote the whole receiver schema into it."""
    from tests.support.factories import write_config

    monkeypatch.setenv(SECRET_ENV, TEST_SECRET)
    db = tmp_path / "other.db"
    with closing(sqlite3.connect(db)) as conn, conn:
        if content == "another_apps":
            conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY)")
    config = write_config(tmp_path, storage={"path": str(db)})
    before = db.read_bytes()
    assert main(["events", "list", "--config", str(config)]) == 1
    assert "is not a receiver database" in capsys.readouterr().err
    # Not a byte changed: it was switched to WAL first (an empty file became a database).
    assert db.read_bytes() == before
    with closing(sqlite3.connect(db)) as conn:
        tables = [row[0] for row in conn.execute("SELECT name FROM sqlite_master")]
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    assert tables == (["invoices"] if content == "another_apps" else [])


async def test_an_operations_command_refuses_an_older_schema_instead_of_migrating_it(
    admin_cli: AdminHarness, capsys: pytest.CaptureFixture[str]
) -> None:
    """A read-only command from a new install upgraded the file under a running older server,
    which then could not restart on it (nor its own CLI read it): no rolling back."""
    path = admin_cli.receiver.config.settings.storage.path
    await admin_cli.receiver.store.close()
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 5")  # as an older receiver left it
    code, out, err = await _run(capsys, admin_cli, "events", "list")
    assert code == 1 and out == ""
    assert "schema version 5, older" in err and "receiver serve" in err
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 5


async def test_what_senders_wrote_cannot_drive_the_terminal(
    admin_cli: AdminHarness, capsys: pytest.CaptureFixture[str]
) -> None:
    """``events show`` printed a body's C1 controls (CSI: colours, a cleared screen) as they
    came, and an event ID with a right-to-left override showed ``evil\\u202egnp.exe`` as
    "evilexe.png"."""
    body = '{"id": "evil\u202egnp.exe",\n "type": "t",\n "note": "a\x9b2Jb\x7f"}'.encode()
    answer = await admin_cli.deliver("plain", body)
    assert answer["status"] == "accepted", answer
    code, shown, _ = await _run(capsys, admin_cli, "events", "show", answer["id"])
    assert code == 0
    code, listed, _ = await _run(capsys, admin_cli, "events", "list")
    assert code == 0
    code, as_json, _ = await _run(capsys, admin_cli, "events", "show", answer["id"], "--json")
    assert code == 0
    assert json.loads(as_json)["key"] == "plain:evil\u202egnp.exe"  # escaped, and the same text
    for out in (shown, listed, as_json):
        assert "plain:evil\\u202egnp.exe" in out
        assert not any(c in out for c in "\u202e\x9b\x7f")
    assert '"note": "a\\x9b2Jb\\x7f"}' in shown
    assert '{"id": "evil\\u202egnp.exe",\n "type": "t",\n' in shown  # its lines kept


async def test_a_terminal_that_cannot_show_a_character_gets_an_escape(
    admin_cli: AdminHarness,
) -> None:
    """A latin-1 locale (or a Windows console) ended the listing with UnicodeEncodeError."""
    await admin_cli.deliver("plain", {"id": "caf\u00e9-\u2713", "type": "t"})
    env: dict[str, Any] = {"PYTHONPATH": str(Path.cwd()), "PATH": "", "PYTHONIOENCODING": "latin-1"}
    for argv in (["events", "list"], ["events", "list", "--json"]):
        proc = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "receiver", *argv, "--config", str(admin_cli.config_path)],
            capture_output=True,
            timeout=60,
            env=env,
            check=False,
        )
        assert (proc.returncode, proc.stderr) == (0, b""), proc.stderr
        if "--json" in argv:  # valid JSON, the same text
            keys = [e["key"] for e in json.loads(proc.stdout.decode("latin-1"))["events"]]
            assert "plain:caf\u00e9-\u2713" in keys
        else:
            assert "plain:caf\u00e9-\\u2713".encode("latin-1") in proc.stdout


async def test_replay_by_ids_takes_at_most_ten_thousand(
    admin_cli: AdminHarness, capsys: pytest.CaptureFixture[str]
) -> None:
    """One run is one transaction: 100 000 ids held the writer for 1.7 s, and more would
    have ingest answer 503 meanwhile."""
    ids = [str(n) for n in range(1, 10_002)]
    code, _, err = await _run(capsys, admin_cli, "replay", *ids)
    assert code == 2
    assert "at most 10,000 event ids per run" in err
    assert _jobs_replayed(admin_cli) == 0


def _jobs_replayed(h: AdminHarness) -> int:
    with closing(sqlite3.connect(h.receiver.config.settings.storage.path)) as conn:
        return int(conn.execute("SELECT count(*) FROM requeues").fetchone()[0])
