"""The ingest contract over real HTTP and a real SQLite file (DESIGN §1, §3)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import structlog

from tests.integration.conftest import Harness
from tests.support.factories import OTHER_SECRET, event_body, signed_headers


def _count(harness: Harness, sql: str) -> int:
    with sqlite3.connect(harness.receiver.config.settings.storage.path) as conn:
        return int(conn.execute(sql).fetchone()[0])


async def test_new_event_is_accepted_and_stored_byte_exact(harness: Harness) -> None:
    body = b'{"type":"order.created",  "data":{"n":1, "emoji":"\xc3\xa9"}}'
    resp = await harness.post("sw", body, signed_headers(body, msg_id="msg_1"))
    assert resp.status == 200
    answer = await resp.json()
    assert answer["status"] == "accepted"
    assert answer["key"] == "sw:msg_1"
    stored = await harness.receiver.store.get_event(int(answer["id"]))
    assert stored is not None
    assert stored.body == body
    assert stored.fingerprint == hashlib.sha256(body).hexdigest()
    assert stored.event_type == "order.created"
    assert stored.status == "received"  # no handler configured
    assert stored.headers is not None
    assert "webhook-signature" not in stored.headers
    assert stored.headers["webhook-id"] == "msg_1"


async def test_redelivery_is_a_duplicate_of_the_original(harness: Harness) -> None:
    body = event_body(1)
    first = await harness.post("sw", body, signed_headers(body, msg_id="msg_r"))
    # A real retry: same id, a later timestamp, so a different signature.
    later = datetime.now(tz=UTC) + timedelta(seconds=30)
    second = await harness.post("sw", body, signed_headers(body, msg_id="msg_r", at=later))
    a, b = await first.json(), await second.json()
    assert (a["status"], b["status"]) == ("accepted", "duplicate")
    assert a["id"] == b["id"] and a["key"] == b["key"]
    stored = await harness.receiver.store.get_event(int(a["id"]))
    assert stored is not None and stored.duplicate_count == 1
    assert _count(harness, "SELECT count(*) FROM events") == 1
    assert _count(harness, "SELECT count(*) FROM jobs") == 1


async def test_the_request_line_of_a_conflicting_redelivery_says_so(harness: Harness) -> None:
    """One line per request: the duplicate's line did not say its body differed."""
    first, other = event_body(1), event_body(2)
    with structlog.testing.capture_logs() as logs:
        for body in (first, first, other):
            await harness.post("sw", body, signed_headers(body, msg_id="msg_c"))
    lines = [line for line in logs if line["event"] == "event_duplicate"]
    assert [line.get("conflict") for line in lines] == [None, True]


async def test_fifty_concurrent_copies_make_one_event_and_one_job(harness: Harness) -> None:
    body = event_body("same")
    copies = [
        harness.post(
            "sw",
            body,
            signed_headers(body, msg_id="msg_c", at=datetime.now(tz=UTC) + timedelta(seconds=i)),
        )
        for i in range(50)
    ]
    responses = await asyncio.gather(*copies)
    answers = [await r.json() for r in responses]
    assert all(r.status == 200 for r in responses)
    statuses = sorted(a["status"] for a in answers)
    assert statuses.count("accepted") == 1
    assert statuses.count("duplicate") == 49
    assert len({a["id"] for a in answers}) == 1
    assert _count(harness, "SELECT count(*) FROM events") == 1
    assert _count(harness, "SELECT count(*) FROM jobs") == 1
    assert _count(harness, "SELECT duplicate_count FROM events") == 49


async def test_many_distinct_concurrent_events_are_all_stored(harness: Harness) -> None:
    bodies = [event_body(i) for i in range(200)]
    responses = await asyncio.gather(
        *(harness.post("sw", b, signed_headers(b, msg_id=f"m{i}")) for i, b in enumerate(bodies))
    )
    answers = [await r.json() for r in responses]
    assert {a["status"] for a in answers} == {"accepted"}
    assert len({a["id"] for a in answers}) == 200
    assert _count(harness, "SELECT count(*) FROM events") == 200
    assert _count(harness, "SELECT count(*) FROM jobs") == 200


async def _error(resp: Any) -> tuple[int, str]:
    data = await resp.json()
    assert set(data) == {"error", "detail"} and data["detail"]
    return resp.status, data["error"]


async def test_unknown_provider_is_404(harness: Harness) -> None:
    body = event_body(1)
    resp = await harness.post("nope", body, signed_headers(body, msg_id="x"))
    assert await _error(resp) == (404, "unknown_provider")


@pytest.mark.parametrize("path", ["/webhooks/..%2Fadmin", "/webhooks/sw/extra", "/webhooks/"])
async def test_path_tricks_are_404(harness: Harness, path: str) -> None:
    resp = await harness.client.post(path, data=b"{}")
    assert resp.status == 404
    assert (await resp.json())["error"] in {"unknown_provider", "not_found"}


async def test_other_methods_are_405_json(harness: Harness) -> None:
    resp = await harness.client.get("/webhooks/sw")
    assert await _error(resp) == (405, "method_not_allowed")


async def test_declared_oversized_body_is_413_before_reading(make_harness: Any) -> None:
    harness = await make_harness(server={"max_body_bytes": 1000})
    body = b"x" * 5000
    resp = await harness.post("sw", body, {"content-length": str(len(body))})
    assert await _error(resp) == (413, "payload_too_large")
    assert _count(harness, "SELECT count(*) FROM events") == 0


async def test_chunked_oversized_body_is_413(make_harness: Any) -> None:
    harness = await make_harness(server={"max_body_bytes": 1000})

    async def chunks() -> Any:
        for _ in range(20):
            yield b"y" * 200

    resp = await harness.client.post("/webhooks/sw", data=chunks())
    assert await _error(resp) == (413, "payload_too_large")


async def test_body_at_the_limit_is_accepted(make_harness: Any) -> None:
    body = event_body(1)
    harness = await make_harness(server={"max_body_bytes": len(body)})
    resp = await harness.post("sw", body, signed_headers(body, msg_id="edge"))
    assert resp.status == 200


async def test_tampered_body_is_401(harness: Harness) -> None:
    body = event_body(1)
    headers = signed_headers(body, msg_id="t1")
    resp = await harness.post("sw", event_body(2), headers)
    assert await _error(resp) == (401, "invalid_signature")
    assert _count(harness, "SELECT count(*) FROM events") == 0


async def test_wrong_secret_is_401(harness: Harness) -> None:
    body = event_body(1)
    resp = await harness.post("sw", body, signed_headers(body, msg_id="t2", secret=OTHER_SECRET))
    assert await _error(resp) == (401, "invalid_signature")


async def test_missing_signature_is_401(harness: Harness) -> None:
    resp = await harness.post("sw", event_body(1), {"content-type": "application/json"})
    assert await _error(resp) == (401, "missing_signature")


@pytest.mark.parametrize("skew_s", [-3600, 3600])
async def test_stale_and_future_timestamps_are_401(harness: Harness, skew_s: int) -> None:
    body = event_body(1)
    at = datetime.now(tz=UTC) + timedelta(seconds=skew_s)
    resp = await harness.post("sw", body, signed_headers(body, msg_id="t3", at=at))
    assert await _error(resp) == (401, "timestamp_out_of_tolerance")


@pytest.mark.parametrize(
    "signature",
    ["", "v1", "v1,", "v1,!!!notbase64", "garbage", "v2,abc", "v1,a v1,b,c", "v1,\u00e9\u00e9"],
)
async def test_mangled_signature_headers_are_401_never_5xx(
    harness: Harness, signature: str
) -> None:
    body = event_body(1)
    headers = signed_headers(body, msg_id="t4")
    headers["webhook-signature"] = signature
    resp = await harness.post("sw", body, headers)
    assert resp.status == 401


async def test_rotation_accepts_either_secret(make_harness: Any) -> None:
    from tests.support.factories import SECRET_ENV, TEST_SECRET, test_environ

    env = test_environ(PREVIOUS_SECRET=OTHER_SECRET)
    harness = await make_harness(
        environ=env,
        providers={
            "sw": {"scheme": "standard-webhooks", "secret_envs": [SECRET_ENV, "PREVIOUS_SECRET"]}
        },
    )
    for i, secret in enumerate([TEST_SECRET, OTHER_SECRET]):
        body = event_body(i)
        resp = await harness.post("sw", body, signed_headers(body, msg_id=f"rot{i}", secret=secret))
        assert resp.status == 200, await resp.text()


async def test_missing_event_id_is_400(make_harness: Any) -> None:
    harness = await make_harness(
        providers={"plain": {"scheme": "none", "event_id": "json:id"}},
    )
    resp = await harness.post("plain", b'{"type":"x"}', {"content-type": "application/json"})
    assert await _error(resp) == (400, "missing_event_id")


async def test_invalid_json_is_400_after_verification(make_harness: Any) -> None:
    harness = await make_harness(
        providers={"plain": {"scheme": "none", "event_id": "json:id"}},
    )
    resp = await harness.post("plain", b'{"id": "a",', {"content-type": "application/json"})
    assert await _error(resp) == (400, "invalid_body")


async def test_non_utf8_body_is_stored_byte_exact(make_harness: Any) -> None:
    harness = await make_harness(
        providers={"raw": {"scheme": "none", "event_id": "body_sha256"}},
    )
    body = bytes(range(256))
    resp = await harness.post("raw", body, {"content-type": "application/octet-stream"})
    answer = await resp.json()
    assert answer["status"] == "accepted"
    stored = await harness.receiver.store.get_event(int(answer["id"]))
    assert stored is not None and stored.body == body


async def test_same_key_different_body_keeps_the_original(harness: Harness) -> None:
    original, changed = event_body(1), event_body(2)
    first = await harness.post("sw", original, signed_headers(original, msg_id="k1"))
    second = await harness.post("sw", changed, signed_headers(changed, msg_id="k1"))
    a, b = await first.json(), await second.json()
    assert b["status"] == "duplicate" and b["id"] == a["id"]
    stored = await harness.receiver.store.get_event(int(a["id"]))
    assert stored is not None
    assert stored.body == original
    assert stored.conflict_count == 1
    assert _count(harness, "SELECT count(*) FROM conflicts") == 1


async def test_conflict_can_be_rejected_with_409(make_harness: Any) -> None:
    from tests.support.factories import SECRET_ENV

    harness = await make_harness(
        providers={
            "sw": {
                "scheme": "standard-webhooks",
                "secret_envs": [SECRET_ENV],
                "on_conflict": "reject",
            }
        }
    )
    original, changed = event_body(1), event_body(2)
    await harness.post("sw", original, signed_headers(original, msg_id="k2"))
    resp = await harness.post("sw", changed, signed_headers(changed, msg_id="k2"))
    assert await _error(resp) == (409, "key_conflict")
    # An identical redelivery is still a plain duplicate.
    again = await harness.post("sw", original, signed_headers(original, msg_id="k2"))
    assert (await again.json())["status"] == "duplicate"


async def test_event_id_override_with_template(make_harness: Any) -> None:
    harness = await make_harness(
        providers={"t": {"scheme": "none", "event_id": "{header:x-tenant}:{json:data.id}"}},
    )
    body = json.dumps({"data": {"id": 42}}).encode()
    resp = await harness.post("t", body, {"content-type": "application/json", "x-tenant": "acme"})
    assert (await resp.json())["key"] == "t:acme:42"


async def test_healthz_on_the_ingest_listener(harness: Harness) -> None:
    resp = await harness.client.get("/healthz")
    assert resp.status == 200


async def test_a_compressed_json_body_is_refused_in_words_that_say_why(make_harness: Any) -> None:
    """ "not valid JSON although Content-Type says it is" sent a developer to look at the
    JSON, while the body was gzip: its event ID cannot be read from it."""
    import gzip

    harness = await make_harness(providers={"raw": {"scheme": "none", "event_id": "json:id"}})
    body = gzip.compress(b'{"id": "evt_gz"}')
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    resp = await harness.post("raw", body, headers)
    assert resp.status == 400
    answer = await resp.json()
    assert answer["error"] == "invalid_body"
    assert "compressed (Content-Encoding: gzip)" in answer["detail"]


async def test_a_fault_of_ours_is_a_500_json_logged_with_its_traceback_and_stores_nothing(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The one answer no client causes: still JSON with a code, never a stack trace in the
    body; the traceback goes to the log, and the next delivery is served."""
    service = harness.receiver.service
    real = service.prepare
    calls = {"n": 0}

    def buggy_once(inbound: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("a bug of ours")
        return real(inbound)

    monkeypatch.setattr(service, "prepare", buggy_once)
    body = event_body("bug")
    with structlog.testing.capture_logs() as logs:
        resp = await harness.post("sw", body, signed_headers(body, msg_id="bug"))
    assert resp.status == 500
    assert await resp.json() == {
        "error": "internal_error",
        "detail": "an unexpected error occurred; it has been logged",
    }
    [line] = [e for e in logs if e["event"] == "unhandled_error"]
    assert line["path"] == "/webhooks/sw" and line["exc_info"] is True
    again = await harness.post("sw", body, signed_headers(body, msg_id="bug"))
    assert (again.status, (await again.json())["status"]) == (200, "accepted")
