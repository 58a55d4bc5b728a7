"""Factories shared by the suites: configs on disk, signed deliveries, events, free ports."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from standardwebhooks.webhooks import Webhook

from receiver.models import NewEvent

# An obviously fake Standard Webhooks secret: "whsec_" + base64 of 32 fixed bytes.
TEST_SECRET = "whsec_" + base64.b64encode(b"receiver-test-secret-0123456789a").decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"receiver-other-secret-012345678b").decode()
SECRET_ENV = "TEST_WEBHOOK_SECRET"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(
    tmp_path: Path,
    *,
    providers: Mapping[str, Any] | None = None,
    storage: Mapping[str, Any] | None = None,
    server: Mapping[str, Any] | None = None,
    admin: Mapping[str, Any] | None = None,
    worker: Mapping[str, Any] | None = None,
) -> Path:
    """A config file in ``tmp_path`` with one Standard Webhooks provider ``sw`` by default."""
    doc: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": 0, **(server or {})},
        "admin": {"host": "127.0.0.1", "port": 0, **(admin or {})},
        "storage": {"path": str(tmp_path / "receiver.db"), **(storage or {})},
        "logging": {"format": "json"},
        "providers": dict(
            providers or {"sw": {"scheme": "standard-webhooks", "secret_envs": [SECRET_ENV]}}
        ),
    }
    if worker:
        doc["worker"] = dict(worker)
    path = tmp_path / "receiver.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def python_provider(target: str) -> dict[str, Any]:
    """An unverified provider keyed by ``json:id`` whose handler is ``target`` in
    ``tests.integration.handler_targets``."""
    return {
        "scheme": "none",
        "event_id": "json:id",
        "handler": {"kind": "python", "target": f"tests.integration.handler_targets:{target}"},
    }


def test_environ(**extra: str) -> dict[str, str]:
    return {**os.environ, SECRET_ENV: TEST_SECRET, **extra}


test_environ.__test__ = False  # type: ignore[attr-defined]  # a factory, not a test to collect


def signed_headers(
    body: bytes,
    *,
    msg_id: str,
    secret: str = TEST_SECRET,
    at: datetime | None = None,
) -> dict[str, str]:
    """Headers exactly as a Standard Webhooks sender would produce them (signed by the SDK)."""
    when = at or datetime.now(tz=UTC)
    signature = Webhook(secret).sign(msg_id, when, body.decode("utf-8"))
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": signature,
    }


def event_body(n: int | str, **fields: Any) -> bytes:
    return json.dumps({"type": "order.created", "data": {"n": n, **fields}}).encode()


def new_event(
    provider: str,
    n: int,
    *,
    now: float,
    body: bytes | None = None,
    content_type: str = "application/json",
    has_handler: bool = True,
    serialize_key: str | None = None,
    headers: dict[str, str] | None = None,
) -> NewEvent:
    """A verified, keyed event as ingest hands it to the store (key ``{provider}:evt_{n}``)."""
    payload = body if body is not None else json.dumps({"n": n}).encode()
    return NewEvent(
        provider=provider,
        key=f"{provider}:evt_{n}",
        provider_event_id=f"evt_{n}",
        event_type="order.created",
        body=payload,
        headers={"content-type": content_type, "x-shop": "demo", **(headers or {})},
        content_type=content_type,
        fingerprint=hashlib.sha256(payload).hexdigest(),
        received_at_s=now,
        payload_expires_at_s=now + 86_400,
        dedupe_expires_at_s=now + 30 * 86_400,
        has_handler=has_handler,
        serialize_key=serialize_key,
    )
