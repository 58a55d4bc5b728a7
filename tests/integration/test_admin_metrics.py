"""``/metrics`` moves with accepts, duplicates, conflicts and rejections (by cause)."""

from __future__ import annotations

import re
from typing import Any

from tests.integration.conftest import AdminHarness

TARGETS = "tests.integration.handler_targets"


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
            "flaky": {
                "scheme": "none",
                "event_id": "json:id",
                "handler": {"kind": "python", "target": f"{TARGETS}:fail_twice"},
            },
            "doomed": {
                "scheme": "none",
                "event_id": "json:id",
                "handler": {"kind": "python", "target": f"{TARGETS}:refuse"},
            },
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
