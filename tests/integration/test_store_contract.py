"""The store contract (:class:`receiver.store.base.Store`), run against every implementation.

Only the protocol's methods are used here, never SQL: SQLite is the one implementation today,
and a PostgreSQL store (several receivers behind a load balancer) would join
``IMPLEMENTATIONS`` and pass these same tests (DESIGN §5).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from receiver.errors import StorageUnavailable
from receiver.models import Accepted, Duplicate, NewEvent
from receiver.store.base import Store
from receiver.store.sqlite import SqliteStore

IMPLEMENTATIONS = [pytest.param(lambda tmp: SqliteStore(tmp / "receiver.db"), id="sqlite")]

MakeStore = Callable[[], Awaitable[Store]]


@pytest.fixture(params=IMPLEMENTATIONS)
async def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MakeStore]:
    """Opens a store on the same place each call (a restart is a second call)."""
    build: Callable[[Path], Store] = request.param
    opened: list[Store] = []

    async def make() -> Store:
        store = build(tmp_path)
        await store.open()
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.close()


def _event(event_id: str, body: bytes = b'{"n": 1}', *, has_handler: bool = True) -> NewEvent:
    return NewEvent(
        provider="shop",
        key=f"shop:{event_id}",
        provider_event_id=event_id,
        event_type="order.created",
        body=body,
        headers={"content-type": "application/json", "x-shop": "caf\u00e9"},
        content_type="application/json",
        fingerprint=hashlib.sha256(body).hexdigest(),
        received_at_s=1_700_000_000.0,
        payload_expires_at_s=1_700_086_400.0,
        dedupe_expires_at_s=1_700_604_800.0,
        has_handler=has_handler,
    )


async def test_a_new_event_is_accepted_and_reads_back_byte_exact(make_store: MakeStore) -> None:
    store = await make_store()
    body = b'{"n": 1, "note": "\xff\xfe not UTF-8 \r\n"}'
    outcome = await store.record(_event("e1", body))
    assert isinstance(outcome, Accepted)
    assert outcome.key == "shop:e1"
    stored = await store.get_event(outcome.id)
    assert stored is not None
    assert (stored.key, stored.provider_event_id, stored.event_type) == (
        "shop:e1",
        "e1",
        "order.created",
    )
    assert stored.body == body
    assert stored.headers == {"content-type": "application/json", "x-shop": "caf\u00e9"}
    assert stored.fingerprint == hashlib.sha256(body).hexdigest()
    assert stored.status == "queued"
    assert stored.duplicate_count == 0
    assert await store.get_event(outcome.id + 1000) is None


async def test_without_a_handler_the_event_is_stored_as_received(make_store: MakeStore) -> None:
    store = await make_store()
    outcome = await store.record(_event("quiet", has_handler=False))
    stored = await store.get_event(outcome.id)
    assert stored is not None and stored.status == "received"


async def test_a_redelivery_is_a_duplicate_of_the_original(make_store: MakeStore) -> None:
    store = await make_store()
    first = await store.record(_event("e1"))
    again = await store.record(_event("e1"))
    assert isinstance(again, Duplicate)
    assert (again.id, again.key, again.is_conflict) == (first.id, "shop:e1", False)
    stored = await store.get_event(first.id)
    assert stored is not None and stored.duplicate_count == 1


async def test_the_same_key_with_another_body_keeps_the_original(make_store: MakeStore) -> None:
    store = await make_store()
    first = await store.record(_event("e1", b'{"v": 1}'))
    other = await store.record(_event("e1", b'{"v": 2}'))
    assert isinstance(other, Duplicate) and other.is_conflict
    assert other.id == first.id
    stored = await store.get_event(first.id)
    assert stored is not None
    assert stored.body == b'{"v": 1}'
    assert stored.conflict_count == 1


async def test_simultaneous_copies_make_one_event_per_key(make_store: MakeStore) -> None:
    store = await make_store()
    events = [_event(f"k{n % 7}") for n in range(70)]
    outcomes = await asyncio.gather(*(store.record(ev) for ev in events))
    accepted = {o.key: o.id for o in outcomes if isinstance(o, Accepted)}
    assert sorted(accepted) == [f"shop:k{n}" for n in range(7)]
    for outcome in outcomes:
        assert outcome.id == accepted[outcome.key]  # every copy names the one event
    assert sum(isinstance(o, Duplicate) for o in outcomes) == 63


async def test_an_acknowledged_event_outlives_a_restart(make_store: MakeStore) -> None:
    before = await make_store()
    first = await before.record(_event("durable"))
    await before.close()
    after = await make_store()
    stored = await after.get_event(first.id)
    assert stored is not None and stored.key == "shop:durable"
    again = await after.record(_event("durable"))
    assert isinstance(again, Duplicate) and again.id == first.id


async def test_a_closed_store_refuses_with_storage_unavailable(make_store: MakeStore) -> None:
    store = await make_store()
    assert await store.unwritable_reason() is None
    await store.close()
    with pytest.raises(StorageUnavailable):
        await store.record(_event("late"))
