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
