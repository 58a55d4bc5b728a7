"""Fixtures for end-to-end tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from tests.support.sink import IdempotentSink


@pytest.fixture
async def sink() -> AsyncIterator[IdempotentSink]:
    sink = IdempotentSink(delay_s=1.0)
    app = web.Application()
    app.router.add_post("/effects", sink.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    sink.url = f"http://127.0.0.1:{port}/effects"
    yield sink
    await runner.cleanup()
