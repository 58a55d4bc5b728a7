"""A ``receiver serve`` that cannot start exits with status 1 and says why: it never hangs.

A supervisor (systemd, a container runtime) restarts or reports a unit that exits; one that
stays alive doing nothing keeps the database open and looks healthy to it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.serve import ServeProcess, serve_config, serve_env

_EXIT_WITHIN_S = 15


def _serve(config: Path, log: Path) -> subprocess.CompletedProcess[bytes]:
    with log.open("wb") as out:
        return subprocess.run(
            [sys.executable, "-m", "receiver", "serve", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=serve_env(),
            cwd=config.parent,
            timeout=_EXIT_WITHIN_S,
            check=False,
        )


@pytest.mark.timeout(60)
def test_a_port_already_in_use_exits_1_before_the_database_is_opened(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        config = serve_config(tmp_path, server={"port": port})
        result = _serve(config, tmp_path / "serve.log")
    output = (tmp_path / "serve.log").read_text()
    assert result.returncode == 1, output
    assert f"cannot listen on server.host:server.port (127.0.0.1:{port})" in output
    assert "address already in use" in output.lower()
    assert "Traceback" not in output
    assert not (tmp_path / "receiver.db").exists()  # refused before a migration could begin
    assert "receiver_stopped" not in output  # it never started: one error, nothing more


@pytest.mark.timeout(90)
def test_a_second_instance_on_the_same_ports_exits_1_and_the_first_serves_on(
    tmp_path: Path,
) -> None:
    config = serve_config(tmp_path)
    first = ServeProcess(config, serve_env(), tmp_path / "first.log")
    first.start()
    try:
        result = _serve(config, tmp_path / "second.log")
        assert result.returncode == 1, (tmp_path / "second.log").read_text()
        assert first.returncode is None
    finally:
        first.terminate()


@pytest.mark.timeout(90)
def test_a_second_server_on_the_same_database_exits_1_naming_the_first(tmp_path: Path) -> None:
    """On other ports it started: two servers ingesting, working and purging one file, each
    commit waiting on the other's (a unit started twice, a manual start beside the service)."""
    config = serve_config(tmp_path)
    first = ServeProcess(config, serve_env(), tmp_path / "first.log")
    first.start()
    try:
        (tmp_path / "other").mkdir()
        other = serve_config(tmp_path / "other", storage={"path": str(tmp_path / "receiver.db")})
        result = _serve(other, tmp_path / "second.log")
        output = (tmp_path / "second.log").read_text()
        assert result.returncode == 1, output
        assert first.proc is not None
        assert f"another receiver (pid {first.proc.pid}) is serving" in output
        assert "Traceback" not in output and "Errno" not in output
        assert first.returncode is None
    finally:
        first.terminate()
    # The lock goes with its process: a restart on the same file starts.
    again = ServeProcess(config, serve_env(), tmp_path / "again.log")
    again.start()
    again.terminate()


def _break_newer_schema(db: Path) -> None:
    import sqlite3

    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA user_version = 99")


def _break_not_a_database(db: Path) -> None:
    db.write_bytes(b"this is not a database file " * 200)


@pytest.mark.parametrize(
    ("breakage", "says"),
    [
        (_break_newer_schema, "schema version 99, newer than this receiver's"),
        (_break_not_a_database, "the database file is damaged"),
    ],
    ids=["newer-schema", "not-a-database"],
)
@pytest.mark.timeout(60)
def test_a_database_that_cannot_be_used_is_one_error_line_naming_it(
    tmp_path: Path, breakage: Callable[[Path], None], says: str
) -> None:
    config = serve_config(tmp_path)
    db = tmp_path / "receiver.db"
    first = ServeProcess(config, serve_env(), tmp_path / "first.log")
    first.start()
    first.terminate()
    breakage(db)
    result = _serve(config, tmp_path / "serve.log")
    output = (tmp_path / "serve.log").read_text()
    assert result.returncode == 1, output
    assert says in output and str(db) in output
    assert "Traceback" not in output


@contextlib.contextmanager
def _unwritable(path: Path) -> Iterator[None]:
    """``path`` read-only for this user: by its mode, or for root (whom modes do not stop) by
    the immutable attribute."""
    if os.geteuid() != 0:
        path.chmod(0o444)
        try:
            yield
        finally:
            path.chmod(0o644)
        return
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(path)], check=False).returncode:
        pytest.skip("root here cannot make a file read-only (no chattr +i)")
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", str(path)], check=True)


@pytest.mark.timeout(60)
def test_a_database_it_cannot_write_is_refused_at_start(tmp_path: Path) -> None:
    """A file the server may not write (owned by root after a first run as root, a read-only
    volume) needs no write to open when its schema is current: the server started, looked
    healthy to its supervisor, and answered every delivery 503."""
    config = serve_config(tmp_path)
    db = tmp_path / "receiver.db"
    first = ServeProcess(config, serve_env(), tmp_path / "first.log")
    first.start()
    first.terminate()
    with _unwritable(db):
        result = _serve(config, tmp_path / "serve.log")
    output = (tmp_path / "serve.log").read_text()
    assert result.returncode == 1, output
    assert "read-only" in output and str(db) in output
    assert "receiver_started" not in output and "Traceback" not in output
