"""``receiver serve`` writes JSON lines to stdout: a ``python`` handler's ``print()`` there was
raw text among them, which a log collector parsing JSON drops or chokes on. It is a log line of
its own now, ``printed``."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest

from tests.support.factories import python_provider
from tests.support.serve import ServeProcess, serve_config, serve_env


@pytest.mark.timeout(60)
async def test_what_a_handler_prints_is_a_json_log_line(tmp_path: Path) -> None:
    providers = {
        name: python_provider(target) for name, target in (("a", "prints"), ("s", "prints_sync"))
    }
    config = serve_config(tmp_path, providers=providers)  # logging.format: json
    server = ServeProcess(config, serve_env(), tmp_path / "serve.log")
    server.start()
    try:
        async with aiohttp.ClientSession() as session:
            for name in ("a", "s"):
                url = f"{server.ingest_url}/webhooks/{name}"
                async with session.post(url, json={"id": f"{name}1"}) as resp:
                    assert resp.status == 200
        for _ in range(500):  # bounded: at most ~5 s
            if server.log_path.read_text().count('"job_succeeded"') >= 2:
                break
            await asyncio.sleep(0.01)
    finally:
        server.terminate()
    lines = server.log_path.read_text().splitlines()
    parsed = [json.loads(line) for line in lines]  # every line, the printed ones too
    printed = sorted(line["text"] for line in parsed if line["event"] == "printed")
    assert printed == ["handled a:a1 (async)", "handled s:s1 (in a thread)"]
