"""``receiver backup`` and ``receiver compact`` on files that are not what they expect: they
refuse with plain words and write nothing, not even a lock file or a partial copy."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from receiver.errors import ReceiverError
from receiver.store import maintenance, migrations
from tests.support.schema import build_schema


def _file_at_version(path: Path, version: int) -> Path:
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        build_schema(conn, version)
    return path


def _not_a_receiver_file(path: Path) -> Path:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE other_app (x)")
    return path


def test_another_applications_file_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    db = _not_a_receiver_file(tmp_path / "app.db")
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(ReceiverError, match="is not a receiver database"):
        maintenance.backup(db, tmp_path / "copy.db")
    with pytest.raises(ReceiverError, match="is not a receiver database"):
        maintenance.compact(db)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_newer_schema_is_backed_up_but_not_compacted(tmp_path: Path) -> None:
    """Copying is harmless whoever wrote the file; rewriting it is left to its own release."""
    db = _file_at_version(tmp_path / "new.db", migrations.SCHEMA_VERSION + 1)
    report = maintenance.backup(db, tmp_path / "copy.db")
    assert report.schema_version == migrations.SCHEMA_VERSION + 1
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(ReceiverError, match="newer than this"):
        maintenance.compact(db)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_an_older_schema_is_backed_up_as_it_is(tmp_path: Path) -> None:
    """A backup before an upgrade is the point: it does not migrate the file or the copy."""
    db = _file_at_version(tmp_path / "old.db", 6)
    report = maintenance.backup(db, tmp_path / "copy.db")
    assert (report.schema_version, report.events) == (6, 0)
    for path in (db, tmp_path / "copy.db"):
        with contextlib.closing(sqlite3.connect(path)) as conn:
            assert conn.execute("PRAGMA user_version").fetchone() == (6,)


def test_a_copy_a_killed_backup_left_is_removed_by_the_next_one(tmp_path: Path) -> None:
    """``kill -9`` during a backup left its hidden copy, as large as the database, under its
    process's number, which no later backup would ever use again."""
    db = _file_at_version(tmp_path / "receiver.db", migrations.SCHEMA_VERSION)
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    abandoned = tmp_path / f".copy.db.partial-{gone.stdout.strip()}"
    abandoned.write_bytes(b"half a copy")
    os.utime(abandoned, (time.time() - 3600, time.time() - 3600))  # unwritten for an hour
    # Written a moment ago (a backup in another container, whose numbers are not ours), and
    # a name whose number is none: left, and no reason to fail.
    recent = tmp_path / f".copy.db.partial-{gone.stdout.strip()}0"
    recent.write_bytes(b"being written elsewhere")
    odd = tmp_path / f".copy.db.partial-{'9' * 30}"
    odd.write_bytes(b"?")
    os.utime(odd, (time.time() - 3600, time.time() - 3600))
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as running:
        try:
            # Another backup to the same name, still going: its copy is not this one's to take.
            going_on = tmp_path / f".copy.db.partial-{running.pid}"
            going_on.write_bytes(b"being written")
            os.utime(going_on, (time.time() - 3600, time.time() - 3600))
            other_name = tmp_path / f".other.db.partial-{gone.stdout.strip()}"
            other_name.write_bytes(b"another name's")
            maintenance.backup(db, tmp_path / "copy.db")
        finally:
            running.kill()
    assert not abandoned.exists()
    assert going_on.exists() and other_name.exists() and recent.exists() and odd.exists()
    assert (tmp_path / "copy.db").exists()


def test_a_backup_into_a_missing_directory_is_refused(tmp_path: Path) -> None:
    db = _file_at_version(tmp_path / "r.db", migrations.SCHEMA_VERSION)
    with pytest.raises(ReceiverError, match="no directory"):
        maintenance.backup(db, tmp_path / "nowhere" / "copy.db")


def test_a_backup_onto_a_file_system_without_hard_links_is_renamed_into_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FAT and some network mounts refuse ``link()``: the copy is renamed instead."""

    def no_links(src: object, dst: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    db = _file_at_version(tmp_path / "r.db", migrations.SCHEMA_VERSION)
    (tmp_path / "usb").mkdir()
    monkeypatch.setattr(maintenance.os, "link", no_links)
    report = maintenance.backup(db, tmp_path / "usb" / "copy.db")
    assert report.schema_version == migrations.SCHEMA_VERSION
    assert [p.name for p in (tmp_path / "usb").iterdir()] == ["copy.db"]


def test_a_destination_that_cannot_be_written_is_named_as_such(tmp_path: Path) -> None:
    """It read "the database refused the write", as if the database were at fault."""
    db = _file_at_version(tmp_path / "r.db", migrations.SCHEMA_VERSION)
    dest = Path("/proc/receiver-backup-test.db")  # a directory no file can be created in
    with pytest.raises(ReceiverError, match="/proc cannot be written"):
        maintenance.backup(db, dest)


def test_compact_beside_a_long_reader_says_the_file_shrinks_later(tmp_path: Path) -> None:
    """A reader holding a snapshot past the busy timeout keeps the old pages: the compaction
    is done, but the file cannot shrink yet. It reported success with nothing freed."""
    db = _file_at_version(tmp_path / "r.db", migrations.SCHEMA_VERSION)
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as conn:
        conn.execute("CREATE TABLE filler (x BLOB)")
        conn.executemany("INSERT INTO filler VALUES (?)", [(b"x" * 4000,) for _ in range(500)])
        conn.execute("DROP TABLE filler")  # two megabytes of free pages
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as reader:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM events").fetchone()  # holds its snapshot
        report = maintenance.compact(db, busy_timeout_s=0.2)
        assert report.is_shrink_pending
        assert report.as_json()["shrink_pending"] is True
    after = maintenance.compact(db, busy_timeout_s=0.2)  # the reader is gone
    assert not after.is_shrink_pending and after.bytes_after < report.bytes_before


async def test_a_new_database_its_wal_and_its_backups_are_its_owners_alone(
    tmp_path: Path,
) -> None:
    """They hold every body and header received; under the usual umask (022) they were
    created world-readable, and so was the directory made for them."""
    from receiver.instance_lock import InstanceLock
    from receiver.store.sqlite import SqliteStore
    from tests.support.factories import new_event

    previous = os.umask(0o022)
    try:
        path = tmp_path / "data" / "receiver.db"
        lock = InstanceLock(path)  # as `receiver serve` starts: the lock first, then the store
        lock.acquire()
        store = SqliteStore(path)
        await store.open()
        try:
            await store.record(new_event("shop", 1, now=1_700_000_000.0))
            modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in path.parent.iterdir()}
        finally:
            await store.close()
            lock.release()
        copy = maintenance.backup(path, tmp_path / "copy.db").path
        # A file that exists keeps the mode its owner gave it.
        shared = _file_at_version(tmp_path / "shared.db", migrations.SCHEMA_VERSION)
        shared.chmod(0o640)
        other = SqliteStore(shared)
        await other.open()
        await other.close()
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert modes["receiver.db"] == 0o600
    assert modes["receiver.db-wal"] == 0o600  # SQLite gives it the database's mode
    assert stat.S_IMODE(copy.stat().st_mode) == 0o600
    assert stat.S_IMODE(shared.stat().st_mode) == 0o640
