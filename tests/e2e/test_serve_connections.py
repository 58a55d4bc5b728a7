"""``receiver serve`` (on uvloop, as in production) caps its open connections, answering the next
ones 503 even in a burst, and raises a low soft open-files limit (often 1024) so the connections
its listeners admit fit, as far as the hard limit allows."""

from __future__ import annotations

import resource
import socket
from pathlib import Path

import pytest

from tests.support.rawhttp import exchange, request_head
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


@pytest.mark.timeout(60)
async def test_a_request_the_http_parser_refuses_is_answered_in_json(tmp_path: Path) -> None:
    """aiohttp's own answer was plain text that echoed up to 100 of the offending line's bytes
    (a signature header, say); every other refusal is JSON with a code."""
    server = ServeProcess(serve_config(tmp_path), serve_env(), tmp_path / "serve.log")
    server.start()
    ports = [int(url.rsplit(":", 1)[1]) for url in (server.ingest_url, server.admin_url)]
    secretish = b"v1," + b"Q" * 9000
    cases = [
        (b"POST /webhooks/p HTTP/1.1\r\nHost: x\r\nNoColonHere\r\n\r\n", "malformed"),
        (b"POST /webhooks/p HTTP/1.1\r\nwebhook-signature: " + secretish + b"\r\n\r\n", "longer"),
        (b"P@ST /webhooks/p HTTP/1.1\r\nHost: x\r\n\r\n", "method"),
    ]
    try:
        for port in ports:
            for raw, words in cases:
                resp = await exchange(port, raw)
                assert resp is not None and resp.status == 400, (port, raw[:40])
                assert resp.headers["content-type"] == "application/json"
                answer = resp.json()
                assert answer["error"] == "bad_request"
                assert words in answer["detail"]
                assert b"QQQQ" not in resp.body and b"NoColon" not in resp.body
        assert (await exchange(ports[0], request_head(b"/healthz", {}, method=b"GET"))) is not None
    finally:
        server.terminate()
    log = (tmp_path / "serve.log").read_text()
    # Logged (and counted) as before; a bad method on a connection's first request is what
    # TLS or a port scanner sends to an HTTP port, which aiohttp itself keeps at debug level.
    assert log.count('"http_protocol_error"') == 2 * (len(cases) - 1)
