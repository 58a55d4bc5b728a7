"""Admin bearer tokens: open without a token, 401 for a missing or wrong one, 403 for the
read-only token on a write; health and metrics stay open for probes and scrapers."""

from __future__ import annotations

from typing import Any

import pytest
import structlog

from receiver.server.admin_auth import Access, AdminTokens
from receiver.settings import AdminSettings
from tests.integration.conftest import (
    ADMIN_READ_TOKEN,
    ADMIN_TOKEN,
    AdminHarness,
    MakeAdminHarness,
)

_READ_PATHS = [
    "/admin/events",
    "/admin/events/1",
    "/admin/rejections",
    "/admin/stats",
    "/admin/openapi.json",
]


@pytest.fixture
async def admin_secured(admin_make_harness: MakeAdminHarness) -> AdminHarness:
    h = await admin_make_harness(with_tokens=True)
    await h.deliver("plain", {"id": "x1", "type": "t"})
    return h


@pytest.mark.parametrize(
    "headers",
    [
        {"Host": "rebind.evil.example:8081"},  # DNS rebinding: a page's own name, our address
        {"Host": "10.0.0.5:8081"},
        {"Origin": "http://evil.example"},  # a cross-site form post or fetch
        {"Origin": "null"},  # a sandboxed page
        {"Origin": "http://localhost:3000"},  # another port of this machine: another origin
        {"Origin": "http://127.0.0.1:3000", "Host": "127.0.0.1:8081"},
    ],
)
async def test_an_open_admin_api_refuses_what_a_web_page_could_send(
    admin_harness: AdminHarness, headers: dict[str, str]
) -> None:
    """Without a token the API trusts callers on this machine; a browser tab is one too."""
    h = admin_harness
    await h.deliver("plain", {"id": "x1", "type": "t"})
    read = await h.admin.get("/admin/events/1", headers=headers)
    assert read.status == 403
    assert (await read.json())["error"] == "forbidden"
    write = await h.admin.post(
        "/admin/replay",
        data=b'{"provider": "plain"}',
        headers={"Content-Type": "text/plain;charset=UTF-8", **headers},
    )
    assert write.status == 403
    assert (await h.get("/admin/stats")).status == 200


@pytest.mark.parametrize(
    "headers",
    [
        {"Host": "localhost:8081"},
        {"Host": "[::1]:8081"},
        {"Host": "127.0.0.2"},
        {"Origin": "http://127.0.0.1:8081", "Host": "127.0.0.1:8081"},  # its own page
    ],
)
async def test_an_open_admin_api_serves_this_machine(
    admin_harness: AdminHarness, headers: dict[str, str]
) -> None:
    assert (await admin_harness.admin.get("/admin/stats", headers=headers)).status == 200


async def test_with_a_token_any_host_name_works(admin_secured: AdminHarness) -> None:
    """Behind a proxy or a DNS name: the bearer token is what protects it then."""
    headers = {"Host": "receiver.internal:443", "Authorization": f"Bearer {ADMIN_TOKEN}"}
    assert (await admin_secured.admin.get("/admin/stats", headers=headers)).status == 200


async def test_no_token_configured_means_open_access(admin_harness: AdminHarness) -> None:
    await admin_harness.deliver("plain", {"id": "x1", "type": "t"})
    for path in _READ_PATHS:
        assert (await admin_harness.get(path)).status == 200, path
    resp = await admin_harness.post("/admin/events/1/replay", {"reason": "open"})
    assert resp.status == 200


@pytest.mark.parametrize("path", _READ_PATHS)
@pytest.mark.parametrize("token", [None, "wrong", ADMIN_TOKEN + "x", ADMIN_TOKEN[:-1]])
async def test_missing_or_wrong_token_is_401(
    admin_secured: AdminHarness, path: str, token: str | None
) -> None:
    resp = await admin_secured.get(path, token=token)
    assert resp.status == 401
    assert (await resp.json())["error"] == "unauthorized"
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "authorization",
    [f"Basic {ADMIN_TOKEN}", ADMIN_TOKEN, "Bearer", "Bearer ", f"Token {ADMIN_TOKEN}"],
)
async def test_malformed_authorization_is_401(
    admin_secured: AdminHarness, authorization: str
) -> None:
    resp = await admin_secured.admin.get("/admin/stats", headers={"Authorization": authorization})
    assert resp.status == 401


@pytest.mark.parametrize("token", [ADMIN_TOKEN, ADMIN_READ_TOKEN])
@pytest.mark.parametrize("path", _READ_PATHS)
async def test_both_tokens_read(admin_secured: AdminHarness, token: str, path: str) -> None:
    assert (await admin_secured.get(path, token=token)).status == 200


async def test_read_only_token_cannot_replay(admin_secured: AdminHarness) -> None:
    h = admin_secured
    for path, payload in (
        ("/admin/events/1/replay", {"reason": "try"}),
        ("/admin/replay", {"reason": "try", "provider": "plain"}),
    ):
        resp = await h.post(path, payload, token=ADMIN_READ_TOKEN)
        assert resp.status == 403
        assert (await resp.json())["error"] == "forbidden"
    detail = await (await h.get("/admin/events/1", token=ADMIN_TOKEN)).json()
    assert detail["requeues"] == []  # nothing happened


async def test_full_token_replays(admin_secured: AdminHarness) -> None:
    resp = await admin_secured.post("/admin/events/1/replay", {"reason": "ok"}, token=ADMIN_TOKEN)
    assert resp.status == 200


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
async def test_probes_and_metrics_need_no_token(admin_secured: AdminHarness, path: str) -> None:
    resp = await admin_secured.get(path)
    # Answered, not refused for a missing token; /readyz is 503 here only for its worker,
    # which this harness does not start.
    assert resp.status == (503 if path == "/readyz" else 200)
    if path == "/readyz":
        assert (await resp.json())["checks"] == {"store": True, "worker": False}


def test_tokens_from_the_environment() -> None:
    settings = AdminSettings(token_env="FULL", read_token_env="READ")
    tokens = AdminTokens.from_env(settings, {"FULL": "f", "READ": "r"})
    assert tokens.access_for("Bearer f") is Access.FULL
    assert tokens.access_for("bearer r") is Access.READ
    assert tokens.access_for("Bearer x") is None
    assert AdminTokens.from_env(settings, {}).access_for(None) is Access.OPEN
    assert AdminTokens.from_env(settings, {"FULL": ""}).is_open
    # A token mounted from a file ends in a newline no Authorization header carries.
    padded = AdminTokens.from_env(settings, {"FULL": "f\n", "READ": " r\r\n"})
    assert (padded.access_for("Bearer f"), padded.access_for("Bearer r")) == (
        Access.FULL,
        Access.READ,
    )
    assert AdminTokens.from_env(settings, {"FULL": " \n"}).is_open  # as serve's check reads it


def test_only_a_read_token_fails_closed_for_writes() -> None:
    tokens = AdminTokens(read="r")
    assert tokens.access_for(None) is None
    assert tokens.access_for("Bearer r") is Access.READ


async def test_unicode_token_is_compared_safely(admin_secured: AdminHarness) -> None:
    resp: Any = await admin_secured.admin.get(
        "/admin/stats", headers={"Authorization": "Bearer caf\u00e9"}
    )
    assert resp.status == 401


async def test_each_admin_request_is_one_line_and_a_refused_token_a_warning(
    admin_secured: AdminHarness,
) -> None:
    """Admin requests left no line at all: a token being guessed did not show anywhere."""
    h = admin_secured
    dry_run = {"provider": "plain", "dry_run": True}
    with structlog.testing.capture_logs() as logs:
        await h.get("/admin/events", token=ADMIN_READ_TOKEN, q="alice@example.com")
        await h.get("/admin/stats", token="guess")
        await h.post("/admin/replay", dry_run, token=ADMIN_READ_TOKEN)
        await h.post("/admin/replay", dry_run, token=ADMIN_TOKEN)
        await h.get("/healthz")
        await h.get("/metrics")
    lines = [(e["event"], e["log_level"], e["path"], e["status"], e["access"]) for e in logs]
    assert lines == [
        ("admin_request", "info", "/admin/events", 200, "read"),
        ("admin_refused", "warning", "/admin/stats", 401, "none"),
        ("admin_refused", "warning", "/admin/replay", 403, "read"),
        ("admin_request", "info", "/admin/replay", 200, "full"),
    ]
    assert "alice" not in repr(logs) and ADMIN_TOKEN not in repr(logs)
