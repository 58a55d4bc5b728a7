"""The worker inside a running :class:`Receiver`, and handler checks in the config loader."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import aiohttp
import pytest

from receiver.config import load_config
from receiver.errors import ConfigError
from receiver.runtime import Receiver
from tests.integration import handler_targets as targets
from tests.support import factories
from tests.support.factories import write_config

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
        "providers.nomodule.handler.target",
        "providers.noattr.handler.target",
        "providers.notcallable.handler.target",
        "providers.missing.handler.argv.0",
        "providers.notonpath.handler.argv.0",
        "providers.noexec.handler.argv.0",
    }
    assert "http:// or https://" in problems["providers.ftp.handler.url"]
    assert "cannot import receiver_no_such_module" in problems["providers.nomodule.handler.target"]
    assert "no attribute no_such_function" in problems["providers.noattr.handler.target"]
    assert "not callable" in problems["providers.notcallable.handler.target"]
    assert "does not exist" in problems["providers.missing.handler.argv.0"]
    assert "not found on PATH" in problems["providers.notonpath.handler.argv.0"]
    assert "not executable" in problems["providers.noexec.handler.argv.0"]


async def test_a_running_receiver_processes_what_it_acknowledges(tmp_path: Path) -> None:
    providers = {
        "shop": {
            "scheme": "none",
            "event_id": "json:id",
            "handler": {"kind": "python", "target": f"{TARGETS}:record"},
        },
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
    assert not await receiver.worker.check_running()
    with closing(sqlite3.connect(tmp_path / "receiver.db")) as conn:
        statuses = dict(conn.execute("SELECT provider, status FROM events").fetchall())
    assert statuses == {"shop": "succeeded", "quiet": "received"}


async def _until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0.01)
