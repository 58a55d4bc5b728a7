"""Fixtures for in-process integration tests: a real Receiver on a real SQLite file."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from receiver.config import load_config
from receiver.runtime import Receiver
from tests.support.factories import test_environ, write_config

MakeReceiver = Callable[..., Awaitable[Receiver]]


@pytest.fixture
async def make_receiver(tmp_path: Path) -> AsyncIterator[MakeReceiver]:
    """Build a Receiver from config overrides, with its store open; closed after the test."""
    opened: list[Receiver] = []

    async def make(environ: dict[str, str] | None = None, **overrides: Any) -> Receiver:
        path = write_config(tmp_path, **overrides)
        env = environ or test_environ()
        receiver = Receiver(load_config(path, environ=env), environ=env)
        await receiver.store.open()
        opened.append(receiver)
        return receiver

    yield make
    for receiver in opened:
        await receiver.store.close()


@dataclass
class Harness:
    client: TestClient[Any, Any]
    receiver: Receiver

    async def post(self, provider: str, body: bytes, headers: dict[str, str]) -> Any:
        return await self.client.post(f"/webhooks/{provider}", data=body, headers=headers)


@pytest.fixture
async def make_harness(
    make_receiver: MakeReceiver, aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]]
) -> Callable[..., Awaitable[Harness]]:
    """A test client on the ingest app of a receiver built from config overrides."""

    async def make(**overrides: Any) -> Harness:
        receiver = await make_receiver(**overrides)
        return Harness(client=await aiohttp_client(receiver.ingest_app), receiver=receiver)

    return make


@pytest.fixture
async def harness(make_harness: Callable[..., Awaitable[Harness]]) -> Harness:
    """The default receiver: one Standard Webhooks provider ``sw``."""
    return await make_harness()
