"""``/metrics`` moves with accepts, duplicates, conflicts and rejections (by cause)."""

from __future__ import annotations

import errno
import functools
import io
import re
import sys
from typing import Any

import pytest

from receiver.logs import configure_logging, reset_logging
from tests.integration.conftest import AdminHarness
from tests.support.factories import python_provider


def _value(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}(?:\{{(.*)\}})? (\S+)", line)
        if match and ",".join(sorted((match.group(1) or "").split(","))) == wanted:
            return float(match.group(2))
    return 0.0


async def test_metrics_follow_accept_duplicate_conflict_and_reject(
    admin_harness: AdminHarness,
) -> None:
    h = admin_harness

    async def metrics() -> str:
        resp = await h.get("/metrics")
        assert resp.status == 200
        return str(await resp.text())

    before = await metrics()
    assert _value(before, "receiver_deliveries_total", outcome="accepted", provider="plain") == 0
    await h.deliver("plain", {"id": "1", "type": "t"})
    await h.deliver("plain", {"id": "1", "type": "t"})
    await h.deliver("plain", {"id": "1", "type": "changed"})
    await h.deliver("plain", b"{broken")
    await h.ingest.post("/webhooks/sw", data=b"{}")
    after = await metrics()
    assert _value(after, "receiver_deliveries_total", outcome="accepted", provider="plain") == 1
    assert _value(after, "receiver_deliveries_total", outcome="duplicate", provider="plain") == 2
    assert _value(after, "receiver_duplicates_total", provider="plain") == 2
    assert _value(after, "receiver_conflicts_total", provider="plain") == 1
    assert _value(after, "receiver_rejections_total", cause="invalid_body", provider="plain") == 1
    assert _value(after, "receiver_rejections_total", cause="missing_signature", provider="sw") == 1
    assert "_created" not in after  # one series per counter, not two
    for name in (
        "receiver_purged_payloads_total",
        "receiver_purged_events_total",
        "receiver_purged_rejections_total",
        "receiver_rejection_journal_dropped_total",
    ):
        assert f"# TYPE {name} counter" in after, name


async def test_metrics_follow_retries_and_dead_events(
    make_receiver: Any, aiohttp_client: Any
) -> None:
    from tests.integration import handler_targets as targets

    targets.reset()
    receiver = await make_receiver(
        providers={
            "flaky": python_provider("fail_twice"),
            "doomed": python_provider("refuse"),
        },
        worker={"backoff_base_s": 0.01, "backoff_max_s": 0.02, "poll_interval_s": 0.05},
    )
    ingest = await aiohttp_client(receiver.ingest_app)
    admin = await aiohttp_client(receiver.admin_app)
    for provider in ("flaky", "doomed"):
        resp = await ingest.post(f"/webhooks/{provider}", json={"id": "1"})
        assert resp.status == 200
    await receiver.worker.run(until_empty=True)
    text = await (await admin.get("/metrics")).text()
    attempts = "receiver_handler_attempts_total"
    assert _value(text, attempts, outcome="retry", provider="flaky") == 2
    assert _value(text, attempts, outcome="succeeded", provider="flaky") == 1
    assert _value(text, attempts, outcome="dead", provider="doomed") == 1
    assert _value(text, "receiver_dead_events_total", provider="doomed") == 1
    assert _value(text, "receiver_dead_events_total", provider="flaky") == 0


async def test_a_wrong_method_is_counted_and_never_becomes_a_label(
    admin_make_harness: Any, monkeypatch: Any
) -> None:
    """``GET /webhooks/...`` was answered 405 by the router: no log line, no count. A name
    that is not configured must not become a series either (the caller chooses it)."""
    import json

    from tests.support.logs import json_logs

    with json_logs(monkeypatch) as buffer:
        h = await admin_make_harness()  # its request log writes where json_logs reads
        ok = await h.ingest.get("/webhooks/plain")
        odd = await h.ingest.put("/webhooks/made-up-name", data=b"x")
    for resp in (ok, odd):
        assert resp.status == 405 and resp.headers["Allow"] == "POST"
        assert (await resp.json())["error"] == "method_not_allowed"
    text = str(await (await h.get("/metrics")).text())
    counted = _value(text, "receiver_rejections_total", cause="method_not_allowed", provider="")
    assert _value(text, "receiver_rejections_total", cause="method_not_allowed", provider="plain")
    assert counted == 1
    assert "made-up-name" not in text
    lines = [json.loads(line) for line in buffer.getvalue().splitlines()]
    refused = [line for line in lines if line.get("cause") == "method_not_allowed"]
    assert [(line["event"], line["status"]) for line in refused] == [("request_rejected", 405)] * 2
    assert [line["body_bytes"] for line in refused] == [0, 1]  # unread: the size declared


async def test_a_handshake_is_counted_as_a_delivery_answered(make_harness: Any) -> None:
    """A Slack ``url_verification`` was in the latency histogram and in no counter."""
    import hashlib
    import hmac
    import json
    import time

    from receiver.server.ingest_routes import METRICS
    from tests.support.factories import test_environ

    harness = await make_harness(
        environ=test_environ(SLACK_SECRET="slack-secret"),
        providers={"slack": {"scheme": "slack", "secret_envs": ["SLACK_SECRET"]}},
    )
    body = json.dumps({"type": "url_verification", "challenge": "c-1"}).encode()
    ts = str(int(time.time()))
    mac = hmac.new(b"slack-secret", b"v0:" + ts.encode() + b":" + body, hashlib.sha256)
    headers = {
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": "v0=" + mac.hexdigest(),
        "Content-Type": "application/json",
    }
    resp = await harness.post("slack", body, headers)
    assert resp.status == 200
    text = harness.receiver.ingest_app[METRICS].render().decode()
    assert (
        _value(text, "receiver_deliveries_total", outcome="handshake_answered", provider="slack")
        == 1
    )


class _FullDisk(io.StringIO):
    """stdout on a volume with no space left."""

    def write(self, text: str) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")


async def test_a_log_line_that_cannot_be_written_never_holds_up_an_answer(
    admin_make_harness: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With stdout on a full disk every request's log line raised: the delivery, committed,
    was never answered (nor was aiohttp's own report of it), and the connections piled up.
    A line that cannot be written is dropped and counted instead."""
    monkeypatch.setattr(sys, "stdout", _FullDisk())
    configure_logging("info", "json")
    try:
        h = await admin_make_harness()
        first = await h.deliver("plain", {"id": "full-1", "type": "t"})
        again = await h.deliver("plain", {"id": "full-1", "type": "t"})
        text = str(await (await h.get("/metrics")).text())
    finally:
        reset_logging()
    assert (first["http_status"], first["status"]) == (200, "accepted")
    assert (again["http_status"], again["status"]) == (200, "duplicate")
    assert _value(text, "receiver_log_lines_dropped_total") >= 2


async def test_a_delivery_to_a_path_nothing_serves_is_counted_and_logged(
    admin_make_harness: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A provider set up with a trailing slash (or ``/webhook/``) got a 404 for every delivery,
    and the receiver showed nothing: no log line, no count, no journal row."""
    import json

    from tests.support.logs import json_logs
    from tests.support.rawhttp import exchange

    with json_logs(monkeypatch) as buffer:
        h = await admin_make_harness()
        answers = [
            await h.ingest.post(path, data=b"{}")
            for path in ("/webhooks/plain/", "/webhook/plain", "/")
        ]
        # Targets no path route can match: the router's own 404 went uncounted.
        port = h.ingest.server.port
        assert port is not None
        raw = [
            await exchange(port, b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n"),
            await exchange(port, b"CONNECT example.com:443 HTTP/1.1\r\nHost: x\r\n\r\n"),
        ]
    for resp in answers:
        assert resp.status == 404
        assert (await resp.json())["error"] == "not_found"
    for answer in raw:
        assert answer is not None and answer.status == 404
        assert answer.json()["error"] == "not_found"
        assert "/webhooks/{provider}" in answer.json()["detail"]
    text = str(await (await h.get("/metrics")).text())
    assert _value(text, "receiver_rejections_total", cause="not_found", provider="") == 5
    lines = [json.loads(line) for line in buffer.getvalue().splitlines()]
    refused = [(e["event"], e["method"]) for e in lines if e.get("cause") == "not_found"]
    assert refused == [
        ("request_rejected", "POST"),
        ("request_rejected", "POST"),
        ("request_rejected", "POST"),
        ("request_rejected", "OPTIONS"),
        ("request_rejected", "CONNECT"),
    ]
    paths = [e["path"] for e in lines if e.get("cause") == "not_found"]
    assert paths[:3] == ["/webhooks/plain/", "/webhook/plain", "/"]
    assert (await h.ingest.get("/healthz")).status == 200  # what is served still is


async def test_an_expectation_not_understood_is_counted_and_logged(
    admin_make_harness: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``417`` was answered before the route, so it was the one refusal with no log line, no
    count and no journal row."""
    import json

    from tests.support.logs import json_logs

    with json_logs(monkeypatch) as buffer:
        h = await admin_make_harness()
        for path in ("/webhooks/plain", "/webhooks/nope"):
            resp = await h.ingest.post(path, data=b"{}", headers={"Expect": "200-ok"})
            assert resp.status == 417
            assert (await resp.json())["error"] == "expectation_failed"
    text = str(await (await h.get("/metrics")).text())
    counted = functools.partial(_value, text, "receiver_rejections_total")
    assert counted(cause="expectation_failed", provider="plain") == 1
    assert counted(cause="expectation_failed", provider="") == 1  # a name not configured
    lines = [json.loads(line) for line in buffer.getvalue().splitlines()]
    refused = [
        (e["event"], e["provider"], e["status"])
        for e in lines
        if e.get("cause") == "expectation_failed"
    ]
    assert refused == [("request_rejected", "plain", 417), ("request_rejected", "nope", 417)]


async def test_every_series_an_alert_reads_is_there_from_the_start(
    make_receiver: Any, aiohttp_client: Any
) -> None:
    """A labelled counter appeared at its first increment, so ``increase()`` read that
    first storage failure or dead event after a start as 0; and there was no sign of the
    process itself (its start time, memory, open files) or of the version running."""
    receiver = await make_receiver(
        providers={
            "shop": python_provider("record"),
            "audit": {"scheme": "none", "event_id": "json:id"},
        }
    )
    admin = await aiohttp_client(receiver.admin_app)
    lines = set((await (await admin.get("/metrics")).text()).splitlines())
    for provider in ("shop", "audit"):
        for outcome in ("accepted", "duplicate", "storage_unavailable", "server_busy"):
            series = f'receiver_deliveries_total{{outcome="{outcome}",provider="{provider}"}} 0.0'
            assert series in lines, series
    for outcome in ("succeeded", "retry", "dead", "interrupted"):
        series = f'receiver_handler_attempts_total{{outcome="{outcome}",provider="shop"}} 0.0'
        assert series in lines, series
    assert 'receiver_dead_events_total{provider="shop"} 0.0' in lines
    assert not any('provider="audit"' in line for line in lines if "attempts" in line)
    for task in ("worker", "retention"):
        assert f'receiver_background_errors_total{{task="{task}"}} 0.0' in lines
    names = {line.split("{")[0].split(" ")[0] for line in lines if not line.startswith("#")}
    assert {"process_start_time_seconds", "process_open_fds", "receiver_build_info"} <= names
