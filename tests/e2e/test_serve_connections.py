"""``receiver serve`` (on uvloop, as in production) caps its open connections, answering the next
ones 503 even in a burst, and raises a low soft open-files limit (often 1024) so the connections
its listeners admit fit, as far as the hard limit allows."""

from __future__ import annotations

import resource
import socket
from pathlib import Path

import pytest

from tests.support.serve import ServeProcess, serve_config, serve_env

_LOWERED = 256
_AS_ANY_SHELL = (
    "import resource, sys; "
    f"resource.setrlimit(resource.RLIMIT_NOFILE, ({_LOWERED}, resource.getrlimit("
    "resource.RLIMIT_NOFILE)[1])); "
    "from receiver.cli import main; sys.exit(main(sys.argv[1:]))"
)


def _soft_open_files(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError("no open-files line in /proc limits")


@pytest.mark.timeout(60)
def test_a_low_soft_limit_is_raised_to_hold_max_connections(tmp_path: Path) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    config = serve_config(tmp_path, server={"max_connections": 1000})
    server = ServeProcess(
        config, serve_env(), tmp_path / "serve.log", interpreter_args=("-c", _AS_ANY_SHELL)
    )
    server.start()
    try:
        assert server.proc is not None
        soft = _soft_open_files(server.proc.pid)
    finally:
        server.terminate()
    needed = 1000 + 64 + 8 + 256  # connections, admin's, worker concurrency, spare
    assert soft == (needed if hard == resource.RLIM_INFINITY else min(needed, hard))
    log = (tmp_path / "serve.log").read_text()
    assert ("open_files_limit_low" in log) == (soft < needed)


@pytest.mark.timeout(60)
def test_a_burst_past_max_connections_is_answered_503_under_uvloop(tmp_path: Path) -> None:
    """uvloop's transports are no asyncio classes: the refusal closed them without its 503;
    and a burst, connected a moment after the cap was checked, got past it."""
    config = serve_config(tmp_path, server={"max_connections": 3, "idle_timeout_s": 30})
    server = ServeProcess(config, serve_env(), tmp_path / "serve.log")
    server.start()
    port = int(server.ingest_url.rsplit(":", 1)[1])
    burst = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(10)]
    try:
        answers = []
        for sock in burst:
            sock.settimeout(1.0)
            try:
                answers.append(sock.recv(4096).split(b"\r\n", 1)[0])
            except TimeoutError:  # held: the server waits for its request
                answers.append(b"held")
    finally:
        for sock in burst:
            sock.close()
        server.terminate()
    assert answers.count(b"held") == 3, answers
    assert answers.count(b"HTTP/1.1 503 Service Unavailable") == 7, answers
    assert "connections_refused" in (tmp_path / "serve.log").read_text()
