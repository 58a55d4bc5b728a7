"""Backups and compaction of the database file, for ``receiver backup`` and ``receiver compact``.

Plain ``sqlite3``: the image has no ``sqlite3`` shell, and these run once, outside the server.

* A backup is ``VACUUM INTO`` (one read transaction: a consistent, compacted copy, taken beside a
  running server, which goes on writing) into a hidden file beside the destination; checked
  (``quick_check``), flushed to disk, then given its name, which must be free: a backup never
  overwrites anything, and a crash or a full disk leaves no half-written file under that name.
  Any schema version is copied as it is (a backup before an upgrade is the point).
* Compaction is ``VACUUM`` in place, under the instance lock, so that no server runs on the file
  meanwhile and none starts until it is done. SQLite builds the compacted copy in a temporary
  file and writes it back through the WAL, so it needs free disk of about twice the file's live
  data while it runs; it is one transaction, and a failure leaves the file as it was.
"""

from __future__ import annotations

__all__ = ["BackupReport", "CompactReport", "backup", "compact"]

import contextlib
import glob
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from receiver.errors import ReceiverError, StartupError
from receiver.instance_lock import InstanceLock
from receiver.store.database import storage_error
from receiver.store.migrations import SCHEMA_VERSION


@dataclass(frozen=True, slots=True, kw_only=True)
class BackupReport:
    path: Path
    bytes: int
    events: int
    schema_version: int
    duration_s: float

    def as_json(self) -> dict[str, object]:
        return {
            "path": str(self.path),
            "bytes": self.bytes,
            "events": self.events,
            "schema_version": self.schema_version,
            "duration_s": round(self.duration_s, 3),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class CompactReport:
    bytes_before: int
    bytes_after: int
    duration_s: float
    # A reader (a `receiver events` run, a sqlite3 shell) held the old pages past the busy
    # timeout: compacted, but the file shrinks only at the next checkpoint after it is done.
    is_shrink_pending: bool

    def as_json(self) -> dict[str, object]:
        return {
            "bytes_before": self.bytes_before,
            "bytes_after": self.bytes_after,
            "bytes_freed": self.bytes_before - self.bytes_after,
            "shrink_pending": self.is_shrink_pending,
            "duration_s": round(self.duration_s, 3),
        }


def _connect(path: Path, *, busy_timeout_s: float) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, timeout=busy_timeout_s)
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
    return conn


def _schema_version(conn: sqlite3.Connection, path: Path, *, may_be_newer: bool) -> int:
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version == 0:
        raise ReceiverError(
            f"{path} is not a receiver database (it has no schema version): is storage.path right?"
        )
    if version > SCHEMA_VERSION and not may_be_newer:
        raise ReceiverError(
            f"the database {path} has schema version {version}, newer than this"
            f" receiver's ({SCHEMA_VERSION}): use the receiver that wrote it"
        )
    return version


def _sqlite_failure(exc: sqlite3.Error, what: str) -> ReceiverError:
    return ReceiverError(f"{what} failed: {storage_error(exc, retry_after_s=1).detail}")


def _backup_failure(exc: sqlite3.Error, dest: Path) -> ReceiverError:
    """The copy's own trouble is the destination's, not "the database"'s."""
    text = str(exc).lower()
    if "full" in text:
        return ReceiverError(f"the backup to {dest} failed: the disk it is on is full")
    if "unable to open" in text or "readonly" in text:
        return ReceiverError(f"the backup to {dest} failed: {dest.parent} cannot be written")
    return _sqlite_failure(exc, f"the backup to {dest}")


def _fsync(path: Path, *, is_dir: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if is_dir else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def backup(source: Path, dest: Path, *, busy_timeout_s: float = 2.0) -> BackupReport:
    """Copy ``source`` to ``dest`` (which must not exist), consistent and checked."""
    if dest.exists() or dest.is_symlink():
        raise ReceiverError(f"{dest} exists: a backup never overwrites a file; choose a new name")
    if not dest.parent.is_dir():
        raise ReceiverError(f"no directory {dest.parent} to write the backup in")
    started = time.monotonic()
    _remove_abandoned_copies(dest)
    partial = dest.with_name(f".{dest.name}.partial-{os.getpid()}")
    partial.unlink(missing_ok=True)
    # Made empty first, readable by its owner only, as the database is: VACUUM INTO fills an
    # empty file, and would otherwise create one as the umask allows (world-readable bodies).
    try:
        os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError as exc:
        unwritable = f"the backup to {dest} failed: {dest.parent} cannot be written"
        raise ReceiverError(unwritable) from exc
    try:
        with contextlib.closing(_connect(source, busy_timeout_s=busy_timeout_s)) as conn:
            version = _schema_version(conn, source, may_be_newer=True)  # copied as it is
            try:
                conn.execute("VACUUM INTO ?", (str(partial),))
            except sqlite3.Error as exc:
                raise _backup_failure(exc, dest) from exc
        events = _check_copy(partial)
        _fsync(partial)
        _give_name(partial, dest)
        _fsync(dest.parent, is_dir=True)
    finally:
        partial.unlink(missing_ok=True)
    return BackupReport(
        path=dest,
        bytes=dest.stat().st_size,
        events=events,
        schema_version=version,
        duration_s=time.monotonic() - started,
    )


def _remove_abandoned_copies(dest: Path) -> None:
    """A backup killed part-way (``kill -9``, a power cut) left its hidden copy, as large as
    the database, under its own process's number: gone with the next backup to that name,
    unless that process still runs or the copy was written lately (a backup of the same name
    going on beside this one, perhaps in another container, whose process numbers are not
    ours). Best effort: one that cannot be removed is left, never a reason to fail."""
    for leftover in dest.parent.glob(f".{glob.escape(dest.name)}.partial-*"):
        pid = leftover.name.rpartition("-")[2]
        try:
            is_stale = time.time() - leftover.stat().st_mtime > _ABANDONED_AFTER_S
            if pid.isdigit() and is_stale and not _is_running(int(pid)):
                leftover.unlink()
        except OSError:
            continue


# How long a copy goes unwritten before it counts as abandoned: VACUUM INTO writes all along.
_ABANDONED_AFTER_S = 600.0


def _is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):  # another user's, or no pid at all
        return True
    return True


def _give_name(partial: Path, dest: Path) -> None:
    """A hard link never replaces a file that appeared meanwhile; where the file system has
    none (FAT, some network mounts), a rename after one more look."""
    appeared = ReceiverError(f"{dest} appeared while the backup ran: nothing was kept")
    try:
        os.link(partial, dest)
    except FileExistsError:
        raise appeared from None
    except OSError:
        if dest.exists():
            raise appeared from None
        os.rename(partial, dest)


def _check_copy(path: Path) -> int:
    """The copy's events, once SQLite finds its structure sound."""
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        result = conn.execute("PRAGMA quick_check").fetchone()[0]
        if result != "ok":
            raise ReceiverError(f"the backup's check failed ({result}): nothing was kept")
        return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])


def compact(path: Path, *, busy_timeout_s: float = 2.0) -> CompactReport:
    """Give the file's free pages back to the disk; refused while a server runs on it."""
    with contextlib.closing(_connect(path, busy_timeout_s=busy_timeout_s)) as conn:
        # Before the lock: nothing is written beside another application's file.
        _schema_version(conn, path, may_be_newer=False)
    lock = InstanceLock(path)
    try:
        lock.acquire()  # a server holds it while it runs; and none starts while this one does
    except StartupError as exc:
        raise ReceiverError(f"{exc}; stop it first: compacting needs the file alone") from None
    try:
        before = path.stat().st_size
        started = time.monotonic()
        with contextlib.closing(_connect(path, busy_timeout_s=busy_timeout_s)) as conn:
            try:
                conn.execute("VACUUM")
                is_busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 1
            except sqlite3.Error as exc:
                raise _sqlite_failure(exc, f"compacting {path}") from exc
        return CompactReport(
            bytes_before=before,
            bytes_after=path.stat().st_size,
            duration_s=time.monotonic() - started,
            is_shrink_pending=is_busy,
        )
    finally:
        lock.release()
