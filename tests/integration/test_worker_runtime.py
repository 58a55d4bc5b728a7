"""The worker inside a running :class:`Receiver`, and handler checks in the config loader."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import sys
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from receiver.config import load_config
from receiver.errors import ConfigError
from receiver.runtime import Receiver
from tests.integration import handler_targets as targets
from tests.support import factories
from tests.support.factories import python_provider, write_config

TARGETS = "tests.integration.handler_targets"


@pytest.fixture(autouse=True)
def _fresh_targets() -> None:
    targets.reset()


def _problems(tmp_path: Path, handlers: dict[str, dict[str, object]]) -> dict[str, str]:
    providers = {name: {"scheme": "none", "handler": h} for name, h in handlers.items()}
    path = write_config(tmp_path, providers=providers)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ=factories.test_environ())
    return {problem.path: problem.message for problem in info.value.problems}


def test_unusable_handlers_are_config_problems_at_their_key_paths(tmp_path: Path) -> None:
    not_executable = tmp_path / "script"
    not_executable.write_text("#!/bin/sh\n")
    problems = _problems(
        tmp_path,
        {
            "ftp": {"kind": "http", "url": "ftp://127.0.0.1/hook"},
            "hostless": {"kind": "http", "url": "http:///hook"},
            "ipv6": {"kind": "http", "url": "http://[::1/hook"},
            "port": {"kind": "http", "url": "http://127.0.0.1:99999/hook"},
            "nomodule": {"kind": "python", "target": "receiver_no_such_module:handle"},
            "noattr": {"kind": "python", "target": f"{TARGETS}:no_such_function"},
            "notcallable": {"kind": "python", "target": f"{TARGETS}:not_callable"},
            "missing": {"kind": "command", "argv": [str(tmp_path / "nope")]},
            "notonpath": {"kind": "command", "argv": ["receiver-no-such-program"]},
            "noexec": {"kind": "command", "argv": [str(not_executable)]},
            "fine": {"kind": "python", "target": f"{TARGETS}:record"},
        },
    )
    assert set(problems) == {
        "providers.ftp.handler.url",
        "providers.hostless.handler.url",
        "providers.ipv6.handler.url",
        "providers.port.handler.url",
        "providers.nomodule.handler.target",
        "providers.noattr.handler.target",
        "providers.notcallable.handler.target",
        "providers.missing.handler.argv.0",
        "providers.notonpath.handler.argv.0",
        "providers.noexec.handler.argv.0",
    }
    assert "http:// or https://" in problems["providers.ftp.handler.url"]
    assert "not a valid URL" in problems["providers.ipv6.handler.url"]
    assert "not a valid URL" in problems["providers.port.handler.url"]
    assert "cannot import receiver_no_such_module" in problems["providers.nomodule.handler.target"]
    assert "no attribute no_such_function" in problems["providers.noattr.handler.target"]
    assert "not callable" in problems["providers.notcallable.handler.target"]
    assert "does not exist" in problems["providers.missing.handler.argv.0"]
    assert "not found on PATH" in problems["providers.notonpath.handler.argv.0"]
    assert "not executable" in problems["providers.noexec.handler.argv.0"]


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({"Content-Length": "1"}, "Content-Length is set by receiver"),
        ({"transfer-encoding": "chunked"}, "transfer-encoding is set by receiver"),
        ({"Idempotency-Key": "mine"}, "Idempotency-Key is set by receiver"),
        ({"Receiver-Attempt": "9"}, "Receiver-Attempt is set by receiver"),
        ({"Bad Name": "x"}, "not a valid header name"),
        ({"X-Token": "a\r\nX-Injected: 1"}, "control character"),
    ],
)
def test_handler_headers_cannot_reframe_or_impersonate_the_request(
    tmp_path: Path, headers: dict[str, str], message: str
) -> None:
    """A configured Content-Length used to cut the forwarded body short, silently."""
    handler = {"kind": "http", "url": "http://127.0.0.1:9/hook", "headers": headers}
    problems = _problems(tmp_path, {"p": handler})
    assert message in problems["providers.p.handler.headers"], problems


@pytest.mark.parametrize("where", ["headers", "header_envs"])
def test_url_credentials_and_an_authorization_header_cannot_both_be_configured(
    tmp_path: Path, where: str
) -> None:
    """aiohttp refuses to send both: check-config passed it, then every attempt failed and
    every event went dead."""
    handler = {
        "kind": "http",
        "url": "http://user:Pa55word@127.0.0.1:9/hook",
        where: {"Authorization": "PATH" if where == "header_envs" else "Bearer t"},
    }
    problems = _problems(tmp_path, {"p": handler})
    [message] = [m for path, m in problems.items() if path.startswith("providers.p.handler")]
    assert "only one can be sent" in message
    assert "Pa55word" not in str(problems)


async def test_a_running_receiver_processes_what_it_acknowledges(tmp_path: Path) -> None:
    providers = {
        "shop": python_provider("record"),
        "quiet": {"scheme": "none", "event_id": "json:id"},
    }
    path = write_config(tmp_path, providers=providers, worker={"poll_interval_s": 30})
    env = factories.test_environ()
    receiver = Receiver(load_config(path, environ=env), environ=env)
    await receiver.start()
    try:
        base = f"http://127.0.0.1:{receiver.ingest_port}/webhooks"
        async with aiohttp.ClientSession() as session:
            for provider in ("shop", "quiet"):
                async with session.post(
                    f"{base}/{provider}",
                    data=b'{"id": "evt_1", "type": "order.created"}',
                    headers={"content-type": "application/json"},
                ) as resp:
                    assert resp.status == 200
            # Woken by the commit, not by the 30 s poll.
            await asyncio.wait_for(_until(lambda: len(targets.STATE.calls) == 1), timeout=10)
            admin = f"http://127.0.0.1:{receiver.admin_port}"
            async with session.get(f"{admin}/readyz") as resp:
                ready = await resp.json()
        assert ready["checks"]["worker"] is True
        assert targets.STATE.calls[0].key == "shop:evt_1"
    finally:
        await receiver.stop()
    assert await receiver.worker.not_running_reason() is not None
    with closing(sqlite3.connect(tmp_path / "receiver.db")) as conn:
        statuses = dict(conn.execute("SELECT provider, status FROM events").fetchall())
    assert statuses == {"shop": "succeeded", "quiet": "received"}


async def _until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0.01)


async def test_a_dead_event_redelivered_after_being_remembered_is_queued_again(
    tmp_path: Path,
) -> None:
    """Redeliveries are answered from memory once the key is committed; an event that went
    dead must still reach the store, which queues it again (requeue_dead)."""
    from tests.support.factories import event_body, signed_headers

    env = factories.test_environ()
    path = write_config(
        tmp_path,
        providers={
            "sw": {
                "scheme": "standard-webhooks",
                "secret_envs": [factories.SECRET_ENV],
                "handler": {"kind": "python", "target": f"{TARGETS}:refuse"},
            }
        },
    )
    receiver = Receiver(load_config(path, environ=env), environ=env)
    await receiver.store.open()
    try:
        body = event_body("dead")
        headers = signed_headers(body, msg_id="dead-1")
        service = receiver.service
        from receiver.models import InboundRequest

        def request() -> InboundRequest:
            return InboundRequest(
                provider="sw",
                method="POST",
                url="http://127.0.0.1/webhooks/sw",
                headers={k.lower(): v for k, v in headers.items()},
                body=body,
            )

        first = await service.ingest(request())
        remembered = await service.ingest(request())  # answered from memory
        assert remembered.outcomes[0].id == first.outcomes[0].id  # type: ignore[union-attr]
        await receiver.worker.run(until_empty=True)
        stored = await receiver.store.get_event(first.outcomes[0].id)  # type: ignore[union-attr]
        assert stored is not None
        assert stored.status == "dead"
        again = await service.ingest(request())
        outcome = again.outcomes[0]  # type: ignore[union-attr]
        assert outcome.requeued  # type: ignore[union-attr]
        stored = await receiver.store.get_event(outcome.id)
        assert stored is not None
        assert stored.status == "queued"
        assert stored.duplicate_count == 2
        with contextlib.closing(sqlite3.connect(receiver.store.db.path)) as conn:
            (enqueued_at,) = conn.execute(
                "SELECT enqueued_at FROM jobs WHERE event_id = ?", (outcome.id,)
            ).fetchone()
        # Queued anew by the redelivery: the unfinished age counts from it, not from receipt.
        assert enqueued_at == stored.last_seen_at_s > stored.received_at_s
    finally:
        await receiver.worker.stop()
        await receiver.store.close()


async def test_commands_inherit_neither_webhook_secrets_nor_admin_tokens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOWNSTREAM_AUTH", "Bearer downstream-token-not-for-commands")
    monkeypatch.setenv("RECEIVER_ADMIN_TOKEN", "admin-token-not-for-commands")
    monkeypatch.setenv("RECEIVER_ADMIN_READ_TOKEN", "read-token-not-for-commands")
    monkeypatch.setenv("SHOP_SECRET", "whsec_" + "A" * 44)
    monkeypatch.setenv("SHOP_UNRELATED", "visible")
    out = tmp_path / "env.json"
    script = tmp_path / "dump-env"
    script.write_text(
        f"#!{sys.executable}\nimport json, os, sys\nsys.stdin.buffer.read()\n"
        f"open({str(out)!r}, 'w').write(json.dumps(sorted(os.environ)))\n"
    )
    script.chmod(0o755)
    providers = {
        "shop": {
            "scheme": "standard-webhooks",
            "secret_envs": ["SHOP_SECRET"],
            "event_id": "json:id",
            "handler": {"kind": "command", "argv": [str(script)]},
        },
        "crm": {  # another provider's http handler, its token in the environment
            "scheme": "none",
            "handler": {
                "kind": "http",
                "url": "http://127.0.0.1:9/hook",
                "header_envs": {"Authorization": "DOWNSTREAM_AUTH"},
            },
        },
    }
    path = write_config(
        tmp_path, providers=providers, admin={"read_token_env": "RECEIVER_ADMIN_READ_TOKEN"}
    )
    receiver = Receiver(load_config(path))
    await receiver.store.open()
    try:
        await receiver.store.record(factories.new_event("shop", 1, now=time.time()))
        await receiver.worker.run(until_empty=True)
    finally:
        await receiver.store.close()
    names = set(json.loads(out.read_text()))
    assert "SHOP_UNRELATED" in names
    withheld = {
        "SHOP_SECRET",
        "DOWNSTREAM_AUTH",
        "RECEIVER_ADMIN_TOKEN",
        "RECEIVER_ADMIN_READ_TOKEN",
    }
    assert not names & withheld


async def test_a_slow_admin_read_holds_up_neither_the_worker_nor_its_queue_gauge(
    tmp_path: Path,
) -> None:
    """The worker counted its queue on the reader connection inside its loop: behind a slow
    admin read (``/admin/stats`` takes most of a second on a large database) it claimed
    nothing, and took the wait for the count's own cost, leaving the gauge stale for a minute."""
    providers = {"shop": python_provider("record")}
    path = write_config(tmp_path, providers=providers, worker={"poll_interval_s": 0.05})
    env = factories.test_environ()
    receiver = Receiver(load_config(path, environ=env), environ=env)
    await receiver.start()
    try:
        await asyncio.sleep(0.2)  # the first count is done; the next is due at every poll
        base = f"http://127.0.0.1:{receiver.ingest_port}/webhooks/shop"
        async with receiver.store.db.reading():  # an admin read that takes a while
            async with aiohttp.ClientSession() as session:
                for i in range(3):
                    async with session.post(base, data=f'{{"id": "e{i}"}}'.encode()) as resp:
                        assert resp.status == 200
            await asyncio.wait_for(_until(lambda: len(targets.STATE.calls) == 3), timeout=5)
        gauge = receiver.metrics.queue_depth.labels("shop")
        await asyncio.wait_for(_until(lambda: gauge._value.get() == 0), timeout=5)
        assert receiver.worker._stats_due_at < time.monotonic() + 1
    finally:
        await receiver.stop()


def test_a_handler_header_secret_comes_from_the_environment(tmp_path: Path) -> None:
    """A downstream's token must not have to sit in the YAML: ``header_envs`` names the
    variable; unset, it is a problem naming the header, like an unset webhook secret."""
    handler = {
        "kind": "http",
        "url": "http://127.0.0.1:9/hook",
        "header_envs": {"Authorization": "DOWNSTREAM_AUTH_FOR_TESTS"},
    }
    problems = _problems(tmp_path, {"p": handler})
    assert (
        "DOWNSTREAM_AUTH_FOR_TESTS is not set"
        in problems["providers.p.handler.header_envs.Authorization"]
    )


async def test_the_header_secret_reaches_the_downstream(
    tmp_path: Path, aiohttp_server: Any
) -> None:
    seen: list[str | None] = []

    async def downstream(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", downstream)
    server = await aiohttp_server(app)
    handler = {
        "kind": "http",
        "url": str(server.make_url("/hook")),
        "header_envs": {"Authorization": "DOWNSTREAM_AUTH_FOR_TESTS"},
    }
    providers = {"p": {"scheme": "none", "event_id": "json:id", "handler": handler}}
    path = write_config(tmp_path, providers=providers)
    env = factories.test_environ(DOWNSTREAM_AUTH_FOR_TESTS="Bearer downstream-token")
    receiver = Receiver(load_config(path, environ=env), environ=env)
    await receiver.start()
    try:
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{receiver.ingest_port}/webhooks/p"
            async with session.post(url, data=b'{"id": "a1"}') as resp:
                assert resp.status == 200
        await asyncio.wait_for(_until(lambda: bool(seen)), timeout=10)
    finally:
        await receiver.stop()
    assert seen == ["Bearer downstream-token"]
