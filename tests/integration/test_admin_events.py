"""``GET /admin/events`` and ``GET /admin/events/{id}``: filters, search, pagination, detail."""

from __future__ import annotations

import base64
import json
import sqlite3
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.integration.conftest import AdminHarness


async def _seed(h: AdminHarness) -> dict[str, str]:
    """Five events over three providers and two types, one minute apart; returns key -> id."""
    ids: dict[str, str] = {}
    deliveries = [
        ("plain", {"id": "a1", "type": "order.created", "note": "blue whale"}),
        ("plain", {"id": "a2", "type": "order.paid", "note": "red fox"}),
        ("short", {"id": "b1", "type": "order.created", "note": "blue jay"}),
        ("plain", {"id": "a3", "type": "order.created", "note": "100% cotton_shirt"}),
        ("short", {"id": "b2", "type": "refund", "note": "green frog"}),
    ]
    for provider, body in deliveries:
        answer = await h.deliver(provider, body)
        assert answer["status"] == "accepted"
        ids[answer["key"]] = answer["id"]
        h.clock.advance(60)
    return ids


async def _ids(h: AdminHarness, **params: Any) -> list[str]:
    resp = await h.get("/admin/events", **params)
    assert resp.status == 200, await resp.text()
    return [e["id"] for e in (await resp.json())["events"]]


async def test_lists_newest_first_with_summary_fields(admin_harness: AdminHarness) -> None:
    ids = await _seed(admin_harness)
    resp = await admin_harness.get("/admin/events")
    data = await resp.json()
    assert [e["id"] for e in data["events"]] == list(reversed(ids.values()))
    assert data["next_cursor"] is None
    first = data["events"][-1]
    assert first["key"] == "plain:a1"
    assert first["provider_event_id"] == "a1"
    assert first["type"] == "order.created"
    assert first["status"] == "queued"  # plain has a handler; the worker is not running
    assert first["received_at"].endswith("Z")
    assert first["body_bytes"] > 0
    assert first["payload_purged"] is False


@pytest.mark.parametrize(
    ("params", "keys"),
    [
        ({"provider": "short"}, ["short:b2", "short:b1"]),
        ({"type": "order.created"}, ["plain:a3", "short:b1", "plain:a1"]),
        ({"key": "plain:a2"}, ["plain:a2"]),
        ({"status": "queued", "provider": "plain", "type": "order.paid"}, ["plain:a2"]),
        ({"status": "received"}, ["short:b2", "short:b1"]),
        ({"status": "dead"}, []),
        ({"provider": "nobody"}, []),
        ({"q": "blue"}, ["short:b1", "plain:a1"]),
        ({"q": "blue whale"}, ["plain:a1"]),
        ({"q": "fox", "provider": "short"}, []),
    ],
)
async def test_filters(
    admin_harness: AdminHarness, params: dict[str, str], keys: list[str]
) -> None:
    ids = await _seed(admin_harness)
    assert await _ids(admin_harness, **params) == [ids[k] for k in keys]


async def test_since_and_until_accept_iso_unix_and_durations(admin_harness: AdminHarness) -> None:
    h = admin_harness
    start = h.clock.now_s
    ids = list((await _seed(h)).values())  # received at start, +60, +120, +180, +240
    iso = datetime.fromtimestamp(start + 120, UTC).isoformat().replace("+00:00", "Z")
    assert await _ids(h, since=iso) == ids[:1:-1]
    assert await _ids(h, since=str(start + 120)) == ids[:1:-1]
    assert await _ids(h, until=str(int(start + 120))) == ids[1::-1]
    assert await _ids(h, since=str(start + 60), until=str(start + 180)) == [ids[2], ids[1]]
    # The clock now stands at start + 300: "3m" ago is start + 120.
    assert await _ids(h, since="3m") == ids[:1:-1]
    naive = datetime.fromtimestamp(start + 240, UTC).replace(tzinfo=None).isoformat()
    assert await _ids(h, since=naive) == [ids[4]]  # no offset given: UTC
    # Eight digits are an ISO-8601 basic date, not a Unix time in 1970.
    tomorrow = datetime.fromtimestamp(start + 86400, UTC).strftime("%Y%m%d")
    assert await _ids(h, since=tomorrow) == []
    assert await _ids(h, until=tomorrow) == ids[::-1]


async def test_text_search_falls_back_to_like_without_fts(admin_harness: AdminHarness) -> None:
    h = admin_harness
    ids = await _seed(h)
    assert await _ids(h, q="100%") == [ids["plain:a3"]]
    h.receiver.store.queries._fts_ready = False  # as on a SQLite built without FTS5
    assert await _ids(h, q="blue") == [ids["short:b1"], ids["plain:a1"]]
    assert await _ids(h, q="100%") == [ids["plain:a3"]]
    assert await _ids(h, q="n_s") == [ids["plain:a3"]]  # '_' is literal, not a wildcard
    assert await _ids(h, q="%") == [ids["plain:a3"]]


async def test_fts_index_is_built_and_follows_purges(admin_harness: AdminHarness) -> None:
    h = admin_harness
    assert await h.receiver.store.queries.has_fts_index() is True
    ids = await _seed(h)
    h.clock.advance(3600)  # "short" keeps payloads for 1h
    await h.receiver.store.retention.purge_once()
    assert await _ids(h, q="blue") == [ids["plain:a1"]]


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"status": "exploded"}, "status"),
        ({"since": "yesterday-ish"}, "since"),
        ({"until": "2024-13-45"}, "until"),
        ({"since": "nan"}, "since"),
        ({"since": "-5"}, "since"),
        ({"since": "1e300"}, "since"),
        ({"since": "200", "until": "100"}, "until"),
        ({"limit": "0"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"limit": "\u00b2"}, "limit"),  # a digit to str.isdigit(), not to int()
        ({"limit": "\u0661"}, "limit"),  # ARABIC-INDIC DIGIT ONE
        ({"since": "\uff11"}, "since"),  # FULLWIDTH DIGIT ONE
        ({"since": "\u0662h"}, "since"),
        ({"since": "0s"}, "since"),  # nothing ago: was a 500
        ({"until": "0.0h"}, "until"),
        ({"since": "20241399"}, "since"),  # eight digits, but no date
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"cursor": base64.urlsafe_b64encode(b"r1:5").decode()}, "cursor"),
        ({"q": "x" * 501}, "q"),
        ({"q": "   "}, "q"),  # blank: a bulk replay would take it for a filter matching all
        ({"provider": "p" * 65}, "provider"),
    ],
)
async def test_invalid_filters_are_400_naming_the_parameter(
    admin_harness: AdminHarness, params: dict[str, str], parameter: str
) -> None:
    resp = await admin_harness.get("/admin/events", **params)
    assert resp.status == 400
    data = await resp.json()
    assert data["error"] == "invalid_parameter"
    assert data["parameter"] == parameter
    assert data["detail"].startswith(parameter + ":")


@pytest.mark.parametrize(
    ("path", "query", "parameter", "detail"),
    [
        ("/admin/events", "provder=stripe", "provder", "is not a parameter of this request"),
        ("/admin/events", "since=2h&since=1h", "since", "is given twice"),
        ("/admin/rejections", "bogus=1", "bogus", "is not a parameter of this request"),
        ("/admin/rejections", "cause=a&cause=b", "cause", "is given twice"),
    ],
)
async def test_an_unknown_or_repeated_query_parameter_is_refused(
    admin_harness: AdminHarness, path: str, query: str, parameter: str, detail: str
) -> None:
    """A misspelt filter was ignored, and the page listed every event; of a parameter given
    twice, one was dropped. Bodies were already strict; queries are now too."""
    resp = await admin_harness.admin.get(f"{path}?{query}")
    assert resp.status == 400
    data = await resp.json()
    assert (data["error"], data["parameter"]) == ("invalid_parameter", parameter)
    assert detail in data["detail"]


async def test_limit_above_the_cap_is_capped(admin_harness: AdminHarness) -> None:
    await _seed(admin_harness)
    assert len(await _ids(admin_harness, limit="1000000")) == 5
    assert len(await _ids(admin_harness, limit="9" * 5000)) == 5  # no 4300-digit int error


async def test_pagination_is_stable_while_new_events_arrive(admin_harness: AdminHarness) -> None:
    h = admin_harness
    for i in range(7):
        await h.deliver("plain", {"id": f"p{i}", "type": "t"})
    seen: list[str] = []
    cursor: str | None = None
    arrivals = 0
    while True:
        params = {"limit": "3", **({"cursor": cursor} if cursor else {})}
        data = await (await h.get("/admin/events", **params)).json()
        seen += [e["id"] for e in data["events"]]
        # New events land between page requests; they must not shift or repeat what follows.
        await h.deliver("plain", {"id": f"new{arrivals}", "type": "t"})
        arrivals += 1
        cursor = data["next_cursor"]
        if cursor is None:
            break
    assert seen == [str(i) for i in range(7, 0, -1)]
    assert arrivals == 3
    newest = await _ids(h, limit="3")
    assert newest == ["10", "9", "8"]


async def test_pagination_combines_with_filters(admin_harness: AdminHarness) -> None:
    h = admin_harness
    for i in range(6):
        await h.deliver("plain" if i % 2 else "short", {"id": f"m{i}", "type": "t"})
    first = await (await h.get("/admin/events", provider="plain", limit="2")).json()
    second = await (
        await h.get("/admin/events", provider="plain", limit="2", cursor=first["next_cursor"])
    ).json()
    assert [e["id"] for e in first["events"]] == ["6", "4"]
    assert [e["id"] for e in second["events"]] == ["2"]
    assert second["next_cursor"] is None


async def test_detail_shows_body_headers_duplicates_and_conflicts(
    admin_harness: AdminHarness,
) -> None:
    h = admin_harness
    body = {"id": "d1", "type": "order.created", "total": 5}
    headers = {
        "X-Shop-Signature": "sig-value",
        "X-Request-Token": "tok",
        "X-Client-Secret": "s3",
        "X-Auth-Thing": "a",
        "X-Session-Cookie": "c",
        "X-Webhook-Secret": "w",
        "Private-Token": "p",
        "X-Api_Key": "k",
        "X-Trace": "keep-me",
    }
    accepted = await h.deliver("plain", body, headers)
    h.clock.advance(30)
    await h.deliver("plain", body)
    await h.deliver("plain", {**body, "total": 6})  # same key, different body: a conflict
    resp = await h.get(f"/admin/events/{accepted['id']}")
    assert resp.status == 200
    data = await resp.json()
    assert json.loads(data["body"]) == body
    assert data["encoding"] == "utf-8"
    assert data["duplicate_count"] == 2
    assert data["conflict_count"] == 1
    assert len(data["conflicts"]) == 1
    assert data["last_seen_at"] > data["received_at"]
    stored = data["headers"]  # credential-like headers are never stored at all
    assert stored["x-trace"] == "keep-me"
    assert not {name for name in stored if name != "x-trace" and name.startswith(("x-", "pr"))}
    assert "sig-value" not in await resp.text()
    with sqlite3.connect(h.receiver.config.settings.storage.path) as conn:
        (raw,) = conn.execute(
            "SELECT headers FROM payloads WHERE event_id = ?", (accepted["id"],)
        ).fetchone()
    conn.close()
    assert "sig-value" not in raw and "tok" not in raw
    assert data["job"]["status"] == "queued"
    assert data["attempts"] == []
    assert data["requeues"] == []


async def test_credentials_stored_by_an_older_version_are_shown_redacted(
    admin_harness: AdminHarness,
) -> None:
    h = admin_harness
    accepted = await h.deliver("plain", {"id": "old1", "type": "t"})
    legacy = {"x-webhook-secret": "w", "Private-Token": "p", "x-client_key": "k", "x-trace": "t"}
    with sqlite3.connect(h.receiver.config.settings.storage.path) as conn:
        conn.execute(
            "UPDATE payloads SET headers = ? WHERE event_id = ?",
            (json.dumps(legacy), accepted["id"]),
        )
    conn.close()
    shown = (await (await h.get(f"/admin/events/{accepted['id']}")).json())["headers"]
    assert shown == {
        "x-webhook-secret": "[redacted]",
        "Private-Token": "[redacted]",
        "x-client_key": "[redacted]",
        "x-trace": "t",
    }


async def test_detail_of_a_binary_body_is_base64(admin_harness: AdminHarness) -> None:
    h = admin_harness
    raw = b"\xff\xfe\x00binary"
    resp = await h.ingest.post(
        "/webhooks/raw", data=raw, headers={"content-type": "application/octet-stream"}
    )
    assert resp.status == 200
    event_id = (await resp.json())["id"]
    data = await (await h.get(f"/admin/events/{event_id}")).json()
    assert data["encoding"] == "base64"
    assert base64.b64decode(data["body"]) == raw
    assert data["body_bytes"] == len(raw)


@pytest.mark.parametrize("event_id", ["999", "abc", "-1", "1.5", "99999999999999999999", "١"])
async def test_unknown_event_is_404(admin_harness: AdminHarness, event_id: str) -> None:
    await _seed(admin_harness)
    resp = await admin_harness.get(f"/admin/events/{event_id}")
    assert resp.status == 404
    assert (await resp.json())["error"] == "not_found"


@pytest.mark.parametrize(
    "value",
    [
        "' OR 1=1 --",
        '"; DROP TABLE events; --',
        "plain' UNION SELECT * FROM events --",
        "%",
        "_",
        "\\",
        '" OR "',
        "NEAR(a b)",
        "a* OR b",
        "body:x",
    ],
)
async def test_sql_and_fts_metacharacters_in_filters_are_harmless(
    admin_harness: AdminHarness, value: str
) -> None:
    h = admin_harness
    await _seed(h)
    for name in ("provider", "type", "key", "q"):
        resp = await h.get("/admin/events", **{name: value})
        assert resp.status == 200, (name, value, await resp.text())
        events = (await resp.json())["events"]
        if name != "q" or value not in ("%", "_"):
            assert events == [], (name, value)
    assert len(await _ids(h)) == 5  # nothing was dropped or changed


async def test_stats_counts_providers_statuses_and_retention(admin_harness: AdminHarness) -> None:
    h = admin_harness
    await _seed(h)
    await h.deliver("plain", {"id": "a1", "type": "order.created", "note": "blue whale"})
    await h.deliver("plain", {"id": "a1", "type": "order.created", "note": "changed"})
    await h.deliver("plain", b"not json")
    await h.receiver.store.rejections.flush()
    data = await (await h.get("/admin/stats")).json()
    assert data["totals"]["events"] == 5
    assert data["totals"]["duplicates"] == 2
    assert data["totals"]["conflicts"] == 1
    assert data["providers"]["plain"]["events"] == 3
    assert data["providers"]["short"]["by_status"] == {"received": 2}
    # Only plain has a handler: short's jobs wait for one, outside the queue's depth.
    assert data["queue"]["queued"] == data["queue"]["depth"] == 3
    assert data["queue"]["waiting_for_a_handler"] == 2
    waited = data["queue"]["oldest_ready_age_s"]
    assert waited > 0  # plain:a1 has waited since it was seeded
    h.clock.advance(90)
    later = await (await h.get("/admin/stats")).json()
    assert later["queue"]["oldest_ready_age_s"] == waited + 90
    assert later["queue"]["oldest_unfinished_age_s"] == waited + 90  # not short's, unhandled
    assert data["rejections"]["by_cause"] == {"invalid_body": 1}
    assert data["retention"]["short"] == {
        "payload_retention_s": 3600.0,
        "payload_retention": "1h",
        "dedupe_retention_s": 7200.0,
        "dedupe_retention": "2h",
    }
    assert data["retention"]["plain"]["dedupe_retention"] == "1d"
    assert set(data["retention"]) == {"plain", "raw", "short", "sw"}


async def test_a_nul_character_in_a_filter_is_refused(admin_harness: AdminHarness) -> None:
    resp = await admin_harness.get("/admin/events", q="a\x00b")
    assert resp.status == 400
    assert (await resp.json())["parameter"] == "q"


async def test_a_relative_since_stays_the_first_pages_window_while_paging(
    admin_harness: AdminHarness,
) -> None:
    """``since=30s`` used to be worked out again on every page: a walk that took a while lost
    the events that slid out of the window meanwhile (35 of 60 in the audit)."""
    h = admin_harness
    for i in range(6):
        await h.deliver("plain", {"id": f"w{i}", "type": "t"})
        h.clock.advance(5)  # received 30, 25, … 5 seconds before the walk starts
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params = {"since": "30s", "limit": "2", **({"cursor": cursor} if cursor else {})}
        data = await (await h.get("/admin/events", **params)).json()
        seen += [e["id"] for e in data["events"]]
        h.clock.advance(10)  # a slow reader: the window would slide by 10 s per page
        cursor = data["next_cursor"]
        if cursor is None:
            break
    assert seen == ["6", "5", "4", "3", "2", "1"]


async def test_a_cursor_from_an_earlier_version_still_continues(
    admin_harness: AdminHarness,
) -> None:
    import base64

    h = admin_harness
    for i in range(3):
        await h.deliver("plain", {"id": f"v{i}", "type": "t"})
    old = base64.urlsafe_b64encode(b"e1:3").decode().rstrip("=")
    assert await _ids(h, cursor=old) == ["2", "1"]


async def test_rejections_refuse_until_before_since(admin_harness: AdminHarness) -> None:
    resp = await admin_harness.get("/admin/rejections", since="1h", until="2h")
    assert resp.status == 400
    assert (await resp.json())["error"] == "invalid_parameter"


async def test_text_search_finds_words_a_json_escape_used_to_hide(
    admin_harness: AdminHarness,
) -> None:
    """The index held the raw JSON text: the first word of every line after the first
    (``\\nsecond``) and escaped non-ASCII text (``M\\u00fcller``) could not be found."""
    h = admin_harness
    body = json.dumps(  # as most JSON encoders write it: newlines and non-ASCII escaped
        {"id": "esc", "type": "t", "comment": "first line\nsecond line\tTabbed M\u00fcller"},
        ensure_ascii=True,
    ).encode()
    assert b"\\n" in body and b"\\u00fc" in body
    event_id = (await h.deliver("plain", body))["id"]
    for word in ("second", "Tabbed", "Müller", "muller", "first"):
        assert await _ids(h, q=word) == [event_id], word
    assert await _ids(h, q="nsecond") == []


async def test_a_query_without_letters_or_digits_is_a_substring_search(
    admin_harness: AdminHarness,
) -> None:
    h = admin_harness
    ids = await _seed(h)
    underscored = (await h.deliver("plain", {"id": "u1", "type": "t", "note": "a_b"}))["id"]
    found = await _ids(h, q="_")
    assert underscored in found and ids["plain:a3"] in found  # "n_s" holds one too
