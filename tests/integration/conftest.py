"""Fixtures for in-process integration tests: a real Receiver on a real SQLite file."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

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


async def ingest_client(
    aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]], app: web.Application
) -> TestClient[Any, Any]:
    """A test client on the ingest app served as `receiver serve` serves it: bodies as they
    came, never decompressed (aiohttp's test server would, and its options go unread)."""
    server = TestServer(app)
    await server.start_server(auto_decompress=False)
    return await aiohttp_client(server)


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
        client = await ingest_client(aiohttp_client, receiver.ingest_app)
        return Harness(client=client, receiver=receiver)

    return make


@pytest.fixture
async def harness(make_harness: Callable[..., Awaitable[Harness]]) -> Harness:
    """The default receiver: one Standard Webhooks provider ``sw``."""
    return await make_harness()


# --- admin API, retention and operations CLI (fixtures prefixed admin_) ---------------------

ADMIN_TOKEN = "admin-full-token-for-tests"
ADMIN_READ_TOKEN = "admin-read-token-for-tests"


class AdminClock:
    """A settable clock, injected into the receiver (so retention tests never sleep)."""

    def __init__(self, now_s: float | None = None) -> None:
        import time

        self.now_s = float(int(time.time())) if now_s is None else now_s

    def __call__(self) -> float:
        return self.now_s

    def advance(self, seconds: float) -> None:
        self.now_s += seconds


def admin_providers() -> dict[str, Any]:
    """``plain``, ``short`` and ``raw`` accept anything (scheme none); ``sw`` is Standard
    Webhooks. Only ``plain`` has a handler (the worker is not started: its jobs wait)."""
    from tests.support.factories import SECRET_ENV

    return {
        "plain": {
            "scheme": "none",
            "event_id": "json:id",
            "event_type": "json:type",
            "handler": {"kind": "python", "target": "tests.integration.handler_targets:record"},
        },
        "short": {
            "scheme": "none",
            "event_id": "json:id",
            "event_type": "json:type",
            "payload_retention": "1h",
            "dedupe_retention": "2h",
        },
        "raw": {"scheme": "none"},  # keyed by the body's SHA-256: takes any bytes
        "sw": {"scheme": "standard-webhooks", "secret_envs": [SECRET_ENV]},
    }


@dataclass
class AdminHarness:
    receiver: Receiver
    clock: AdminClock
    ingest: TestClient[Any, Any]
    admin: TestClient[Any, Any]
    config_path: Path

    async def deliver(
        self, provider: str, body: bytes | dict[str, Any], headers: dict[str, str] | None = None
    ) -> Any:
        """POST a delivery through the real ingest path; returns the parsed JSON answer."""
        import json

        raw = json.dumps(body).encode() if isinstance(body, dict) else body
        hdrs = {"content-type": "application/json", **(headers or {})}
        resp = await self.ingest.post(f"/webhooks/{provider}", data=raw, headers=hdrs)
        data = await resp.json()
        data["http_status"] = resp.status
        return data

    async def get(self, path: str, *, token: str | None = None, **params: Any) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return await self.admin.get(path, params=params, headers=headers)

    async def post(self, path: str, payload: object = None, *, token: str | None = None) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return await self.admin.post(path, json=payload, headers=headers)


MakeAdminHarness = Callable[..., Awaitable[AdminHarness]]


@pytest.fixture
async def admin_make_harness(
    tmp_path: Path, aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]]
) -> AsyncIterator[MakeAdminHarness]:
    """A receiver with an injected clock, its store open, clients on both of its apps."""
    opened: list[Receiver] = []

    async def make(*, with_tokens: bool = False, **overrides: Any) -> AdminHarness:
        overrides.setdefault("providers", admin_providers())
        env_extra: dict[str, str] = {}
        if with_tokens:
            overrides.setdefault("admin", {"read_token_env": "RECEIVER_ADMIN_READ_TOKEN"})
            env_extra = {
                "RECEIVER_ADMIN_TOKEN": ADMIN_TOKEN,
                "RECEIVER_ADMIN_READ_TOKEN": ADMIN_READ_TOKEN,
            }
        path = write_config(tmp_path, **overrides)
        env = test_environ(**env_extra)
        if not with_tokens:
            env.pop("RECEIVER_ADMIN_TOKEN", None)
        clock = AdminClock()
        receiver = Receiver(load_config(path, environ=env), clock=clock, environ=env)
        await receiver.store.open()
        opened.append(receiver)
        return AdminHarness(
            receiver=receiver,
            clock=clock,
            ingest=await ingest_client(aiohttp_client, receiver.ingest_app),
            admin=await aiohttp_client(receiver.admin_app),
            config_path=path,
        )

    yield make
    for receiver in opened:
        await receiver.store.close()


@pytest.fixture
async def admin_harness(admin_make_harness: MakeAdminHarness) -> AdminHarness:
    """Open admin (no token configured), providers ``plain``, ``short`` and ``sw``."""
    return await admin_make_harness()
