"""Every preset through the real HTTP server: what the provider (or its SDK) signs is accepted and
keyed, a redelivery is a duplicate, and a tampered or wrongly signed copy is a 401, never a 5xx."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from typing import Any
from urllib.parse import urlencode

import pytest
import structlog

from tests.integration.conftest import Harness
from tests.support.factories import test_environ
from tests.support.provider_cases import (
    CASES,
    FORM_BODY,
    PLAIN,
    URL,
    Case,
    hmac_hex,
    mailgun_body,
)

# One body that carries every preset's event-ID and event-type field.
RICH_BODY = json.dumps(
    {
        "id": "evt_1",
        "event_id": "evt_1",
        "type": "demo",
        "event_type": "demo.created",
        "event": "demo.created",
        "event_ts": 1_700_000_000_000,
        "payload": {"object": {"id": "obj_1"}},
        "topic": "demo",
        "webhookEvent": "demo",
        "data": {"id": "d1"},
    },
    separators=(",", ":"),
).encode()
SENDGRID_BODY = (
    b'[{"sg_event_id":"sg_1","event":"delivered"},{"sg_event_id":"sg_2","event":"open"}]'
)
# Headers that carry event IDs for header-keyed presets; unsigned, so harmless to the others.
ID_HEADERS = {
    "X-GitHub-Delivery": "gh-delivery-1",
    "X-GitHub-Hook-ID": "42",
    "X-GitHub-Event": "push",
    "X-Shopify-Event-Id": "shop-evt-1",
    "X-Shopify-Topic": "orders/create",
    "X-Shopify-Shop-Domain": "demo.myshopify.com",
    "Linear-Delivery": "lin-1",
    "Linear-Event": "Issue",
    "X-Request-UUID": "bb-1",
    "X-Event-Key": "repo:push",
    "X-Atlassian-Webhook-Identifier": "jira-1",
    "Idempotency-Key": "idem-1",
}


def _body_for(case: Case) -> tuple[bytes, str]:
    if case.scheme == "sendgrid":
        return SENDGRID_BODY, "application/json"
    if case.scheme == "twilio":
        return FORM_BODY, "application/x-www-form-urlencoded"
    return RICH_BODY, "application/json"


def _signed(case: Case, index: int, *, ts: int) -> tuple[bytes, dict[str, str]]:
    body, content_type = _body_for(case)
    signed = case.sign(index, body, ts)
    headers = {**ID_HEADERS, **case.extra, **signed.headers, "Content-Type": content_type}
    return signed.body, headers


async def _harness(
    make_harness: Any, case: Case, *, secrets: tuple[int, ...] = (0, 1), **settings: Any
) -> Harness:
    provider: dict[str, Any] = {
        "scheme": case.scheme,
        "secret_envs": [f"PRESET_SECRET_{i}" for i in secrets],
        "public_url": case.public_url or URL,
        **settings,
    }
    if case.options is not None:
        provider["options"] = dict(case.options)
    if case.scheme == "hmac":  # the generic scheme has no default event-ID source
        provider["event_id"] = "json:id"
    env = test_environ(PRESET_SECRET_0=case.secret(0), PRESET_SECRET_1=case.secret(1))
    harness: Harness = await make_harness(environ=env, providers={"p": provider})
    return harness


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_signed_delivery_is_accepted_and_redelivery_is_duplicate(
    make_harness: Any, case: Case
) -> None:
    """A retry signed again is a duplicate, not a conflict, even where the provider writes the
    signature or the send time into the body (Mailgun, Linear): ``on_conflict: reject`` would
    answer a conflict 409, and the provider would retry it until it gave up (a batch scheme
    cannot refuse one event, so SendGrid keeps the default)."""
    on_conflict = "duplicate" if case.scheme == "sendgrid" else "reject"
    harness = await _harness(make_harness, case, on_conflict=on_conflict)
    now = int(time.time())
    body, headers = _signed(case, 0, ts=now)
    first = await harness.post("p", body, headers)
    assert first.status == 200, await first.text()
    answer = await first.json()
    assert answer["status"] == "accepted"
    # A retry: signed again (with the other configured secret, a second later).
    body2, headers2 = _signed(case, 1, ts=now + 1)
    second = await harness.post("p", body2, headers2)
    assert second.status == 200, await second.text()
    again = await second.json()
    assert again["status"] == "duplicate"
    if case.scheme == "sendgrid":
        assert [e["key"] for e in answer["events"]] == ["p:sg_1", "p:sg_2"]
        assert [e["id"] for e in again["events"]] == [e["id"] for e in answer["events"]]
    else:
        assert again["id"] == answer["id"]
        assert again["key"].startswith("p:")
        stored = await harness.receiver.store.get_event(int(answer["id"]))
        assert stored is not None
        assert stored.headers is not None
        assert not set(stored.headers) & harness.receiver.config.providers["p"].redacted_headers


@pytest.mark.parametrize("case", [c for c in CASES if c.signs_body], ids=lambda c: c.id)
async def test_tampered_and_wrongly_signed_deliveries_are_401(
    make_harness: Any, case: Case
) -> None:
    harness = await _harness(make_harness, case, secrets=(0,))
    now = int(time.time())
    body, headers = _signed(case, 0, ts=now)
    tampered = body.replace(b"1", b"2", 1)
    assert tampered != body
    resp = await harness.post("p", tampered, headers)
    assert resp.status == 401, await resp.text()
    # Signed with a secret this receiver does not have.
    body, headers = _signed(case, 1, ts=now)
    resp = await harness.post("p", body, headers)
    assert resp.status == 401, await resp.text()
    assert (await resp.json())["error"] in {"invalid_signature", "missing_signature"}


@pytest.mark.parametrize("case", [c for c in CASES if c.has_timestamp], ids=lambda c: c.id)
async def test_stale_signatures_are_401(make_harness: Any, case: Case) -> None:
    harness = await _harness(make_harness, case)
    body, headers = _signed(case, 0, ts=int(time.time()) - 86_400 * 30)
    resp = await harness.post("p", body, headers)
    assert resp.status == 401, await resp.text()
    assert (await resp.json())["error"] == "timestamp_out_of_tolerance"


async def test_a_sendgrid_batch_retried_with_one_new_element_stores_one_new_event(
    make_harness: Any,
) -> None:
    case = next(c for c in CASES if c.scheme == "sendgrid")
    harness = await _harness(make_harness, case)
    now = int(time.time())
    first_batch = SENDGRID_BODY
    retried = SENDGRID_BODY[:-1] + b',{"sg_event_id":"sg_3","event":"click"}]'
    signed = case.sign(0, first_batch, now)
    first = await harness.post(
        "p", signed.body, {**signed.headers, "Content-Type": "application/json"}
    )
    assert [e["status"] for e in (await first.json())["events"]] == ["accepted", "accepted"]
    signed = case.sign(0, retried, now + 60)
    with structlog.testing.capture_logs() as logs:
        again = await harness.post(
            "p", signed.body, {**signed.headers, "Content-Type": "application/json"}
        )
    # Its log line says what it held (it had no count: it could not be matched with metrics).
    [line] = [e for e in logs if e["event"].startswith("batch_")]
    assert (line["event"], line["accepted"], line["duplicate"]) == ("batch_accepted", 1, 2)
    events = (await again.json())["events"]
    assert [e["status"] for e in events] == ["duplicate", "duplicate", "accepted"]
    assert [e["key"] for e in events] == ["p:sg_1", "p:sg_2", "p:sg_3"]
    with sqlite3.connect(harness.receiver.config.settings.storage.path) as conn:
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 3
        assert conn.execute("SELECT count(*) FROM jobs").fetchone()[0] == 3


async def test_a_sendgrid_batch_stores_each_element_with_its_own_bytes(make_harness: Any) -> None:
    """Numbers with a fraction (custom arguments carry any JSON) and pretty-printing are fine:
    every element is stored byte for byte as it appeared in the array."""
    case = next(c for c in CASES if c.scheme == "sendgrid")
    harness = await _harness(make_harness, case)
    elements = [
        b'{"sg_event_id": "sg_f", "event": "open", "score": 0.75, "ratio": 1.50}',
        b'{\n    "sg_event_id": "sg_u",\n    "event": "click",\n'
        b'    "url": "https://ex.example/caf\xc3\xa9"\n  }',
    ]
    body = b"[\n  " + b",\n  ".join(elements) + b"\n]\n"
    signed = case.sign(0, body, int(time.time()))
    resp = await harness.post(
        "p", signed.body, {**signed.headers, "Content-Type": "application/json"}
    )
    assert resp.status == 200, await resp.text()
    assert [e["key"] for e in (await resp.json())["events"]] == ["p:sg_f", "p:sg_u"]
    with sqlite3.connect(harness.receiver.config.settings.storage.path) as conn:
        stored = [row[0] for row in conn.execute("SELECT body FROM payloads ORDER BY event_id")]
    assert stored == elements


async def test_a_url_signing_scheme_checks_the_url_exactly_as_sent(make_harness: Any) -> None:
    """Without ``public_url``, Twilio's signature covers the URL of the request line: its path
    and query byte for byte (percent-encodings included), not as a URL parser re-encodes them."""
    from twilio.request_validator import RequestValidator

    from tests.support.rawhttp import exchange, request_head

    token = "twilio-auth-token-for-tests"
    harness: Harness = await make_harness(
        environ=test_environ(TW_TOKEN=token),
        providers={"tw": {"scheme": "twilio", "secret_envs": ["TW_TOKEN"]}},
    )
    body = b"MessageSid=SM1&Body=hi"
    path = b"/webhooks/tw?note=a%20b&tag=%7Efoo&empty="
    signature = RequestValidator(token).compute_signature(
        "http://127.0.0.1" + path.decode(), {"MessageSid": "SM1", "Body": "hi"}
    )
    head = request_head(
        path,
        {
            b"Content-Type": b"application/x-www-form-urlencoded",
            b"Content-Length": str(len(body)).encode(),
            b"X-Twilio-Signature": signature.encode(),
        },
    )
    port = harness.client.server.port
    assert port is not None
    response = await exchange(port, head + body)
    assert response is not None and response.status == 200, response
    assert response.json()["status"] == "accepted"


@pytest.mark.parametrize(
    ("host", "status"),
    [
        (b"other.example/sms?x=", 400),  # another path of the account's, made ours by the Host
        (b"other.example#", 400),
        (b"user@other.example", 400),
        (b"127.0.0.1:8080", 200),
        (b"[::1]:8080", 200),
        (b"receiver_svc", 200),  # a container's service name
        (b"[fe80::1%25eth0]:8080", 200),  # an IPv6 address with its zone
        (b"example.com:", 200),  # an empty port, as RFC 3986 allows
    ],
)
async def test_a_host_header_that_is_not_a_host_is_refused(
    make_harness: Any, host: bytes, status: int
) -> None:
    """Without ``public_url`` the URL Twilio signed is the request's: aiohttp took ``/`` and
    ``?`` inside ``Host``, so a delivery Twilio signed for another URL of the same account
    (``http://other.example/sms?x=/webhooks/tw``) passed here."""
    from twilio.request_validator import RequestValidator

    from tests.support.rawhttp import exchange

    token = "twilio-auth-token-for-tests"
    harness: Harness = await make_harness(
        environ=test_environ(TW_TOKEN=token),
        providers={"tw": {"scheme": "twilio", "secret_envs": ["TW_TOKEN"]}},
    )
    body = b"MessageSid=SM1&Body=hi"
    url = "http://" + host.decode() + "/webhooks/tw"
    signature = RequestValidator(token).compute_signature(url, {"MessageSid": "SM1", "Body": "hi"})
    head = (
        b"POST /webhooks/tw HTTP/1.1\r\nHost: " + host + b"\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n"
        b"X-Twilio-Signature: " + signature.encode() + b"\r\n\r\n"
    )
    port = harness.client.server.port
    assert port is not None
    response = await exchange(port, head + body)
    assert response is not None and response.status == status, response
    if status == 400:
        assert response.json()["error"] == "bad_request"
        assert "Host header" in response.json()["detail"]


def _case(case_id: str) -> Case:
    return next(c for c in CASES if c.id == case_id)


def _slash_command(ts: int) -> tuple[bytes, dict[str, str]]:
    body = b"command=%2Fdeploy&text=prod&trigger_id=13345224609.738474920.8088930838d88f008e"
    return body, {**_case("slack").sign(0, body, ts).headers, "Content-Type": _FORM_TYPE}


def _legacy_mailgun_form(ts: int) -> tuple[bytes, dict[str, str]]:
    token = f"legacy{ts}".ljust(50, "t")
    fields = {
        "timestamp": str(ts),
        "token": token,
        "signature": hmac_hex(PLAIN[0], f"{ts}{token}".encode()),
        "event": "delivered",
        "Message-Id": "<20260101.1@mg.example>",
    }
    return urlencode(fields).encode(), {"Content-Type": _FORM_TYPE}


def _gitlab_before_17_4(ts: int) -> tuple[bytes, dict[str, str]]:
    headers = {"X-Gitlab-Token": _case("gitlab-token").secret(0), "X-Gitlab-Event": "Push Hook"}
    return RICH_BODY, {**headers, "Content-Type": "application/json"}


_FORM_TYPE = "application/x-www-form-urlencoded"
_WITHOUT_AN_ID = {
    "slack": ("slack", _slash_command, "/deploy"),
    "mailgun": ("mailgun", _legacy_mailgun_form, "delivered"),
    "gitlab-token": ("gitlab-token", _gitlab_before_17_4, "Push Hook"),
}
# Keyed on the fields but the signature's, which Mailgun signs anew for every attempt.
_UNSIGNED_MAILGUN_FIELDS = b"Message-Id=%3C20260101.1%40mg.example%3E&event=delivered"


@pytest.mark.parametrize("name", list(_WITHOUT_AN_ID))
async def test_a_genuine_delivery_without_the_id_field_is_keyed_on_its_bytes(
    make_harness: Any, name: str
) -> None:
    """GitLab before 17.4 sends no Idempotency-Key, Slack's slash commands have no event_id,
    Mailgun's legacy forms no event-data: each was verified and then refused 400 for ever
    (every retry too). They are stored, keyed on their exact bytes (Mailgun's: but its
    signature fields); a resend is a duplicate."""
    case_id, make, expected_type = _WITHOUT_AN_ID[name]
    harness = await _harness(make_harness, _case(case_id))
    body, headers = make(int(time.time()))
    first = await harness.post("p", body, headers)
    assert first.status == 200, await first.text()
    answer = await first.json()
    keyed = _UNSIGNED_MAILGUN_FIELDS if name == "mailgun" else body
    assert (answer["status"], answer["key"]) == (
        "accepted",
        f"p:{hashlib.sha256(keyed).hexdigest()}",
    )
    again = await harness.post("p", body, headers)
    assert (await again.json())["status"] == "duplicate"
    stored = await harness.receiver.store.get_event(int(answer["id"]))
    assert stored is not None and stored.event_type == expected_type


async def test_a_legacy_mailgun_form_signed_again_for_its_retry_is_a_duplicate(
    make_harness: Any,
) -> None:
    """Mailgun signs every attempt anew (a fresh timestamp and token); keyed on its whole
    bytes, each retry of a legacy form webhook was a new event, and its handler ran again."""
    harness = await _harness(make_harness, _case("mailgun"))
    now = int(time.time())
    first = await harness.post("p", *_legacy_mailgun_form(now))
    retry = await harness.post("p", *_legacy_mailgun_form(now + 300))
    answers = [await first.json(), await retry.json()]
    assert [a["status"] for a in answers] == ["accepted", "duplicate"]
    assert answers[0]["key"] == answers[1]["key"]
    other_body, headers = _legacy_mailgun_form(now + 301)
    other = await harness.post("p", other_body.replace(b"delivered", b"opened"), headers)
    assert (await other.json())["status"] == "accepted"


async def test_a_mailgun_event_id_seen_again_on_another_day_is_another_event(
    make_harness: Any,
) -> None:
    """Mailgun's event-data.id is "unique within a day"; keys are kept two days. The same ID on
    a later event (another timestamp) was answered duplicate, and that event never ran."""
    harness = await _harness(make_harness, _case("mailgun"))
    now = int(time.time())
    answers = []
    for token, at in (("a" * 50, 1_700_000_000.25), ("b" * 50, 1_700_090_000.5)):
        event = {"id": "reused-id", "timestamp": at, "event": "delivered"}
        body = mailgun_body(PLAIN[0], now, token=token, event=event)
        resp = await harness.post("p", body, {"Content-Type": "application/json"})
        answers.append(await resp.json())
    assert [(a["status"], a["key"]) for a in answers] == [
        ("accepted", "p:reused-id:1700000000.25"),
        ("accepted", "p:reused-id:1700090000.5"),
    ]


async def test_an_intercom_retry_counting_its_attempt_is_not_a_conflict(
    make_harness: Any,
) -> None:
    """An Intercom notification's body counts its own delivery attempts, so a retry's bytes
    differ from the first; that is a redelivery, not a key reused for another body."""
    case = _case("intercom")
    harness = await _harness(make_harness, case, on_conflict="reject")
    answers = []
    for attempt in (1, 2):
        notification = {"type": "notification_event", "id": "notif_1", "topic": "t"}
        body = json.dumps({**notification, "delivery_attempts": attempt}).encode()
        signed = case.sign(0, body, int(time.time()))
        headers = {**signed.headers, "Content-Type": "application/json"}
        answers.append(await (await harness.post("p", signed.body, headers)).json())
    assert [a.get("status") for a in answers] == ["accepted", "duplicate"], answers


async def test_a_sendgrid_element_without_sg_event_id_is_stored_with_the_rest(
    make_harness: Any,
) -> None:
    """SendGrid's ID is present "for every event where sg_event_id is present": one element
    without it used to refuse the whole batch, whose retries SendGrid drops after a day."""
    case = _case("sendgrid")
    harness = await _harness(make_harness, case)
    bare = b'{"event":"processed","email":"a@example.com"}'
    body = b'[{"sg_event_id":"sg_1","event":"delivered"},' + bare + b"]"
    signed = case.sign(0, body, int(time.time()))
    headers = {**signed.headers, "Content-Type": "application/json"}
    resp = await harness.post("p", signed.body, headers)
    assert resp.status == 200, await resp.text()
    keys = [e["key"] for e in (await resp.json())["events"]]
    assert keys == ["p:sg_1", f"p:{hashlib.sha256(bare).hexdigest()}"]
    again = await harness.post("p", signed.body, headers)
    assert [e["status"] for e in (await again.json())["events"]] == ["duplicate", "duplicate"]


async def test_a_sendgrid_batch_past_the_most_events_is_413_and_stores_nothing(
    make_harness: Any,
) -> None:
    """A megabyte of ``[1,1,1,…]`` is half a million elements, each keyed on the event loop
    and answered in the reply: it held the loop for many seconds. SendGrid's batches are a
    few thousand events at most."""
    from receiver.ingest import MAX_BATCH_EVENTS

    case = _case("sendgrid")
    harness = await _harness(make_harness, case)
    element = b'{"sg_event_id":"sg","event":"open"}'
    for count, status in ((MAX_BATCH_EVENTS + 1, 413), (MAX_BATCH_EVENTS, 200)):
        body = b"[" + b",".join([element] * count) + b"]"
        signed = case.sign(0, body, int(time.time()))
        headers = {**signed.headers, "Content-Type": "application/json"}
        resp = await harness.post("p", signed.body, headers)
        assert resp.status == status, await resp.text()
        if status == 413:
            answer = await resp.json()
            assert answer["error"] == "payload_too_large"
            assert "10,000 events" in answer["detail"]
            with sqlite3.connect(harness.receiver.config.settings.storage.path) as conn:
                assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 0


async def test_two_zoom_events_in_one_millisecond_are_two_events(make_harness: Any) -> None:
    """Zoom has no event ID; two participants joining one meeting in the same millisecond share
    event, event_ts and the meeting's object id, and were stored as one (the second lost)."""
    case = _case("zoom")
    harness = await _harness(make_harness, case)
    now = int(time.time())
    answers = []
    for who in ("alice", "bob"):
        body = json.dumps(
            {
                "event": "meeting.participant_joined",
                "event_ts": 1_764_300_000_123,
                "payload": {"object": {"id": "8351", "participant": {"user_name": who}}},
            }
        ).encode()
        signed = case.sign(0, body, now)
        headers = {**signed.headers, "Content-Type": "application/json"}
        answers.append(await (await harness.post("p", body, headers)).json())
        retry = case.sign(0, body, now + 300)  # Zoom's first retry, re-signed
        again = await harness.post("p", body, {**retry.headers, "Content-Type": "application/json"})
        assert (await again.json())["id"] == answers[-1]["id"]
    assert [a["status"] for a in answers] == ["accepted", "accepted"]
    assert answers[0]["id"] != answers[1]["id"]


async def test_the_same_twilio_parameters_on_another_query_string_are_another_event(
    make_harness: Any,
) -> None:
    """Twilio signs the URL with its query: two menu steps where the caller pressed 1 both
    times are two signed requests and two events, not a duplicate."""
    from twilio.request_validator import RequestValidator

    case = _case("twilio")
    harness = await _harness(make_harness, case)
    keys = []
    for menu in ("main", "billing", "main"):
        query = f"?menu={menu}"
        signature = RequestValidator(case.secret(0)).compute_signature(
            URL + query, {"CallSid": "CA1", "Digits": "1"}
        )
        resp = await harness.client.post(
            f"/webhooks/p{query}",
            data=b"CallSid=CA1&Digits=1",
            headers={"X-Twilio-Signature": signature, "Content-Type": _FORM_TYPE},
        )
        assert resp.status == 200, await resp.text()
        answer = await resp.json()
        keys.append((answer["status"], answer["key"]))
    assert [status for status, _ in keys] == ["accepted", "accepted", "duplicate"]
    assert keys[0][1] != keys[1][1] and keys[2][1] == keys[0][1]


async def test_a_captured_twilio_request_resent_as_another_content_type_is_a_duplicate(
    make_harness: Any,
) -> None:
    case = _case("twilio")
    harness = await _harness(make_harness, case)
    signed = case.sign(0, FORM_BODY, int(time.time()))
    first = await harness.post("p", FORM_BODY, {**signed.headers, "Content-Type": _FORM_TYPE})
    answer = await first.json()
    assert answer["status"] == "accepted"
    reordered = b"&".join(reversed(FORM_BODY.split(b"&")))
    for content_type in ("text/plain", None):
        headers = {**signed.headers, **({"Content-Type": content_type} if content_type else {})}
        again = await (await harness.post("p", reordered, headers)).json()
        assert (again["status"], again["id"]) == ("duplicate", answer["id"])


async def test_a_signed_gitlab_delivery_is_keyed_on_what_its_signature_covers(
    make_harness: Any,
) -> None:
    """Idempotency-Key equals webhook-id but is not signed: a captured signed delivery re-sent
    with a new Idempotency-Key (or none) was a new event within the signature's window."""
    case = _case("gitlab-signing")
    harness = await _harness(make_harness, case)
    signed = case.sign(0, RICH_BODY, int(time.time()))
    headers = {**signed.headers, "Content-Type": "application/json"}
    first = await (await harness.post("p", RICH_BODY, {**headers, "Idempotency-Key": "k1"})).json()
    for forged in ({"Idempotency-Key": "k2"}, {}):
        again = await (await harness.post("p", RICH_BODY, {**headers, **forged})).json()
        assert (again["status"], again["id"]) == ("duplicate", first["id"])
