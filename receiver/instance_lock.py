"""One ``receiver serve`` per database file.

Two servers on one file would both ingest, run workers and purge: correct (SQLite and the
leases keep them apart) but each one's commits would wait on the other's, and a delivery
answered 503 by one would look like storage trouble. More often it is a mistake (a unit
started twice, a manual start beside the service). The server holds an exclusive advisory
lock on ``<database>.lock`` while it runs; a second one is refused at start, naming the
first one's process. The operations commands take no lock: they run beside a server.

The lock is the kernel's (``flock``): it goes with the process, so a ``kill -9`` or a crash
leaves no stale lock behind. Where ``fcntl`` does not exist, there is no lock.
"""

from __future__ import annotations

__all__ = ["InstanceLock"]

import contextlib
import os
from pathlib import Path

from receiver.errors import StartupError

try:
    import fcntl
except ImportError:  # not on POSIX
    fcntl = None  # type: ignore[assignment]


class InstanceLock:
    def __init__(self, database: Path) -> None:
        # The file itself, whatever the config calls it (a symlink, a relative path).
        self.database = database.resolve()
        self.path = self.database.with_name(self.database.name + ".lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        _refuse_hard_links(self.database)
        if fcntl is None or self._fd is not None:
            return
        # Made first (before the database): owner only, as the database is (store.database).
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            is_held_elsewhere = False
        except BlockingIOError:
            is_held_elsewhere = True
        except OSError:
            os.close(fd)
            raise
        if is_held_elsewhere:  # raised here, not in the handler: no errno chained to the words
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise StartupError(
                f"another receiver (pid {holder}) is serving {self.database}:"
                " one server per database file"
            )
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)  # closing drops the lock; the file stays (removing it would race)


def _refuse_hard_links(database: Path) -> None:
    """SQLite names the WAL after the path it opened: a file with two names (a hard link) has
    two WALs, and a server on each name corrupts it, past the lock named after one of them."""
    try:
        links = database.stat().st_nlink
    except FileNotFoundError:
        return  # a new database: SQLite creates it with one name
    if links > 1:
        raise StartupError(
            f"the database file {database} has {links} names (hard links): SQLite keeps a"
            " write-ahead log per name, so a second name would corrupt it; remove the others"
        )
