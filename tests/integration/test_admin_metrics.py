"""``/metrics`` moves with accepts, duplicates, conflicts and rejections (by cause)."""

from __future__ import annotations

import re

from tests.integration.conftest import AdminHarness


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
