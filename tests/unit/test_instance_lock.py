"""One server per database file, whatever the config calls the file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from receiver.errors import StartupError
from receiver.instance_lock import InstanceLock


def test_a_second_lock_on_the_same_file_is_refused_naming_the_first(tmp_path: Path) -> None:
    first = InstanceLock(tmp_path / "receiver.db")
    first.acquire()
    try:
        with pytest.raises(StartupError, match=f"another receiver \\(pid {os.getpid()}\\)"):
            InstanceLock(tmp_path / "receiver.db").acquire()
    finally:
        first.release()
    again = InstanceLock(tmp_path / "receiver.db")
    again.acquire()  # released: free again
    again.release()


def test_a_symlink_or_a_relative_path_to_the_file_is_the_same_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A config naming the database through a symlink locked ``link.db.lock`` and started a
    second server on the same file."""
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "receiver.db"
    target.touch()
    (tmp_path / "link.db").symlink_to(target)
    first = InstanceLock(target)
    first.acquire()
    try:
        with pytest.raises(StartupError):
            InstanceLock(tmp_path / "link.db").acquire()
        monkeypatch.chdir(tmp_path)
        with pytest.raises(StartupError):
            InstanceLock(Path("real/receiver.db")).acquire()
    finally:
        first.release()


def test_a_database_file_with_a_second_name_is_refused(tmp_path: Path) -> None:
    """A hard link is the same file under another name: its lock is another lock file, and
    SQLite keeps another WAL beside it. Two servers, one on each name, corrupted the file."""
    target = tmp_path / "receiver.db"
    target.write_bytes(b"")
    os.link(target, tmp_path / "alias.db")
    for name in ("receiver.db", "alias.db"):
        with pytest.raises(StartupError, match="has 2 names \\(hard links\\)"):
            InstanceLock(tmp_path / name).acquire()
    os.remove(tmp_path / "alias.db")
    lock = InstanceLock(target)
    lock.acquire()  # one name again: served
    lock.release()
