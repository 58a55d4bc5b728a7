"""The worker against a real SQLite file and real handler targets (DESIGN §1.3: at least once,
with a stable idempotency key; leases bring a crashed run back)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import gzip
import json
import logging
import os
import re
import signal
import sqlite3
import stat
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestServer
from structlog.typing import EventDict

from receiver.clock_steps import ClockWatch
from receiver.metrics import Metrics
from receiver.models import Accepted, Duplicate
from receiver.settings import ProviderSettings, WorkerSettings
from receiver.store.jobs import AttemptRecord, JobQueue
from receiver.store.sqlite import SqliteStore
from receiver.worker import Worker
from tests.integration import handler_targets as targets
from tests.support.factories import free_port, new_event

TARGETS = "tests.integration.handler_targets"
T0 = 1_700_000_000.0


class FakeClock:
    """Time that moves only when the worker sleeps (or the test says so)."""

    def __init__(self) -> None:
        self.now = T0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


@pytest.fixture(autouse=True)
def _fresh_targets() -> Iterator[None]:
    targets.reset()
    yield
    targets.reset()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def store(tmp_path: Path, clock: FakeClock) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(tmp_path / "receiver.db", clock=clock)
    await store.open()
    yield store
    await store.close()


async def record(store: SqliteStore, provider: str, n: int, **fields: Any) -> int:
    """A new event (``new_event``'s fields) through the real ingest write path; returns its id."""
    outcome = await store.record(new_event(provider, n, now=store.clock(), **fields))
    assert isinstance(outcome, Accepted)
    return outcome.id


def make_worker(
    store: SqliteStore,
    clock: Callable[[], float],
    providers: dict[str, dict[str, Any]],
    *,
    sleep: Callable[[float], Awaitable[None]] | None = None,
    metrics: Metrics | None = None,
    clock_watch: ClockWatch | None = None,
    **settings: Any,
) -> Worker:
    worker_settings = WorkerSettings(**{"poll_interval_s": 0.05, **settings})
    return Worker(
        JobQueue(store.db, on_dead=store.writer.recent.forget),  # as `receiver serve` wires it
        worker_settings,
        {
            name: ProviderSettings.model_validate({"scheme": "none", **spec})
            for name, spec in providers.items()
        },
        clock=clock,
        sleep=sleep or (clock.sleep if isinstance(clock, FakeClock) else asyncio.sleep),
        random=lambda: 1.0,  # the top of the jitter range: delays are exactly base * 2 ** n
        metrics=metrics,
        clock_watch=clock_watch,
    )


def python(target: str, **extra: Any) -> dict[str, Any]:
    return {"handler": {"kind": "python", "target": f"{TARGETS}:{target}"}, **extra}


def query(store: SqliteStore, sql: str, *params: object) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(store.db.path)) as conn:
        return conn.execute(sql, params).fetchall()


def status_of(store: SqliteStore, event_id: int) -> tuple[str, str, int]:
    """(events.status, jobs.status, jobs.attempts)."""
    [row] = query(
        store,
        "SELECT e.status, j.status, j.attempts FROM events e JOIN jobs j ON j.event_id = e.id"
        " WHERE e.id = ?",
        event_id,
    )
    return row[0], row[1], row[2]


def attempts_of(store: SqliteStore, event_id: int) -> list[dict[str, Any]]:
    with closing(sqlite3.connect(store.db.path)) as conn:
        conn.row_factory = sqlite3.Row
        rows = conn.execute(
            "SELECT * FROM attempts WHERE event_id = ? ORDER BY id", (event_id,)
        ).fetchall()
    return [dict(row) for row in rows]


def event_names(logs: list[EventDict], *names: str) -> list[str]:
    return [str(entry["event"]) for entry in logs if entry["event"] in names]


# -- a loopback HTTP sink ------------------------------------------------------------------


@dataclass
class Sink:
    """Answers from ``script`` in order (then 200), recording every request."""

    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    requests: list[tuple[dict[str, str], bytes, int]] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.requests.append((dict(request.headers), await request.read(), peer[1] if peer else 0))
        status, headers = self.script.pop(0) if self.script else (200, {})
        return web.Response(status=status, headers=headers, text="sink")

    def header(self, name: str) -> list[str]:
        return [headers[name] for headers, _, _ in self.requests]


MakeSink = Callable[..., Awaitable[Sink]]


@pytest.fixture
def make_sink(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> MakeSink:
    async def make(*script: tuple[int, dict[str, str]]) -> Sink:
        sink = Sink(script=list(script))
        app = web.Application()
        app.router.add_post("/hook", sink.handle)
        server = await aiohttp_server(app, host="127.0.0.1")
        sink.url = str(server.make_url("/hook"))
        return sink

    return make


def http_handler(url: str, **extra: Any) -> dict[str, Any]:
    return {"handler": {"kind": "http", "url": url, **extra.pop("handler", {})}, **extra}


# -- the three handler kinds, end to end ---------------------------------------------------


async def test_http_handler_names_the_content_encoding_of_the_bytes_it_forwards(
    store: SqliteStore, clock: FakeClock, make_sink: MakeSink
) -> None:
    """A gzip body was forwarded byte for byte without its Content-Encoding: the downstream
    read compressed bytes as JSON."""
    sink = await make_sink()
    worker = make_worker(store, clock, {"shop": http_handler(sink.url)}, concurrency=1)
    plain = b'{"n": 1}'
    await record(store, "shop", 1, body=gzip.compress(plain), headers={"content-encoding": "gzip"})
    await worker.run(until_empty=True)
    [(headers, body, _)] = sink.requests
    assert headers["Content-Encoding"] == "gzip"
    assert body == plain  # the sink's aiohttp inflated it, as any server would


async def test_http_handler_posts_original_bytes_with_stable_headers(
    store: SqliteStore, clock: FakeClock, make_sink: MakeSink
) -> None:
    sink = await make_sink()
    worker = make_worker(
        store,
        clock,
        {"shop": http_handler(sink.url, handler={"headers": {"X-Sink-Token": "t0k"}})},
        concurrency=1,
    )
    bodies = [json.dumps({"n": n, "name": "café"}, ensure_ascii=False).encode() for n in range(3)]
    ids = [
        await record(store, "shop", n, body=body, content_type="application/json; charset=utf-8")
        for n, body in enumerate(bodies)
    ]
    await worker.run(until_empty=True)

    assert [body for _, body, _ in sink.requests] == bodies  # byte-exact, in order
    for (headers, _, _), event_id, n in zip(sink.requests, ids, range(3), strict=True):
        assert headers["Content-Type"] == "application/json; charset=utf-8"
        assert headers["Idempotency-Key"] == f"shop:evt_{n}"
        assert headers["Receiver-Event-Id"] == str(event_id)
        assert headers["Receiver-Attempt"] == "1"
        assert headers["Receiver-Provider"] == "shop"
        assert headers["Receiver-Replay"] == "false"
        assert headers["Receiver-Event-Type"] == "order.created"
        assert headers["X-Sink-Token"] == "t0k"
    assert len({port for _, _, port in sink.requests}) == 1, "one pooled connection, reused"
    for event_id in ids:
        assert status_of(store, event_id) == ("succeeded", "succeeded", 1)
        [attempt] = attempts_of(store, event_id)
        assert attempt["outcome"] == "succeeded"
        assert attempt["number"] == 1
    await store.replayer.replay_ids(ids[:1], actor="cli", reason=None)
    await worker.run(until_empty=True)
    replayed, _, _ = sink.requests[-1]
    assert (replayed["Idempotency-Key"], replayed["Receiver-Replay"]) == ("shop:evt_0", "true")


async def test_python_handlers_async_and_sync_get_a_frozen_event(
    store: SqliteStore, clock: FakeClock
) -> None:
    worker = make_worker(store, clock, {"a": python("record"), "s": python("record_sync")})
    first = await record(store, "a", 1, body=b'{"order": 7}')
    second = await record(store, "s", 2, body=b"plain text", content_type="text/plain")
    await worker.run(until_empty=True)

    by_provider = {event.provider: event for event in targets.STATE.calls}
    a, s = by_provider["a"], by_provider["s"]
    assert (a.id, a.key, a.type, a.attempt, a.is_replay) == (
        first,
        "a:evt_1",
        "order.created",
        1,
        False,
    )
    assert a.body == b'{"order": 7}' and a.json == {"order": 7}
    assert a.headers["x-shop"] == "demo"
    assert a.headers["X-Shop"] == "demo"  # as the provider's docs spell it
    with pytest.raises(TypeError):
        a.headers["x-shop"] = "other"  # type: ignore[index]  # proving it is read-only
    assert (s.id, s.body, s.json, s.content_type) == (second, b"plain text", None, "text/plain")
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.attempt = 2  # type: ignore[misc]  # proving the value is frozen
    assert targets.STATE.threads and targets.STATE.threads[0] != threading.main_thread().name
    assert status_of(store, first)[0] == status_of(store, second)[0] == "succeeded"


async def test_http_handler_sends_no_cookie_a_downstream_set(
    store: SqliteStore, clock: FakeClock, aiohttp_server: Callable[..., Awaitable[TestServer]]
) -> None:
    """The shared client kept a cookie jar: a session cookie one provider's downstream set went
    with every later request to that host, the other providers' handlers' too. (aiohttp keeps
    no cookies for an IP address: the downstream is named, as in production.)"""
    seen: list[str | None] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Cookie"))
        response = web.Response(text="ok")
        response.set_cookie("sessionid", "tenant-a", path="/")
        return response

    app = web.Application()
    app.router.add_post("/{name}", handle)
    server = await aiohttp_server(app, host="127.0.0.1")
    base = f"http://localhost:{server.port}"
    worker = make_worker(
        store,
        clock,
        {"a": http_handler(f"{base}/a"), "b": http_handler(f"{base}/b")},
        concurrency=1,
    )
    await record(store, "a", 1)
    await worker.run(until_empty=True)
    await record(store, "a", 2)
    await record(store, "b", 3)
    await worker.run(until_empty=True)
    assert seen == [None, None, None]


def write_script(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


async def test_command_handler_gets_the_body_on_stdin_and_the_event_in_env(
    store: SqliteStore, clock: FakeClock, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    script = write_script(
        tmp_path / "on-event",
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        f"out = {str(out)!r}\n"
        "body = sys.stdin.buffer.read()\n"
        "name = os.environ['RECEIVER_EVENT_ID']\n"
        "open(os.path.join(out, name + '.body'), 'wb').write(body)\n"
        "keys = [k for k in os.environ if k.startswith('RECEIVER_')]\n"
        "env = {k: os.environ[k] for k in keys}\n"
        "open(os.path.join(out, name + '.json'), 'w').write(json.dumps(env))\n",
    )
    worker = make_worker(
        store, clock, {"cmd": {"handler": {"kind": "command", "argv": [str(script)]}}}
    )
    body = b'{"n": 1, "bytes": "\xc3\xa9"}'
    event_id = await record(store, "cmd", 1, body=body)
    await worker.run(until_empty=True)

    assert (out / f"{event_id}.body").read_bytes() == body
    env = json.loads((out / f"{event_id}.json").read_text())
    assert env == {
        "RECEIVER_EVENT_ID": str(event_id),
        "RECEIVER_KEY": "cmd:evt_1",
        "RECEIVER_ATTEMPT": "1",
        "RECEIVER_PROVIDER": "cmd",
        "RECEIVER_EVENT_TYPE": "order.created",
        "RECEIVER_IS_REPLAY": "0",
        "RECEIVER_CONTENT_TYPE": "application/json",
        "RECEIVER_CONTENT_ENCODING": "",
    }
    assert status_of(store, event_id) == ("succeeded", "succeeded", 1)
    assert attempts_of(store, event_id)[0]["exit_code"] == 0  # the timeline shows how it ended


async def test_command_handler_is_told_how_to_read_the_bytes_on_stdin(
    store: SqliteStore, clock: FakeClock, tmp_path: Path
) -> None:
    """A command got the body as it came, compressed or a form, with nothing saying which."""
    out = tmp_path / "env.json"
    script = write_script(
        tmp_path / "on-event",
        f"#!{sys.executable}\n"
        "import json, os\n"
        "names = ('RECEIVER_CONTENT_TYPE', 'RECEIVER_CONTENT_ENCODING')\n"
        f"open({str(out)!r}, 'w').write(json.dumps([os.environ[n] for n in names]))\n",
    )
    worker = make_worker(
        store, clock, {"cmd": {"handler": {"kind": "command", "argv": [str(script)]}}}
    )
    await record(
        store,
        "cmd",
        1,
        body=gzip.compress(b"a=1"),
        content_type="application/x-www-form-urlencoded",
        headers={"content-encoding": "gzip"},
    )
    await worker.run(until_empty=True)
    assert json.loads(out.read_text()) == ["application/x-www-form-urlencoded", "gzip"]


async def test_command_handler_does_not_inherit_webhook_secrets(
    store: SqliteStore, clock: FakeClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CMD_WEBHOOK_SECRET", "not-for-commands")
    monkeypatch.setenv("CMD_UNRELATED", "visible")
    out = tmp_path / "env.json"
    script = write_script(
        tmp_path / "dump-env",
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        "sys.stdin.buffer.read()\n"
        f"open({str(out)!r}, 'w').write(json.dumps(dict(os.environ)))\n",
    )
    worker = make_worker(
        store,
        clock,
        {
            "cmd": {
                "secret_envs": ["CMD_WEBHOOK_SECRET"],
                "handler": {"kind": "command", "argv": [str(script)]},
            }
        },
    )
    await record(store, "cmd", 1)
    await worker.run(until_empty=True)
    env = json.loads(out.read_text())
    assert "CMD_WEBHOOK_SECRET" not in env
    assert env["CMD_UNRELATED"] == "visible"


# -- retries -------------------------------------------------------------------------------


async def test_fails_twice_then_succeeds_with_backoff_and_one_idempotency_key(
    store: SqliteStore, clock: FakeClock, make_sink: MakeSink
) -> None:
    sink = await make_sink((500, {}), (502, {}))
    metrics = Metrics()
    worker = make_worker(
        store, clock, {"shop": http_handler(sink.url)}, backoff_base_s=10.0, metrics=metrics
    )
    body = b'{"n": 1, "card": "secret-looking-body"}'
    event_id = await record(store, "shop", 1, body=body)
    with structlog.testing.capture_logs() as logs:
        await worker.run(until_empty=True)

    assert sink.header("Idempotency-Key") == ["shop:evt_1"] * 3
    assert sink.header("Receiver-Attempt") == ["1", "2", "3"]
    assert clock.sleeps == [10.0, 20.0]  # base * 2 ** (n - 1), random() = 1.0
    rows = attempts_of(store, event_id)
    assert [r["outcome"] for r in rows] == ["retry", "retry", "succeeded"]
    assert [r["http_status"] for r in rows] == [500, 502, 200]
    assert rows[0]["error"] == "HTTP 500 Internal Server Error"
    assert rows[1]["started_at"] - rows[0]["finished_at"] == 10.0
    assert rows[2]["started_at"] - rows[1]["finished_at"] == 20.0
    assert status_of(store, event_id) == ("succeeded", "succeeded", 3)
    [[last_error]] = query(store, "SELECT last_error FROM jobs WHERE event_id = ?", event_id)
    assert last_error is None
    assert event_names(logs, "job_claimed", "job_retry_scheduled", "job_succeeded") == [
        "job_claimed",
        "job_retry_scheduled",
        "job_claimed",
        "job_retry_scheduled",
        "job_claimed",
        "job_succeeded",
    ]
    assert "secret-looking-body" not in repr(logs)
    # Each outcome line names the key the downstream dedupes on (an operator searches by it).
    outcomes = [e for e in logs if e["event"] in ("job_retry_scheduled", "job_succeeded")]
    assert {e["key"] for e in outcomes} == {"shop:evt_1"}
    sample = metrics.registry.get_sample_value
    assert sample("receiver_handler_attempts_total", {"provider": "shop", "outcome": "retry"}) == 2
    assert (
        sample("receiver_handler_attempts_total", {"provider": "shop", "outcome": "succeeded"}) == 1
    )
    assert sample("receiver_handler_latency_seconds_count", {"provider": "shop"}) == 3


async def test_a_poison_event_goes_dead_while_others_keep_flowing(
    store: SqliteStore, clock: FakeClock
) -> None:
    metrics = Metrics()
    worker = make_worker(
        store, clock, {"p": python("choke_on_poison", max_attempts=3)}, metrics=metrics
    )
    poison = await record(store, "p", 0, body=b'{"poison": true}')
    good = [await record(store, "p", n) for n in range(1, 6)]
    with structlog.testing.capture_logs() as logs:
        await worker.run(until_empty=True)
    raised = [line for line in logs if line["event"] == "handler_raised"]
    # Named as every line about a job's run is (README "Operations": logs).
    assert [(line["key"], line["attempt"], line["is_replay"]) for line in raised] == [
        ("p:evt_0", n, False) for n in (1, 2, 3)
    ]
    assert all(isinstance(line["exc_info"], ValueError) for line in raised)  # its traceback

    assert status_of(store, poison) == ("dead", "dead", 3)
    [[last_error]] = query(store, "SELECT last_error FROM jobs WHERE event_id = ?", poison)
    # Where it was raised, so a developer finds the line (the log has the whole traceback).
    assert re.fullmatch(
        r"ValueError: cannot digest this one \(at handler_targets\.py:\d+ in choke_on_poison\)",
        last_error,
    )
    poison_rows = attempts_of(store, poison)
    assert [r["outcome"] for r in poison_rows] == ["retry", "retry", "dead"]
    for event_id in good:
        assert status_of(store, event_id) == ("succeeded", "succeeded", 1)
    # The good ones were done before the poison's backoff ran out.
    finished = [attempts_of(store, e)[0]["finished_at"] for e in good]
    assert max(finished) < poison_rows[1]["started_at"]
    assert metrics.registry.get_sample_value("receiver_dead_events_total", {"provider": "p"}) == 1


async def test_a_permanent_4xx_is_dead_at_once(
    store: SqliteStore, clock: FakeClock, make_sink: MakeSink
) -> None:
    sink = await make_sink((422, {}), (200, {}))
    worker = make_worker(store, clock, {"shop": http_handler(sink.url)})
    event_id = await record(store, "shop", 1)
    with structlog.testing.capture_logs() as logs:
        await worker.run(until_empty=True)

    assert len(sink.requests) == 1
    assert clock.sleeps == []
    assert status_of(store, event_id) == ("dead", "dead", 1)
    [attempt] = attempts_of(store, event_id)
    assert (attempt["outcome"], attempt["http_status"]) == ("dead", 422)
    assert attempt["error"] == "HTTP 422 Unprocessable Entity"
    [dead] = [entry for entry in logs if entry["event"] == "job_dead"]
    assert dead["is_permanent"] is True


async def test_a_redelivery_of_an_event_once_replayed_is_not_sent_as_a_replay(
    store: SqliteStore, clock: FakeClock, make_sink: MakeSink
) -> None:
    """Dead, replayed by an operator, dead again, then redelivered by its provider: the run
    the provider caused was sent with ``Receiver-Replay: true`` and recorded as a replay."""
    sink = await make_sink((400, {}), (400, {}), (200, {}))
    worker = make_worker(store, clock, {"shop": http_handler(sink.url)})
    event_id = await record(store, "shop", 1)
    await worker.run(until_empty=True)
    await store.replayer.replay_ids([event_id], actor="cli", reason=None)
    with structlog.testing.capture_logs() as logs:
        await worker.run(until_empty=True)
    assert [(e["key"], e["is_replay"]) for e in logs if e["event"] == "job_dead"] == [
        ("shop:evt_1", True)  # a replay's run says it is one
    ]
    assert status_of(store, event_id)[0] == "dead"
    assert isinstance(await store.record(new_event("shop", 1, now=clock())), Duplicate)
    await worker.run(until_empty=True)

    assert [headers["Receiver-Replay"] for headers, _, _ in sink.requests] == [
        "false",
        "true",
        "false",
    ]
    assert [a["is_replay"] for a in attempts_of(store, event_id)] == [0, 1, 0]
    assert status_of(store, event_id)[0] == "succeeded"


async def test_connection_errors_and_timeouts_are_retried(
    store: SqliteStore, clock: FakeClock, aiohttp_server: Callable[..., Awaitable[TestServer]]
) -> None:
    async def too_slow(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response()

    app = web.Application()
    app.router.add_post("/hook", too_slow)
    slow = await aiohttp_server(app, host="127.0.0.1")
    closed_port = free_port()  # bound, then released: nothing listens there
    worker = make_worker(
        store,
        clock,
        {
            "down": http_handler(f"http://127.0.0.1:{closed_port}/hook", max_attempts=2),
            "slow": http_handler(
                str(slow.make_url("/hook")), handler={"timeout_s": 0.2}, max_attempts=2
            ),
        },
    )
    down = await record(store, "down", 1)
    late = await record(store, "slow", 1)
    await worker.run(until_empty=True)

    down_rows, late_rows = attempts_of(store, down), attempts_of(store, late)
    assert [r["outcome"] for r in down_rows] == ["retry", "dead"]
    assert down_rows[0]["error"].startswith("ClientConnectorError")
    assert [r["outcome"] for r in late_rows] == ["retry", "dead"]
    assert late_rows[0]["error"] == "timed out after 0.2s"


async def test_a_python_permanent_error_is_dead_at_once(
    store: SqliteStore, clock: FakeClock
) -> None:
    worker = make_worker(store, clock, {"p": python("refuse")})
    event_id = await record(store, "p", 1)
    await worker.run(until_empty=True)
    assert len(targets.STATE.calls) == 1
    assert status_of(store, event_id) == ("dead", "dead", 1)
    assert attempts_of(store, event_id)[0]["error"] == "PermanentError: this order does not exist"


async def test_retry_after_on_429_is_honoured(
    store: SqliteStore, clock: FakeClock, make_sink: MakeSink
) -> None:
    sink = await make_sink((429, {"Retry-After": "120"}))
    worker = make_worker(store, clock, {"shop": http_handler(sink.url)}, backoff_base_s=1.0)
    event_id = await record(store, "shop", 1)
    await worker.run(until_empty=True)

    assert sink.header("Idempotency-Key") == ["shop:evt_1"] * 2
    rows = attempts_of(store, event_id)
    assert rows[1]["started_at"] - rows[0]["finished_at"] == 120.0  # not the 1 s backoff
    assert clock.sleeps == [120.0]
    assert status_of(store, event_id) == ("succeeded", "succeeded", 2)


async def test_a_command_exit_code_listed_as_permanent_is_dead_at_once(
    store: SqliteStore, clock: FakeClock, tmp_path: Path
) -> None:
    script = write_script(tmp_path / "fail", "#!/bin/sh\ncat > /dev/null\nexit 3\n")
    handler = {"kind": "command", "argv": [str(script)], "permanent_exit_codes": [3]}
    worker = make_worker(store, clock, {"cmd": {"handler": handler}})
    event_id = await record(store, "cmd", 1)
    await worker.run(until_empty=True)
    assert status_of(store, event_id) == ("dead", "dead", 1)
    [attempt] = attempts_of(store, event_id)
    assert (attempt["exit_code"], attempt["error"]) == (3, "exit code 3")


# -- leases ----------------------------------------------------------------------------------


async def test_a_zombie_completion_with_a_stale_lease_changes_nothing(
    store: SqliteStore, clock: FakeClock
) -> None:
    queue = JobQueue(store.db)
    event_id = await record(store, "p", 1)
    [first] = await queue.claim(caps={"p": None}, limit=5, now=T0, lease_s=10)
    assert await queue.claim(caps={"p": None}, limit=5, now=T0 + 5, lease_s=10) == []
    [second] = await queue.claim(caps={"p": None}, limit=5, now=T0 + 11, lease_s=10)
    assert (first.attempt, second.attempt) == (1, 2)
    assert first.lease_token != second.lease_token

    late = AttemptRecord(finished_at_s=T0 + 12, error="zombie")
    assert await queue.complete(first, late) is False
    assert await queue.reschedule(first, late, run_at=T0 + 100) is False
    assert await queue.bury(first, late) is False
    assert await queue.release(first, now=T0 + 12) is False
    assert await queue.renew(first, now=T0 + 12, lease_s=10) is False
    assert status_of(store, event_id) == ("processing", "running", 2)

    assert await queue.complete(second, AttemptRecord(finished_at_s=T0 + 13)) is True
    assert status_of(store, event_id) == ("succeeded", "succeeded", 2)
    rows = attempts_of(store, event_id)
    assert [r["outcome"] for r in rows] == ["retry", "succeeded"]
    assert "lease expired" in rows[0]["error"]


async def test_renewing_leases_together_reports_only_the_ones_taken_over(
    store: SqliteStore, clock: FakeClock
) -> None:
    queue = JobQueue(store.db)
    kept, lost = await record(store, "p", 1), await record(store, "p", 2)
    claimed = {
        j.event_id: j for j in await queue.claim(caps={"p": None}, limit=5, now=T0, lease_s=10)
    }
    assert await queue.renew(claimed[kept], now=T0 + 5, lease_s=10) is True  # until T0 + 15
    [rescued] = await queue.claim(caps={"p": None}, limit=5, now=T0 + 12, lease_s=10)
    assert rescued.event_id == lost
    held = await queue.renew_many(list(claimed.values()), now=T0 + 13, lease_s=10)
    assert held == {kept}
    [[kept_until]] = query(store, "SELECT lease_expires_at FROM jobs WHERE event_id = ?", kept)
    assert kept_until == T0 + 23
    assert await queue.complete(rescued, AttemptRecord(finished_at_s=T0 + 14)) is True


async def test_a_hung_handler_is_taken_over_and_its_late_answer_refused(
    store: SqliteStore, clock: FakeClock
) -> None:
    hung = make_worker(store, clock, {"p": python("block")}, lease_s=30.0)
    store.on_committed(hung.wake)
    await hung.start()
    event_id = await record(store, "p", 1)
    await asyncio.wait_for(targets.STATE.entered.wait(), timeout=10)

    rescuer = make_worker(store, clock, {"p": python("record")}, lease_s=30.0)
    await rescuer.run(until_empty=True)  # sleeps (fake) until the hung lease expires
    assert clock.sleeps == [30.0]
    assert status_of(store, event_id) == ("succeeded", "succeeded", 2)

    with structlog.testing.capture_logs() as logs:
        targets.STATE.gate.set()  # the zombie wakes up and reports success, too late
        await hung.stop()
    assert event_names(logs, "job_lease_lost", "job_succeeded") == ["job_lease_lost"]
    assert status_of(store, event_id) == ("succeeded", "succeeded", 2)
    assert [r["outcome"] for r in attempts_of(store, event_id)] == ["retry", "succeeded"]


async def test_a_worker_never_claims_again_an_event_it_still_runs(
    store: SqliteStore, clock: FakeClock
) -> None:
    """A lease that ran out on paper (a clock step, a lock held past the renewal) made the
    event claimable again by the very worker still running it: twice at once, past the
    provider's concurrency of 1."""
    worker = make_worker(store, clock, {"p": {**python("block"), "concurrency": 1}}, lease_s=30.0)
    store.on_committed(worker.wake)
    await worker.start()
    first = await record(store, "p", 1)
    await asyncio.wait_for(targets.STATE.entered.wait(), timeout=10)
    second = await record(store, "p", 2)
    clock.now += 120  # the clock steps: the lease has run out while the handler still runs
    for _ in range(10):
        worker.wake()
        await asyncio.sleep(0.05)
    assert [call.id for call in targets.STATE.calls] == [first]
    assert status_of(store, second)[1:] == ("queued", 0)  # the provider's one slot is taken
    targets.STATE.gate.set()
    await worker.stop()


async def test_a_long_handler_keeps_its_lease_by_renewing(tmp_path: Path) -> None:
    import time

    store = SqliteStore(tmp_path / "receiver.db")
    await store.open()
    try:
        # A lease shorter than the handler's second, renewed every 0.4 s: a renewal may come
        # 0.4 s late on a loaded machine before the other worker could take the job over.
        slow = make_worker(store, time.time, {"p": python("slow")}, lease_s=0.8)
        other = make_worker(store, time.time, {"p": python("record")}, lease_s=0.8)
        await slow.start()
        event_id = await record(store, "p", 1)
        slow.wake()
        await asyncio.wait_for(_wait_for(lambda: len(targets.STATE.calls) == 1), timeout=10)
        await other.start()  # polls every 50 ms for the whole second the handler runs
        await asyncio.wait_for(
            _wait_for(lambda: status_of(store, event_id)[0] == "succeeded"), timeout=10
        )
        await other.stop()
        await slow.stop()
    finally:
        await store.close()
    assert [call.attempt for call in targets.STATE.calls] == [1]  # never taken over
    assert status_of(store, event_id) == ("succeeded", "succeeded", 1)


_LEASE_LOST = "lease expired before the attempt finished (the worker stopped or the handler hung)"


@pytest.mark.parametrize("previous", ["crashed", "failed"])
async def test_a_job_out_of_attempts_is_dead_without_running_and_keeps_its_last_error(
    store: SqliteStore, clock: FakeClock, previous: str
) -> None:
    """Its last attempt's lease ran out (a crash), or ``max_attempts`` was lowered while it
    waited to retry: dead without running, with the last real error, not a lease that never
    expired."""
    event_id = await record(store, "p", 1)
    queue = JobQueue(store.db)
    [job] = await queue.claim(caps={"p": None}, limit=1, now=T0, lease_s=60)
    if previous == "failed":  # attempt 1 of 10 failed; then the config says 1
        failed = AttemptRecord(finished_at_s=T0 + 1, error="HTTP 502 Bad Gateway")
        assert await queue.reschedule(job, failed, run_at=T0 + 2)
    worker = make_worker(store, clock, {"p": python("record", max_attempts=1)})
    await worker.run(until_empty=True)
    assert targets.STATE.calls == []
    assert status_of(store, event_id) == ("dead", "dead", 2)
    [[last_error]] = query(store, "SELECT last_error FROM jobs WHERE event_id = ?", event_id)
    last = _LEASE_LOST if previous == "crashed" else "HTTP 502 Bad Gateway"
    assert last_error == f"out of attempts (1 allowed); the last one ended with: {last}"


# -- ordering and limits -------------------------------------------------------------------


async def test_serialize_by_runs_one_value_at_a_time_in_receive_order(
    store: SqliteStore, clock: FakeClock
) -> None:
    worker = make_worker(
        store, clock, {"p": python("ordered", serialize_by="json:account")}, concurrency=8
    )
    for n in range(18):
        account = "abc"[n % 3]
        body = json.dumps({"account": account, "n": n}).encode()
        await record(store, "p", n, body=body, serialize_key=account)
    await worker.run(until_empty=True)

    starts = targets.STATE.starts
    assert len(starts) == 18
    assert targets.STATE.overlaps == []
    for account in "abc":
        mine = [n for a, n in starts if a == account]
        assert mine == sorted(mine)
    assert targets.STATE.max_parallel >= 2, "different values still run in parallel"


async def test_claims_respect_provider_and_global_limits(
    store: SqliteStore, clock: FakeClock
) -> None:
    queue = JobQueue(store.db)
    for n in range(5):
        await record(store, "a", n)
        await record(store, "b", n)
    first = await queue.claim(caps={"a": 2, "b": None}, limit=6, now=T0, lease_s=60)
    assert sorted(job.provider for job in first) == ["a", "a", "b", "b", "b", "b"]
    second = await queue.claim(caps={"a": 2, "b": None}, limit=6, now=T0, lease_s=60)
    assert [job.provider for job in second] == ["b"]  # "a" is at its limit of two
    assert await queue.claim(caps={"a": 2}, limit=6, now=T0, lease_s=60) == []
    stats = {s.provider: s for s in await queue.stats(["a", "b"], now=T0 + 7)}
    assert (stats["a"].queued, stats["a"].running, stats["a"].oldest_ready_age_s) == (3, 2, 7.0)
    assert (stats["b"].queued, stats["b"].running, stats["b"].oldest_ready_age_s) == (0, 5, 0.0)


async def test_the_oldest_unfinished_age_counts_retries_and_restarts_at_a_replay(
    store: SqliteStore, clock: FakeClock
) -> None:
    """An event failing for hours is always "due soon" between retries, so the oldest *due*
    job's age stays small; the unfinished age counts from when it was queued."""
    queue = JobQueue(store.db)
    event_id = await record(store, "a", 1)

    async def ages(at: float) -> tuple[float, float]:
        (stats,) = await queue.stats(["a"], now=at)
        return stats.oldest_ready_age_s, stats.oldest_unfinished_age_s

    for attempt in range(3):
        clock.now = T0 + 3600 * attempt
        (job,) = await queue.claim(caps={"a": None}, limit=1, now=clock.now, lease_s=60)
        failed = AttemptRecord(finished_at_s=clock.now + 1, error="503")
        assert await queue.reschedule(job, failed, run_at=clock.now + 3600)
    assert await ages(T0 + 3 * 3600) == (0.0, 3 * 3600.0)  # due just now, queued 3 h ago
    clock.now = T0 + 3 * 3600
    await store.replayer.replay_ids([event_id], actor="cli", reason=None)
    assert await ages(T0 + 3 * 3600) == (0.0, 3 * 3600.0)  # a replay has not handled it
    (job,) = await queue.claim(caps={"a": None}, limit=1, now=T0 + 3 * 3600, lease_s=60)
    assert await ages(T0 + 3 * 3600 + 5) == (0.0, 3 * 3600.0 + 5)  # running counts too
    assert await queue.complete(job, AttemptRecord(finished_at_s=T0 + 3 * 3600 + 6))
    assert await ages(T0 + 4 * 3600) == (0.0, 0.0)
    clock.now = T0 + 5 * 3600
    await store.replayer.replay_ids([event_id], actor="cli", reason=None)
    assert await ages(T0 + 5 * 3600 + 10) == (10.0, 10.0)  # a replay is queued anew


class SteppingClock(FakeClock):
    """A fake wall clock with a monotonic one beside it, which a step leaves alone."""

    def __init__(self) -> None:
        super().__init__()
        self.stepped_s = 0.0

    def monotonic(self) -> float:
        return self.now - self.stepped_s

    def step(self, seconds: float) -> None:
        self.now += seconds
        self.stepped_s += seconds

    def watch(self) -> ClockWatch:
        return ClockWatch(wall=self, steady=self.monotonic)


async def test_after_the_clock_steps_back_waiting_jobs_run_at_once_not_an_hour_later(
    tmp_path: Path,
) -> None:
    """Stored schedules are wall-clock times: after a step back of an hour, every job queued
    before it (and every retry) looked an hour away, and the gauges said nothing waited."""
    clock = SteppingClock()
    store = SqliteStore(tmp_path / "receiver.db", clock=clock)
    await store.open()
    try:
        worker = make_worker(store, clock, {"p": python("record")}, clock_watch=clock.watch())
        ids = [await record(store, "p", n) for n in range(3)]
        clock.step(-3600)
        with structlog.testing.capture_logs() as logs:
            await worker.run(until_empty=True)
        assert sorted(call.id for call in targets.STATE.calls) == ids
        assert max(clock.sleeps, default=0.0) < 60, clock.sleeps
        stepped = [e for e in logs if e["event"] == "clock_stepped"]
        assert [e["step_s"] for e in stepped] == [-3600]
        shifted = [e for e in logs if e["event"] == "job_schedules_shifted"]
        assert [e["jobs"] for e in shifted] == [3]
    finally:
        await store.close()


async def test_events_of_a_provider_without_a_handler_stay_received(
    store: SqliteStore, clock: FakeClock
) -> None:
    worker = make_worker(store, clock, {"quiet": {}, "loud": python("record")})
    quiet = [await record(store, "quiet", n, has_handler=False) for n in range(3)]
    loud = await record(store, "loud", 1)
    await worker.run(until_empty=True)

    assert status_of(store, loud) == ("succeeded", "succeeded", 1)
    for event_id in quiet:
        assert status_of(store, event_id) == ("received", "queued", 0)
        assert attempts_of(store, event_id) == []
    # Once a handler is configured, the waiting events are processed.
    later = make_worker(store, clock, {"quiet": python("record")})
    await later.run(until_empty=True)
    for event_id in quiet:
        assert status_of(store, event_id) == ("succeeded", "succeeded", 1)


# -- lifecycle -------------------------------------------------------------------------------


async def _wait_for(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0.01)


async def test_new_work_wakes_the_worker_before_the_poll_interval(
    store: SqliteStore, clock: FakeClock
) -> None:
    worker = make_worker(store, clock, {"p": python("record")}, poll_interval_s=60.0)
    store.on_committed(worker.wake)
    await worker.start()
    try:
        assert await worker.not_running_reason() is None
        await asyncio.sleep(0.05)  # the first (empty) poll is over; the next is a minute away
        event_id = await record(store, "p", 1)
        await asyncio.wait_for(
            _wait_for(lambda: status_of(store, event_id)[0] == "succeeded"), timeout=5
        )
    finally:
        await worker.stop()
    assert await worker.not_running_reason() == (
        "the worker is stopping (the server is shutting down)"
    )


async def test_a_crashed_worker_loop_is_logged_at_once_and_started_again(
    store: SqliteStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A claim that raised something other than storage trouble (a row corrupted by hand)
    ended the loop: nothing was processed, the queue gauges stood still, and the only trace,
    `worker_crashed`, was logged at shutdown."""
    claim = JobQueue.claim
    calls = []

    async def failing_once(self: JobQueue, **kwargs: Any) -> Any:
        calls.append(kwargs)
        if len(calls) == 1:
            raise ValueError("a row this worker cannot read")
        return await claim(self, **kwargs)

    monkeypatch.setattr(JobQueue, "claim", failing_once)
    metrics = Metrics()
    worker = make_worker(store, clock, {"p": python("record")}, metrics=metrics)
    event_id = await record(store, "p", 1)
    sample = metrics.registry.get_sample_value
    with structlog.testing.capture_logs() as logs:
        await worker.start()
        try:
            await asyncio.wait_for(_wait_for(lambda: not worker.is_running), timeout=5)
            [crash] = [e for e in logs if e["event"] == "worker_crashed"]
            assert crash["restart_in_s"] == 1.0 and "cannot read" in crash["error"]
            assert sample("receiver_background_errors_total", {"task": "worker"}) == 1
            # Counted even though the loop never got to count them: an alert can fire.
            await asyncio.wait_for(
                _wait_for(lambda: sample("receiver_queue_depth", {"provider": "p"}) == 1),
                timeout=5,
            )
            assert await worker.not_running_reason() == (
                "the worker crashed (1 in a row) and is about to start again"
            )
            await asyncio.wait_for(
                _wait_for(lambda: status_of(store, event_id)[0] == "succeeded"), timeout=5
            )
            assert worker.is_running
        finally:
            await worker.stop()
    assert len([e for e in logs if e["event"] == "worker_crashed"]) == 1


async def test_a_row_with_unreadable_headers_is_run_without_them(
    store: SqliteStore, clock: FakeClock
) -> None:
    """Headers edited by hand into something that is not JSON crashed every claim: the
    worker restarted in a loop, and no provider's events ran."""
    from tests.integration import handler_targets

    handler_targets.reset()
    worker = make_worker(store, clock, {"p": python("record")})
    broken = await record(store, "p", 1)
    fine = await record(store, "p", 2)
    with closing(sqlite3.connect(store.db.path)) as conn, conn:
        conn.execute("UPDATE payloads SET headers = '{broken' WHERE event_id = ?", (broken,))
    with structlog.testing.capture_logs() as logs:
        await asyncio.wait_for(worker.run(until_empty=True), timeout=10)
    assert status_of(store, broken)[0] == status_of(store, fine)[0] == "succeeded"
    [unreadable] = [e for e in logs if e["event"] == "event_headers_unreadable"]
    assert unreadable["event_id"] == broken
    [call] = [c for c in handler_targets.STATE.calls if c.id == broken]
    assert dict(call.headers) == {}


async def test_never_more_handlers_run_at_once_than_the_concurrency(
    store: SqliteStore, clock: FakeClock
) -> None:
    """A slot is handed on as soon as a handler returns (its outcome is written alongside the
    next claim): the limit counts handlers, and it still holds."""
    worker = make_worker(store, clock, {"p": python("overlapping")}, concurrency=3)
    events = [await record(store, "p", n) for n in range(12)]
    await worker.run(until_empty=True)
    assert targets.STATE.max_parallel == 3
    assert all(status_of(store, e) == ("succeeded", "succeeded", 1) for e in events)


async def test_a_single_free_slot_is_refilled_while_the_others_still_run(
    store: SqliteStore, clock: FakeClock
) -> None:
    """Claims gather a few free slots to fill them at once, but never wait for more slots than
    can come: with seven handlers hung and one slot free, new events still run one by one."""
    worker = make_worker(
        store,
        clock,
        {"hung": python("block"), "quick": python("record")},
        concurrency=8,
        poll_interval_s=60.0,
    )
    store.on_committed(worker.wake)
    for n in range(7):
        await record(store, "hung", n)
    await worker.start()
    try:
        await asyncio.wait_for(_wait_for(lambda: len(targets.STATE.calls) == 7), timeout=5)
        quick = [await record(store, "quick", n) for n in range(3)]
        await asyncio.wait_for(
            _wait_for(lambda: all(status_of(store, e)[0] == "succeeded" for e in quick)),
            timeout=5,
        )
        assert not targets.STATE.gate.is_set()  # the seven are still running
    finally:
        targets.STATE.gate.set()
        await worker.stop()


async def test_queue_gauges_follow_the_queue_and_back_off_when_counting_is_slow(
    store: SqliteStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    metrics = Metrics()
    worker = make_worker(
        store, clock, {"p": python("block")}, metrics=metrics, concurrency=1, poll_interval_s=0.05
    )
    for n in range(3):
        await record(store, "p", n)
    depth = functools.partial(
        metrics.registry.get_sample_value, "receiver_queue_depth", {"provider": "p"}
    )
    await worker.start()
    try:
        await asyncio.wait_for(_wait_for(lambda: depth() == 2), timeout=5)  # one runs, two wait
        # The one a handler holds (a hung downstream's) is counted too, not in no gauge at all.
        sample = metrics.registry.get_sample_value
        assert sample("receiver_jobs_running", {"provider": "p"}) == 1
        unfinished = sample("receiver_queue_oldest_unfinished_age_seconds", {"provider": "p"})
        assert unfinished is not None and unfinished >= 0  # the value: the stats test above
        counts: list[float] = []
        real = JobQueue.stats

        async def slow_stats(self: JobQueue, *args: Any, **kwargs: Any) -> Any:
            counts.append(time.monotonic())
            stats = await real(self, *args, **kwargs)
            self.last_stats_cost_s = 0.05  # a deep backlog: the count takes as long as a poll
            return stats

        monkeypatch.setattr(JobQueue, "stats", slow_stats)
        # Due now (the count before was due 100 times its own cost later, which a loaded
        # machine made longer than this test waits).
        worker._stats_due_at = float("-inf")
        await asyncio.wait_for(_wait_for(lambda: bool(counts)), timeout=5)
        await asyncio.sleep(1.0)  # twenty polls
        # Each count costs a poll interval, so the next one waits 100 times that: at most 1 %.
        assert len(counts) == 1
    finally:
        targets.STATE.gate.set()
        await worker.stop()


async def test_shutdown_releases_running_jobs_without_counting_an_attempt(
    store: SqliteStore, clock: FakeClock
) -> None:
    metrics = Metrics()
    worker = make_worker(
        store, clock, {"p": python("block")}, shutdown_timeout_s=0.2, metrics=metrics
    )
    store.on_committed(worker.wake)
    await worker.start()
    ids = [await record(store, "p", n) for n in range(2)]
    await asyncio.wait_for(_wait_for(lambda: len(targets.STATE.calls) == 2), timeout=10)
    with structlog.testing.capture_logs() as logs:
        await worker.stop()

    assert event_names(logs, "job_released") == ["job_released"] * 2
    for event_id in ids:
        assert status_of(store, event_id) == ("queued", "queued", 0)
        [attempt] = attempts_of(store, event_id)
        assert attempt["outcome"] == "interrupted"
        assert attempt["finished_at"] is not None
    sample = metrics.registry.get_sample_value
    assert (
        sample("receiver_handler_attempts_total", {"provider": "p", "outcome": "interrupted"}) == 2
    )

    targets.reset()
    after = make_worker(store, clock, {"p": python("record")})
    await after.run(until_empty=True)
    assert sorted(call.attempt for call in targets.STATE.calls) == [1, 1]
    for event_id in ids:
        assert status_of(store, event_id) == ("succeeded", "succeeded", 1)


def _is_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie awaiting its reaper counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


async def test_a_command_timeout_kills_the_whole_process_group(
    store: SqliteStore, clock: FakeClock, tmp_path: Path
) -> None:
    script = write_script(
        tmp_path / "hang",
        "#!/bin/sh\n"
        "sleep 60 &\n"
        f"echo $! > {tmp_path}/child.pid\n"
        f"echo $$ > {tmp_path}/parent.pid\n"
        "wait\n",
    )
    handler = {"kind": "command", "argv": [str(script)], "timeout_s": 0.5}
    worker = make_worker(store, clock, {"cmd": {"handler": handler, "max_attempts": 1}})
    event_id = await record(store, "cmd", 1)
    await worker.run(until_empty=True)

    assert status_of(store, event_id) == ("dead", "dead", 1)
    assert attempts_of(store, event_id)[0]["error"] == "timed out after 0.5s"
    pids = [int((tmp_path / name).read_text()) for name in ("parent.pid", "child.pid")]
    await asyncio.wait_for(_wait_for(lambda: not any(map(_is_alive, pids))), timeout=5)
    assert os.getpgid(os.getpid()) != pids[0], "the command ran in its own process group"


async def test_a_command_that_exits_0_leaving_a_child_on_its_stdin_succeeds(
    store: SqliteStore, clock: FakeClock, tmp_path: Path
) -> None:
    """A child the command starts keeps its stdin and reads none of it: a body larger than
    the pipe never finished writing, and the exit 0 was recorded as a timeout and run again."""
    script = write_script(
        tmp_path / "spawn",
        # sh gives a background job /dev/null for stdin unless told: fd 3 keeps the pipe
        f"#!/bin/sh\nexec 3<&0\nsleep 30 <&3 3<&- &\necho $! > {tmp_path}/child.pid\nexit 0\n",
    )
    handler = {"kind": "command", "argv": [str(script)], "timeout_s": 5}
    worker = make_worker(store, clock, {"cmd": {"handler": handler, "max_attempts": 1}})
    event_id = await record(store, "cmd", 1, body=b"x" * 300_000)  # past a 64 KiB pipe
    try:
        await worker.run(until_empty=True)
    finally:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError, ValueError):
            os.kill(int((tmp_path / "child.pid").read_text()), signal.SIGKILL)
    assert status_of(store, event_id) == ("succeeded", "succeeded", 1)
    assert attempts_of(store, event_id)[0]["exit_code"] == 0


async def test_a_command_that_exits_without_reading_its_stdin_leaves_no_loop_error(
    store: SqliteStore, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Its stdin pipe was often closing already when the exit was seen: aborting it again made
    asyncio close it twice, a traceback on stderr outside the JSON log for each such run."""
    handler = {"kind": "command", "argv": ["sh", "-c", "exit 3"], "permanent_exit_codes": [3]}
    worker = make_worker(store, clock, {"cmd": {"handler": handler}}, concurrency=4)
    for n in range(12):
        await record(store, "cmd", n, body=b"x" * 1_048_576)  # far past a pipe's 64 KiB
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        await worker.run(until_empty=True)
        await asyncio.sleep(0.1)  # a second close ran as a callback after the run
    assert [r.getMessage() for r in caplog.records if r.name == "asyncio"] == []
    assert query(store, "SELECT count(*) FROM jobs WHERE status = 'dead'") == [(12,)]


def python_with(target: str, *, timeout_s: float, **extra: Any) -> dict[str, Any]:
    handler = {"kind": "python", "target": f"{TARGETS}:{target}", "timeout_s": timeout_s}
    return {"handler": handler, **extra}


async def test_a_handler_that_exits_fails_its_attempt_not_the_receiver(
    store: SqliteStore, clock: FakeClock
) -> None:
    """SystemExit inside an asyncio task would stop the event loop: the whole receiver."""
    worker = make_worker(
        store,
        clock,
        {"s": python("exits", max_attempts=1), "a": python("exits_async", max_attempts=1)},
    )
    sync_id, async_id = await record(store, "s", 1), await record(store, "a", 2)
    await worker.run(until_empty=True)
    assert status_of(store, sync_id) == ("dead", "dead", 1)
    assert status_of(store, async_id) == ("dead", "dead", 1)
    assert attempts_of(store, sync_id)[0]["error"] == "SystemExit: 3"
    assert attempts_of(store, async_id)[0]["error"] == "SystemExit: 4"


async def test_whatever_a_handler_raises_is_a_failed_attempt_retried(
    store: SqliteStore, clock: FakeClock
) -> None:
    """A StopIteration out of a sync handler's thread never reached the worker (a future
    refuses it): the attempt read "timed out", and the run held its provider's slots for good.
    Any other BaseException ended the worker's task: the job waited out its lease as if it
    hung, and its error was in no attempt."""
    targets = {
        "stop": "next_of_nothing",
        "odd": "raises_unusual",
        "odd_async": "raises_unusual_async",
    }
    worker = make_worker(
        store,
        clock,
        {name: python(target, max_attempts=2, concurrency=1) for name, target in targets.items()},
    )
    ids = {name: await record(store, name, n) for n, name in enumerate(targets)}
    await asyncio.wait_for(worker.run(until_empty=True), timeout=10)
    errors = {name: [a["error"] for a in attempts_of(store, ids[name])] for name in targets}
    assert errors == {
        "stop": ["StopIteration", "StopIteration"],
        "odd": ["Unusual: x", "Unusual: x"],
        "odd_async": ["GeneratorExit: y", "GeneratorExit: y"],
    }
    for event_id in ids.values():
        assert status_of(store, event_id) == ("dead", "dead", 2)


async def test_async_code_behind_any_callable_shape_is_awaited(
    store: SqliteStore, clock: FakeClock
) -> None:
    """An object with ``async def __call__`` and a sync wrapper returning a coroutine: both
    run (before, they counted as succeeded without running)."""
    worker = make_worker(
        store,
        clock,
        {"obj": python("async_callable", max_attempts=1), "wrapped": python("returns_coroutine")},
    )
    obj_id, wrapped_id = await record(store, "obj", 1), await record(store, "wrapped", 2)
    await worker.run(until_empty=True)
    assert status_of(store, obj_id) == ("dead", "dead", 1)
    assert attempts_of(store, obj_id)[0]["error"].startswith("RuntimeError: ran, and failed (at")
    assert status_of(store, wrapped_id) == ("succeeded", "succeeded", 1)
    assert [c.key for c in targets.STATE.calls] == ["obj:evt_1", "wrapped:evt_2"]


async def test_hung_sync_handlers_do_not_starve_the_others(store: SqliteStore) -> None:
    """Each timed-out sync call keeps its thread (threads cannot be stopped); more of them than
    a thread pool holds must not leave the next sync handler without a thread, nor hold the
    worker's slots. Their events stay running until the threads end, then fail the attempt."""
    worker = make_worker(
        store,
        time.time,
        {
            "hung": python_with("hang_sync", timeout_s=0.2, max_attempts=1),
            "quick": python_with("record_sync", timeout_s=2.0),
        },
        concurrency=16,
    )
    hung = [await record(store, "hung", n) for n in range(12)]
    quick = await record(store, "quick", 99)
    run = asyncio.create_task(worker.run(until_empty=True))
    for _ in range(100):
        await asyncio.sleep(0.05)
        if status_of(store, quick)[1] == "succeeded":
            break
    assert status_of(store, quick) == ("succeeded", "succeeded", 1)
    await asyncio.sleep(0.5)  # well past their timeout: given up on, yet their threads run
    assert {status_of(store, event_id)[1] for event_id in hung} == {"running"}
    targets.STATE.release.set()  # the threads return at last
    await asyncio.wait_for(run, timeout=20)
    for event_id in hung:
        assert status_of(store, event_id) == ("dead", "dead", 1)
        assert attempts_of(store, event_id)[0]["error"] == "timed out after 0.2s"
    assert len(targets.STATE.calls) == 12 + 1


async def test_an_async_handler_that_ignores_cancellation_still_times_out(
    store: SqliteStore,
) -> None:
    worker = make_worker(
        store, time.time, {"p": python_with("deaf", timeout_s=0.2, max_attempts=1)}
    )
    event_id = await record(store, "p", 1)
    await asyncio.wait_for(worker.run(until_empty=True), timeout=10)
    assert status_of(store, event_id) == ("dead", "dead", 1)
    [attempt] = attempts_of(store, event_id)
    assert attempt["error"] == "timed out after 0.2s"
    assert attempt["duration_s"] >= 1.5  # recorded once the code it could not stop ended


def _timing_out(store: SqliteStore, target: str, *, max_attempts: int, **settings: Any) -> Worker:
    """Provider ``p`` with ``target`` timing out after 0.1 s, retried at once (real time)."""
    return make_worker(
        store,
        time.time,
        {"p": python_with(target, timeout_s=0.1, max_attempts=max_attempts)},
        backoff_base_s=0.01,
        backoff_max_s=0.01,
        **settings,
    )


async def test_a_run_past_its_timeout_is_not_run_again_until_it_ends(
    store: SqliteStore,
) -> None:
    """A timed-out sync handler's retry started while its thread still ran: the same event
    twice at once (past serialize_by), and one more thread per attempt."""
    worker = _timing_out(store, "overrun_sync", max_attempts=3)
    event_id = await record(store, "p", 1)
    await asyncio.wait_for(worker.run(until_empty=True), timeout=20)
    assert status_of(store, event_id) == ("dead", "dead", 3)
    assert len(targets.STATE.calls) == 3
    assert targets.STATE.max_parallel == 1


async def test_code_that_never_returns_spends_its_attempts_and_goes_dead(
    store: SqliteStore,
) -> None:
    """Waiting for a thread that never returns held its event running for good: given back
    uncounted at every restart, it started over and never went dead."""
    worker = _timing_out(store, "hang_sync", max_attempts=2, lease_s=0.5)
    event_id = await record(store, "p", 1)
    await asyncio.wait_for(worker.run(until_empty=True), timeout=20)
    assert status_of(store, event_id) == ("dead", "dead", 2)
    assert [a["error"] for a in attempts_of(store, event_id)] == ["timed out after 0.1s"] * 2


async def _hung_and_started(
    store: SqliteStore, *, timeout_s: float, shutdown_timeout_s: float
) -> tuple[Worker, int]:
    """A started worker whose one event's sync handler hangs, once that handler has begun."""
    worker = make_worker(
        store,
        time.time,
        {"p": python_with("hang_sync", timeout_s=timeout_s, max_attempts=3)},
        shutdown_timeout_s=shutdown_timeout_s,
    )
    store.on_committed(worker.wake)
    await worker.start()
    event_id = await record(store, "p", 1)
    await asyncio.wait_for(_wait_for(lambda: len(targets.STATE.calls) == 1), timeout=10)
    return worker, event_id


async def test_a_shutdown_does_not_wait_for_an_overrun_and_counts_its_attempt(
    store: SqliteStore,
) -> None:
    """The overrun held every shutdown for its full timeout, then gave the attempt back."""
    worker, event_id = await _hung_and_started(store, timeout_s=0.1, shutdown_timeout_s=10.0)
    await asyncio.sleep(0.5)  # past its timeout: overrunning
    started = time.monotonic()
    await worker.stop()
    assert time.monotonic() - started < 8.0  # not the whole 10 s shutdown budget
    assert status_of(store, event_id)[1:] == ("queued", 1)  # counted; its retry is queued
    assert [a["error"] for a in attempts_of(store, event_id)] == ["timed out after 0.1s"]


async def test_runs_left_running_still_take_their_providers_concurrency(
    store: SqliteStore,
) -> None:
    """Once its wait ran out, a hung run no longer counted: a provider capped at one started
    one more hung thread every timeout + lease_s, with no bound but events x attempts."""
    worker = _timing_out(store, "hang_sync", max_attempts=5, lease_s=0.2)
    worker.routes["p"] = dataclasses.replace(worker.routes["p"], concurrency=1)
    for n in range(3):
        await record(store, "p", n)
    run = asyncio.create_task(worker.run())
    await asyncio.sleep(3.0)  # many timeout + lease_s spans: the one hung thread holds the cap
    assert len(targets.STATE.calls) == 1
    targets.STATE.release.set()
    await worker.stop()
    run.cancel()
    await asyncio.gather(run, return_exceptions=True)


async def test_a_run_overrunning_its_timeout_is_a_gauge_until_it_ends(
    store: SqliteStore,
) -> None:
    """It was one log line and nothing an alert could watch."""
    metrics = Metrics()
    worker = _timing_out(store, "hang_sync", max_attempts=1, metrics=metrics)
    await record(store, "p", 1)
    run = asyncio.create_task(worker.run(until_empty=True))

    def overrunning() -> float | None:
        return metrics.registry.get_sample_value("receiver_handlers_overrunning", {"provider": "p"})

    await asyncio.wait_for(_wait_for(lambda: overrunning() == 1), timeout=10)
    targets.STATE.release.set()  # the thread returns at last
    await asyncio.wait_for(run, timeout=10)
    assert overrunning() == 0


async def test_a_run_that_times_out_during_a_shutdown_does_not_hold_it(
    store: SqliteStore,
) -> None:
    """A handler inside its timeout at SIGTERM then timed out, and the shutdown waited its
    whole budget for the run's overrun."""
    worker, event_id = await _hung_and_started(store, timeout_s=0.5, shutdown_timeout_s=8.0)
    started = time.monotonic()
    await worker.stop()  # still inside its timeout
    assert time.monotonic() - started < 5.0  # its timeout and a write, not the 8 s budget
    assert [a["error"] for a in attempts_of(store, event_id)] == ["timed out after 0.5s"]


async def test_a_lapsed_lease_of_its_own_does_not_keep_a_worker_from_free_slots(
    store: SqliteStore, clock: FakeClock
) -> None:
    """Its own lapsed runs filled the candidate rows, were dropped, and nothing was claimed
    although a slot was free."""
    worker = make_worker(store, clock, {"p": python("block")}, concurrency=2, lease_s=30.0)
    store.on_committed(worker.wake)
    await worker.start()
    first = await record(store, "p", 1)
    await asyncio.wait_for(targets.STATE.entered.wait(), timeout=10)
    clock.now += 120  # the clock steps: the first run's lease has lapsed on paper
    second = await record(store, "p", 2)
    await asyncio.wait_for(_wait_for(lambda: len(targets.STATE.calls) == 2), timeout=10)
    assert [call.id for call in targets.STATE.calls] == [first, second]
    targets.STATE.gate.set()
    await worker.stop()


async def test_a_handlers_own_cancelled_error_is_a_failed_attempt_not_a_shutdown(
    store: SqliteStore, clock: FakeClock
) -> None:
    """It was taken for a shutdown: the attempt given back uncounted, and the job run again
    at once, hundreds of times a second, for ever."""
    worker = make_worker(store, clock, {"p": python("cancelled_by_its_own_code", max_attempts=3)})
    event_id = await record(store, "p", 1)
    await asyncio.wait_for(worker.run(until_empty=True), timeout=10)
    assert status_of(store, event_id) == ("dead", "dead", 3)
    assert len(targets.STATE.calls) == 3
    errors = {a["error"] for a in attempts_of(store, event_id)}
    assert errors == {"CancelledError: the handler's own code was cancelled"}


async def test_a_handlers_own_timeout_error_is_not_reported_as_its_timeout(
    store: SqliteStore, clock: FakeClock
) -> None:
    worker = make_worker(
        store, clock, {"p": python_with("own_timeout", timeout_s=30.0, max_attempts=1)}
    )
    event_id = await record(store, "p", 1)
    await asyncio.wait_for(worker.run(until_empty=True), timeout=10)
    [attempt] = attempts_of(store, event_id)
    assert attempt["error"] is not None and attempt["error"].startswith("TimeoutError")
    assert "30s" not in attempt["error"]


async def test_a_huge_answer_from_the_downstream_is_not_read_whole(
    store: SqliteStore, clock: FakeClock, aiohttp_server: Callable[..., Awaitable[TestServer]]
) -> None:
    """Past 1 MiB the rest of an answer is dropped with its connection, so memory does not grow
    with what a downstream sends back (concurrency x answer size)."""
    ports: list[int] = []

    async def chatty(request: web.Request) -> web.StreamResponse:
        await request.read()
        peer = request.transport.get_extra_info("peername") if request.transport else None
        ports.append(peer[1] if peer else 0)
        response = web.StreamResponse()
        await response.prepare(request)
        for _ in range(64 if len(ports) == 1 else 1):  # the first answer is 4 MiB
            await response.write(b"z" * 65_536)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/hook", chatty)
    server = await aiohttp_server(app, host="127.0.0.1")
    worker = make_worker(
        store, clock, {"shop": http_handler(str(server.make_url("/hook")))}, concurrency=1
    )
    ids = [await record(store, "shop", n) for n in range(2)]
    await worker.run(until_empty=True)
    for event_id in ids:
        assert status_of(store, event_id) == ("succeeded", "succeeded", 1)
    assert len(set(ports)) == 2, "the connection of the huge answer was dropped, not reused"


async def test_a_2xx_whose_body_breaks_off_or_dawdles_is_still_a_success(
    store: SqliteStore, clock: FakeClock
) -> None:
    """The downstream said 200 and did the work; a body that then stalls past the timeout or
    breaks off was a failed attempt, retried until dead: the work done again each time."""
    calls: list[bytes] = []
    writers: list[asyncio.StreamWriter] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
        calls.append(head.split(b" ")[1])
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nabc")
        await writer.drain()
        if b"/slow" in head:
            await asyncio.sleep(1.5)  # past the handler's 1 s timeout
        writer.close()  # 3 bytes of the promised 1000

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        providers = {
            path: {
                "handler": {
                    "kind": "http",
                    "url": f"http://127.0.0.1:{port}/{path}",
                    "timeout_s": 1.0,
                },
                "max_attempts": 3,
            }
            for path in ("cut", "slow")
        }
        worker = make_worker(store, clock, providers)
        ids = [await record(store, path, 1) for path in ("cut", "slow")]
        await asyncio.wait_for(worker.run(until_empty=True), timeout=20)
        await asyncio.sleep(0.6)  # the slow answer ends too
    finally:
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()
    for event_id in ids:
        assert status_of(store, event_id) == ("succeeded", "succeeded", 1)
        assert attempts_of(store, event_id)[0]["http_status"] == 200
    assert sorted(calls) == [b"/cut", b"/slow"]


@pytest.mark.parametrize(
    ("location", "shown"),
    [
        ("https://user:pw@example.test/new-hook?token=abc", "https://example.test/new-hook"),
        ("HTTPS://user:pw@example.test/new-hook?token=abc", "https://example.test/new-hook"),
        ("//user:pw@example.test/new-hook?token=abc#frag", "//example.test/new-hook"),
        ("/new-hook?token=abc", "/new-hook"),
    ],
)
async def test_a_redirect_says_where_it_pointed_without_credentials_or_query(
    store: SqliteStore,
    clock: FakeClock,
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    location: str,
    shown: str,
) -> None:
    async def moved(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=301, headers={"Location": location})

    app = web.Application()
    app.router.add_post("/hook", moved)
    server = await aiohttp_server(app, host="127.0.0.1")
    worker = make_worker(
        store, clock, {"p": {**http_handler(str(server.make_url("/hook"))), "max_attempts": 1}}
    )
    event_id = await record(store, "p", 1)
    await worker.run(until_empty=True)
    [attempt] = attempts_of(store, event_id)
    assert attempt["error"] == f"HTTP 301 Moved Permanently to {shown}"


async def test_an_error_text_never_shows_the_urls_credentials_or_query(
    store: SqliteStore, clock: FakeClock
) -> None:
    """aiohttp quotes the URL without its userinfo, so the text must be cleaned by pattern."""

    async def malformed(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(malformed, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    url = f"http://user:CANARYpw@127.0.0.1:{port}/hook?token=CANARYquery"
    worker = make_worker(store, clock, {"shop": http_handler(url, max_attempts=1)})
    event_id = await record(store, "shop", 1)
    try:
        with structlog.testing.capture_logs() as logs:
            await worker.run(until_empty=True)
    finally:
        server.close()
        await server.wait_closed()
    [attempt] = attempts_of(store, event_id)
    assert attempt["error"]
    assert "CANARY" not in attempt["error"] and "CANARY" not in repr(logs)
    assert f"127.0.0.1:{port}/hook" in attempt["error"]


async def test_jobs_left_running_by_a_provider_without_a_handler_now_are_queued_again(
    store: SqliteStore, clock: FakeClock
) -> None:
    """A worker killed mid-job, restarted with that provider removed from the config (or its
    handler taken away): no one claims the job again, so it showed "processing" for ever."""
    gone = await record(store, "gone", 1)
    kept = await record(store, "p", 2)
    [claimed] = await JobQueue(store.db).claim(
        caps={"gone": None}, limit=1, now=clock(), lease_s=30
    )
    assert claimed.event_id == gone
    clock.now += 60  # the crashed worker's lease ran out
    worker = make_worker(store, clock, {"p": python("record")})
    await worker.run(until_empty=True)
    assert status_of(store, gone)[:2] == ("received", "queued")  # as a handler-less event
    assert status_of(store, kept)[:2] == ("succeeded", "succeeded")
    [(outcome, error)] = query(
        store, "SELECT outcome, error FROM attempts WHERE event_id = ?", gone
    )
    assert outcome == "retry" and "lease expired" in error
    # The job says so too: the error its next attempt (or its burial) names as the last one.
    assert query(store, "SELECT last_error FROM jobs WHERE event_id = ?", gone) == [(error,)]


@pytest.mark.parametrize(
    ("target", "write", "final"),
    [("record", "complete", "succeeded"), ("refuse", "bury", "dead")],
)
async def test_an_outcome_write_that_meets_a_lock_is_tried_again_while_the_lease_holds(
    store: SqliteStore,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    target: str,
    write: str,
    final: str,
) -> None:
    """A completion that failed on a briefly locked database was dropped: the lease ran out and
    the job ran again (or, on its last attempt, went dead although the handler succeeded). A
    failed run's outcome met a crash instead: its log line named ``error`` twice."""
    from receiver.errors import StorageUnavailable

    event_id = await record(store, "p", 1)
    real = getattr(JobQueue, write)
    failures = {"left": 2}

    async def locked_then_free(self: JobQueue, *args: Any, **kwargs: Any) -> bool:
        if failures["left"]:
            failures["left"] -= 1
            raise StorageUnavailable("the database is locked by another writer", retry_after_s=1)
        return bool(await real(self, *args, **kwargs))

    monkeypatch.setattr(JobQueue, write, locked_then_free)
    worker = make_worker(store, clock, {"p": python(target, max_attempts=1)}, lease_s=10)
    with structlog.testing.capture_logs() as logs:
        await worker.run(until_empty=True)
    assert status_of(store, event_id) == (final, final, 1)
    assert len(targets.STATE.calls) == 1
    assert failures["left"] == 0
    assert (
        event_names(logs, "job_settle_retrying", "job_task_failed") == ["job_settle_retrying"] * 2
    )


def _locked(times: int, real: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """``real``, failing on a locked database its first ``times`` calls (or every call: -1)."""
    from receiver.errors import StorageUnavailable

    calls = {"left": times}

    async def locked(self: JobQueue, *args: Any, **kwargs: Any) -> Any:
        if calls["left"]:
            calls["left"] -= 1
            raise StorageUnavailable("the database is locked by another writer", retry_after_s=1)
        return await real(self, *args, **kwargs)

    return locked


async def test_a_claim_that_meets_a_lock_is_logged_and_the_worker_goes_on(
    store: SqliteStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failed claim must not end the worker's loop: the next pass claims again."""
    event_id = await record(store, "p", 1)
    monkeypatch.setattr(JobQueue, "claim", _locked(2, JobQueue.claim))
    worker = make_worker(store, clock, {"p": python("record")})
    with structlog.testing.capture_logs() as logs:
        await worker.start()
        try:
            await asyncio.wait_for(_wait_for(lambda: bool(targets.STATE.calls)), timeout=10)
        finally:
            await worker.stop()
    assert event_names(logs, "worker_claim_failed", "worker_crashed") == [
        "worker_claim_failed",
        "worker_claim_failed",
    ]
    assert status_of(store, event_id) == ("succeeded", "succeeded", 1)


async def test_an_outcome_never_written_leaves_the_job_to_its_lease(
    store: SqliteStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store stays locked past half the lease: the worker gives up writing the outcome
    (job_settle_failed) rather than hold a slot for ever, and the job runs again once its lease
    runs out (at least once: the same idempotency key)."""
    event_id = await record(store, "p", 1)
    complete = JobQueue.complete
    monkeypatch.setattr(JobQueue, "complete", _locked(-1, complete))
    # Real time: a fake one moved by the worker's own sleeps would end the lease meanwhile.
    worker = make_worker(store, time.time, {"p": python("record")}, lease_s=2)
    with structlog.testing.capture_logs() as logs:
        await worker.start()
        try:
            settled = lambda: bool(event_names(logs, "job_settle_failed"))  # noqa: E731
            await asyncio.wait_for(_wait_for(settled), timeout=10)  # after half the lease
        finally:
            await worker.stop()
    assert event_names(logs, "job_settle_failed", "job_succeeded") == ["job_settle_failed"]
    assert status_of(store, event_id) == ("processing", "running", 1)  # for its lease to end
    monkeypatch.setattr(JobQueue, "complete", complete)  # the lock is gone
    await asyncio.sleep(2.1)  # past the lease
    worker = make_worker(store, time.time, {"p": python("record")}, lease_s=2)
    await worker.run(until_empty=True)
    assert status_of(store, event_id) == ("succeeded", "succeeded", 2)
    assert [call.key for call in targets.STATE.calls] == ["p:evt_1", "p:evt_1"]


async def test_a_release_at_shutdown_that_meets_a_lock_leaves_the_job_to_its_lease(
    store: SqliteStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    event_id = await record(store, "p", 1)
    monkeypatch.setattr(JobQueue, "release", _locked(-1, JobQueue.release))
    worker = make_worker(store, clock, {"p": python("block")}, shutdown_timeout_s=0.1)
    with structlog.testing.capture_logs() as logs:
        await worker.start()
        await asyncio.wait_for(targets.STATE.entered.wait(), timeout=10)
        await worker.stop()  # ends although the release could not be written
    assert event_names(logs, "job_release_failed") == ["job_release_failed"]
    assert status_of(store, event_id) == ("processing", "running", 1)


async def test_after_a_quick_restart_such_jobs_are_queued_again_once_their_lease_ran_out(
    store: SqliteStore, clock: FakeClock
) -> None:
    """A restart within the crashed run's lease (systemd, a container runtime) found the lease
    still live, and nothing looked again (later, one look after this worker's own lease_s,
    shorter than the crashed run's): the event stayed processing."""
    gone = await record(store, "gone", 1)
    await JobQueue(store.db).claim(caps={"gone": None}, limit=1, now=clock(), lease_s=30)
    worker = make_worker(store, clock, {"p": python("record")}, lease_s=0.2)
    await worker.start()
    try:
        await asyncio.sleep(1.5)  # past this worker's first look again (lease_s + 1 s)
        assert status_of(store, gone)[:2] == ("processing", "running")  # still leased
        clock.now += 60  # the crashed run's lease runs out
        await asyncio.wait_for(
            _wait_for(lambda: status_of(store, gone)[:2] == ("received", "queued")), timeout=5
        )
    finally:
        await worker.stop()


async def test_a_job_whose_event_was_deleted_by_hand_does_not_stop_the_worker(
    store: SqliteStore, clock: FakeClock
) -> None:
    """An operator deleted an event in the sqlite3 shell (foreign keys off there): its job
    stayed, and leasing it failed every claim, every provider's, for good ("the database
    refused the write" once a second)."""
    worker = make_worker(store, clock, {"p": python("record")})
    ids = [await record(store, "p", n) for n in range(3)]
    with closing(sqlite3.connect(store.db.path)) as conn, conn:
        conn.execute("DELETE FROM events WHERE id = ?", (ids[1],))
    with structlog.testing.capture_logs() as logs:
        async with asyncio.timeout(10):  # it never ended: every claim failed
            await worker.run(until_empty=True)
    assert sorted(call.id for call in targets.STATE.calls) == [ids[0], ids[2]]
    assert query(store, "SELECT count(*) FROM jobs WHERE event_id = ?", ids[1]) == [(0,)]
    assert event_names(logs, "orphan_jobs_removed") == ["orphan_jobs_removed"]
