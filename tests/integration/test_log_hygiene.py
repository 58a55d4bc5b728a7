"""No secret and no body ever reaches a log line or the CLI's output, on any error path
(STYLE: "never a secret, a signature or a body").

A canary secret (configured through the environment, as in production) and a canary string in
every body are driven through each error path we can reach; then no captured line, in-process
or from a ``receiver serve`` subprocess, may contain either, nor any signature that was sent.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import socket
import struct
import time
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from receiver.cli import main as cli_main
from tests.integration.conftest import Harness
from tests.support import factories
from tests.support.factories import OTHER_SECRET, SECRET_ENV, signed_headers, write_config
from tests.support.logs import json_logs as capture_json_logs
from tests.support.rawhttp import exchange, request_head, sign_raw
from tests.support.serve import ServeProcess, serve_config, serve_env
from tests.support.storage import fill_up

MARKER = "CANARY" + uuid.uuid4().hex[:12].upper()  # base64-safe: letters and digits only
SECRET_MARKER = MARKER + "S3cr3t"
BODY_MARKER = MARKER + "b0dy"
# A valid Standard Webhooks secret whose text carries the marker (base64: a multiple of 4).
CANARY_SECRET = "whsec_" + (SECRET_MARKER + "A" * 64)[:48]
assert base64.b64decode(CANARY_SECRET.removeprefix("whsec_"))


def _body(n: int | str, **extra: Any) -> bytes:
    return json.dumps({"id": f"id-{n}", "type": "t", "note": BODY_MARKER, **extra}).encode()


def _assert_clean(text: str, signatures: list[str]) -> None:
    assert MARKER not in text, [line for line in text.splitlines() if MARKER in line][:3]
    leaked = [s for s in signatures if s and s.split(",", 1)[-1] in text]
    assert not leaked, leaked[:3]


@pytest.fixture
def json_logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """Structlog configured as ``receiver serve`` does it, at debug, into a buffer."""
    with capture_json_logs(monkeypatch, "debug") as buffer:
        yield buffer


async def test_no_error_path_logs_the_secret_a_body_or_a_signature(
    make_harness: Any,
    json_logs: io.StringIO,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Standard-library records at the level an unconfigured root logger lets through
    # (``receiver serve`` installs no stdlib handler): warnings and errors from aiohttp.
    caplog.set_level(logging.WARNING)
    env = factories.test_environ(**{SECRET_ENV: CANARY_SECRET})
    provider = {"scheme": "standard-webhooks", "secret_envs": [SECRET_ENV]}
    harness: Harness = await make_harness(
        environ=env,
        providers={"sw": provider, "swj": {**provider, "event_id": "json:id"}},
        server={"max_body_bytes": 4096},
    )
    sent: list[str] = []

    async def post(provider: str, body: bytes, headers: dict[str, str]) -> int:
        sent.append(headers.get("webhook-signature", ""))
        resp = await harness.post(provider, body, headers)
        await resp.read()
        return resp.status

    stale = datetime.now(tz=UTC) - timedelta(hours=2)
    ok = _body(1)
    statuses = [
        await post("sw", ok, signed_headers(ok, msg_id="m1", secret=CANARY_SECRET)),
        await post("sw", ok, signed_headers(ok, msg_id="m1", secret=CANARY_SECRET)),  # dup
        await post("sw", _body(2), signed_headers(_body(2), msg_id="m1", secret=CANARY_SECRET)),
        await post("sw", _body(3), signed_headers(ok, msg_id="m3", secret=CANARY_SECRET)),
        await post("sw", ok, signed_headers(ok, msg_id="m4", secret=OTHER_SECRET)),
        await post("sw", ok, signed_headers(ok, msg_id="m5", secret=CANARY_SECRET, at=stale)),
        await post("sw", ok, {"content-type": "application/json"}),
    ]
    broken = b'{"note": "' + BODY_MARKER.encode() + b'", '
    statuses.append(
        await post("sw", broken, signed_headers(broken, msg_id="m6", secret=CANARY_SECRET))
    )
    no_id = json.dumps({"note": BODY_MARKER}).encode()
    statuses.append(
        await post("swj", no_id, signed_headers(no_id, msg_id="m7", secret=CANARY_SECRET))
    )
    huge = _body(8, pad="p" * 5000)
    statuses.append(await post("sw", huge, signed_headers(huge, msg_id="m8", secret=CANARY_SECRET)))
    # A header the store cannot encode (see test_hostile_input): the 503 path.
    bad = _body(9)
    timestamp = int(time.time())
    signature = sign_raw(bad, msg_id=b"m9", timestamp=timestamp, secret=CANARY_SECRET)
    sent.append(signature.decode())
    head = request_head(
        b"/webhooks/sw",
        {
            b"content-type": b"application/json",
            b"content-length": str(len(bad)).encode(),
            b"webhook-id": b"m9",
            b"webhook-timestamp": str(timestamp).encode(),
            b"webhook-signature": signature,
            b"x-note": BODY_MARKER.encode() + b"\xff",
        },
    )
    port = harness.client.server.port
    assert port is not None
    raw = await exchange(port, head + bad)
    statuses.append(raw.status if raw is not None else 0)
    # Storage failure: the database is full.
    await fill_up(harness.receiver)
    big = _body(10, pad="z" * 3000)
    for i in range(5):
        statuses.append(
            await post("sw", big, signed_headers(big, msg_id=f"full{i}", secret=CANARY_SECRET))
        )

    assert statuses[:10] == [200, 200, 200, 401, 401, 401, 401, 400, 400, 413]
    assert 503 in statuses[11:]
    logged = json_logs.getvalue() + "\n".join(
        caplog.handler.format(record) for record in caplog.records
    )
    for event in (
        "event_accepted",
        "event_duplicate",
        "event_conflict",
        "signature_rejected",
        "request_rejected",
        "storage_unavailable",
    ):
        assert f'"{event}"' in logged, f"{event} was not logged: the path was not driven"
    _assert_clean(logged, sent)
    # A 503's line names the event it refused (its key is known before the write failed).
    refused = [
        json.loads(line)
        for line in json_logs.getvalue().splitlines()
        if '"event":"storage_unavailable"' in line
    ]
    assert refused and all(line["key"].startswith("sw:full") for line in refused)


async def test_stdlib_debug_logging_does_not_expose_bodies(
    make_harness: Any, json_logs: io.StringIO, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # as logging.basicConfig(level=logging.DEBUG) would
    env = factories.test_environ(**{SECRET_ENV: CANARY_SECRET})
    harness: Harness = await make_harness(environ=env)
    body = _body("dbg")
    resp = await harness.post("sw", body, signed_headers(body, msg_id="d", secret=CANARY_SECRET))
    assert resp.status == 200
    _assert_clean("\n".join(caplog.handler.format(r) for r in caplog.records), [])


def test_cli_config_errors_never_print_the_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path)
    outputs: list[str] = []
    codes: list[int] = []
    for value in [
        CANARY_SECRET,  # valid: the summary must still not show it
        "whsec_" + SECRET_MARKER + "!!",  # not base64
        SECRET_MARKER + "!",  # unprefixed, not base64
        "whpk_" + SECRET_MARKER,  # a public key of the wrong length
        "whsk_" + SECRET_MARKER + "AA",  # a signing key of the wrong length
    ]:
        monkeypatch.setenv(SECRET_ENV, value)
        codes.append(cli_main(["check-config", "--config", str(config)]))
        captured = capsys.readouterr()
        outputs.append(captured.out + captured.err)
    assert codes == [0, 2, 2, 2, 2]
    for text in outputs:
        assert MARKER not in text, text
    # A secret file is no different.
    secret_file = tmp_path / "secret.txt"
    secret_file.write_text("whsec_" + SECRET_MARKER + "!!\n", encoding="utf-8")
    doc = yaml.safe_load(config.read_text())
    doc["providers"]["sw"] = {"scheme": "standard-webhooks", "secret_files": [str(secret_file)]}
    config.write_text(yaml.safe_dump(doc), encoding="utf-8")
    assert cli_main(["check-config", "--config", str(config)]) == 2
    captured = capsys.readouterr()
    assert MARKER not in captured.out + captured.err
    assert "providers.sw" in captured.err


@pytest.mark.timeout(60)
async def test_serve_log_file_never_holds_the_secret_a_body_or_a_signature(
    tmp_path: Path,
) -> None:
    config = serve_config(tmp_path, server={"max_body_bytes": 2048})
    doc = yaml.safe_load(config.read_text())
    doc["logging"] = {"level": "debug", "format": "json"}
    config.write_text(yaml.safe_dump(doc), encoding="utf-8")
    server = ServeProcess(config, serve_env(**{SECRET_ENV: CANARY_SECRET}), tmp_path / "s.log")
    server.start()
    sent: list[str] = []
    statuses: list[int] = []
    stale = datetime.now(tz=UTC) - timedelta(hours=2)
    ok = _body("s1")
    deliveries = [
        (ok, signed_headers(ok, msg_id="s1", secret=CANARY_SECRET)),
        (ok, signed_headers(ok, msg_id="s1", secret=CANARY_SECRET)),
        (_body("x"), signed_headers(ok, msg_id="s2", secret=CANARY_SECRET)),
        (ok, signed_headers(ok, msg_id="s3", secret=OTHER_SECRET)),
        (ok, signed_headers(ok, msg_id="s4", secret=CANARY_SECRET, at=stale)),
        (b"{" + BODY_MARKER.encode(), signed_headers(b"{", msg_id="s5", secret=CANARY_SECRET)),
        (_body("big", pad="q" * 4000), {"content-type": "application/json"}),
    ]
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            for body, headers in deliveries:
                sent.append(headers.get("webhook-signature", ""))
                url = server.ingest_url + "/webhooks/sw"
                async with session.post(url, data=body, headers=headers) as resp:
                    statuses.append(resp.status)
        server.terminate()
    finally:
        server.kill()
    assert statuses == [200, 200, 401, 401, 401, 401, 413]
    text = server.log_path.read_text(encoding="utf-8", errors="replace")
    assert '"event_accepted"' in text and '"signature_rejected"' in text
    _assert_clean(text, sent)


@pytest.mark.timeout(60)
async def test_malformed_http_is_logged_as_one_line_without_its_bytes(tmp_path: Path) -> None:
    """aiohttp refuses these before any route and reports them with the raw bytes in the
    message: what reaches the log is the error's class and status, no traceback."""
    server = ServeProcess(serve_config(tmp_path), serve_env(), tmp_path / "s.log")
    server.start()
    port = int(server.settings["server"]["port"])
    signature = b"v1," + MARKER.encode()
    garbage = [
        request_head(b"/webhooks/sw", {b"webhook-signature": signature})[:-2]
        + b"BadHeader "
        + signature
        + b"\r\n\r\n",
        request_head(b"/webhooks/sw", {b"X-Long": signature + b"a" * 9000}),
        request_head(b"/webhooks/sw", {b"Transfer-Encoding": b"chunked"})
        + b"zz"
        + BODY_MARKER.encode()
        + b"\r\n",
    ]
    try:
        statuses = []
        for raw in garbage:
            resp = await exchange(port, raw)
            statuses.append(None if resp is None else resp.status)
        admin = f"http://127.0.0.1:{server.settings['admin']['port']}/metrics"
        metrics = await asyncio.to_thread(_read_url, admin)
        server.terminate()
    finally:
        server.kill()
    # Counted too: a log line alone is nothing an alert can fire on.
    counted = 'receiver_rejections_total{cause="http_protocol_error",provider=""}'
    assert f"{counted} {float(len(garbage))}" in metrics
    assert all(status is None or 400 <= status < 500 for status in statuses), statuses
    text = server.log_path.read_text(encoding="utf-8", errors="replace")
    _assert_clean(text, [])
    assert "Traceback" not in text and "Error handling request" not in text
    assert text.count('"http_protocol_error"') == len(garbage)


@pytest.mark.timeout(60)
async def test_a_client_that_resets_while_expecting_100_continue_is_no_server_error(
    tmp_path: Path,
) -> None:
    """Anyone could send ``Expect: 100-continue`` and reset the connection: each one was an
    error-level ``http_server_error`` line with a traceback (log flooding, error alerts)."""
    server = ServeProcess(serve_config(tmp_path), serve_env(), tmp_path / "s.log")
    server.start()
    port = int(server.settings["server"]["port"])
    head = request_head(b"/webhooks/sw", {b"Expect": b"100-continue", b"Content-Length": b"10"})
    try:
        for _ in range(10):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(head)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()  # a reset, not a close: the 100 Continue meets a dead socket
        await asyncio.sleep(0.5)
        resp = await exchange(port, request_head(b"/healthz", {}, method=b"GET"))
        assert resp is not None and resp.status == 200
        server.terminate()
    finally:
        server.kill()
    text = server.log_path.read_text(encoding="utf-8", errors="replace")
    assert "Traceback" not in text and "http_server_error" not in text
    assert '"level":"error"' not in text.replace(" ", "")


async def test_handler_failures_log_neither_the_secret_nor_the_body(
    make_receiver: Any, json_logs: io.StringIO, tmp_path: Path
) -> None:
    """A python handler that raises, an http handler that answers 500 and a command that exits
    non-zero, each fed a body carrying the canary: the job logs name the event, never its body
    or the provider's secret."""
    from aiohttp import web

    async def fail(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=500, text="downstream broke")

    app = web.Application()
    app.router.add_post("/hook", fail)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", factories.free_port())
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    script = tmp_path / "fail.sh"
    script.write_text("#!/bin/sh\ncat >/dev/null\nexit 3\n")
    script.chmod(0o755)
    env = factories.test_environ(**{SECRET_ENV: CANARY_SECRET})
    handlers = {
        "py": {"kind": "python", "target": "tests.integration.handler_targets:fail_twice"},
        "web": {"kind": "http", "url": f"http://127.0.0.1:{port}/hook", "timeout_s": 5},
        "cmd": {"kind": "command", "argv": [str(script)]},
    }
    receiver = await make_receiver(
        environ=env,
        providers={
            name: {
                "scheme": "standard-webhooks",
                "secret_envs": [SECRET_ENV],
                "handler": h,
                "max_attempts": 1,
            }
            for name, h in handlers.items()
        },
    )
    try:
        sent = []
        for name in handlers:
            body = _body(name)
            headers = signed_headers(body, msg_id=f"h-{name}", secret=CANARY_SECRET)
            sent.append(headers["webhook-signature"])
            from receiver.models import InboundRequest

            await receiver.service.ingest(
                InboundRequest(
                    provider=name,
                    method="POST",
                    url=f"http://127.0.0.1/webhooks/{name}",
                    headers={k.lower(): v for k, v in headers.items()},
                    body=body,
                )
            )
        await receiver.worker.run(until_empty=True)
        logged = json_logs.getvalue()
        assert logged.count('"job_dead"') == 3, logged
        _assert_clean(logged, sent)
    finally:
        await receiver.worker.stop()
        await runner.cleanup()


async def test_an_unverified_provider_is_warned_about_at_every_start_whatever_the_level(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from receiver.config import load_config
    from receiver.runtime import Receiver

    providers = {"open": {"scheme": "none", "event_id": "json:id"}}
    path = write_config(tmp_path, providers=providers)
    env = factories.test_environ()
    with capture_json_logs(monkeypatch, "error") as buffer:
        for _ in range(2):
            receiver = Receiver(load_config(path, environ=env), environ=env)
            await receiver.start()
            await receiver.stop()
        lines = [json.loads(line) for line in buffer.getvalue().splitlines()]
    warnings = [line for line in lines if line["event"] == "config_warning"]
    assert len(warnings) == 2
    assert warnings[0]["level"] == "warning"
    assert "provider open uses scheme 'none'" in warnings[0]["message"]
    # Starts and stops are shown whatever the level: a crash loop is seen as starts.
    events = [line["event"] for line in lines]
    assert (events.count("receiver_started"), events.count("receiver_stopped")) == (2, 2)


async def test_a_new_database_and_a_clock_behind_the_store_are_said_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A storage.path relative to another working directory started on a new, empty file
    (every key from before unknown) without a word; and a clock set back while the server
    was stopped goes unseen as a step, though the stored events say so."""
    from receiver.config import load_config
    from receiver.runtime import Receiver

    providers = {"open": {"scheme": "none", "event_id": "json:id"}}
    monkeypatch.chdir(tmp_path)
    path = write_config(tmp_path, providers=providers, storage={"path": "data/receiver.db"})
    env = factories.test_environ()
    now = time.time()
    with capture_json_logs(monkeypatch, "error") as buffer:
        for clock in (lambda: now, lambda: now, lambda: now - 86_400):
            receiver = Receiver(load_config(path, environ=env), environ=env, clock=clock)
            await receiver.start()
            if clock() == now:
                body = json.dumps({"id": f"evt_{uuid.uuid4().hex}"}).encode()
                url = f"http://127.0.0.1:{receiver.ingest_port}/webhooks/open"
                async with aiohttp.ClientSession() as session, session.post(url, data=body) as r:
                    assert r.status == 200, await r.text()
            await receiver.stop()
        lines = [json.loads(line) for line in buffer.getvalue().splitlines()]
    absolute = str(tmp_path / "data" / "receiver.db")
    created = [line for line in lines if line["event"] == "database_created"]
    assert [line["path"] for line in created] == [absolute]  # the first start only
    started = [line["database"] for line in lines if line["event"] == "receiver_started"]
    assert started == [absolute] * 3
    behind = [line for line in lines if line["event"] == "clock_behind_stored_events"]
    assert [(line["level"], line["behind_s"]) for line in behind] == [("warning", 86_400)]


async def test_an_admin_api_without_a_token_is_warned_about_at_every_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A misspelt ``admin.token_env`` left the admin API open on loopback without a word,
    where ``scheme: none`` is warned about at every start."""
    from receiver.config import load_config
    from receiver.runtime import Receiver

    path = write_config(tmp_path)
    closed = {**factories.test_environ(), "RECEIVER_ADMIN_TOKEN": "t0ken-for-this-test"}
    opened = {k: v for k, v in closed.items() if k != "RECEIVER_ADMIN_TOKEN"}
    with capture_json_logs(monkeypatch, "error") as buffer:
        for env in (closed, opened):
            receiver = Receiver(load_config(path, environ=env), environ=env)
            await receiver.start()
            await receiver.stop()
        lines = [json.loads(line) for line in buffer.getvalue().splitlines()]
    warnings = [line for line in lines if line["event"] == "admin_api_open"]
    assert len(warnings) == 1 and warnings[0]["level"] == "warning"
    assert "t0ken-for-this-test" not in buffer.getvalue()


def _read_url(url: str) -> str:
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy
    with direct.open(url, timeout=10) as resp:
        return str(resp.read().decode("utf-8"))
