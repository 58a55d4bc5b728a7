"""The memory of committed keys answers only what the store would answer."""

from __future__ import annotations

import hashlib

from receiver.store.recent import RecentKeys

FP = hashlib.sha256(b"body").hexdigest()
OTHER = hashlib.sha256(b"another body").hexdigest()


def test_a_remembered_key_with_the_same_body_is_a_duplicate() -> None:
    recent = RecentKeys()
    recent.remember("p:1", 7, FP, dedupe_expires_at_s=100.0)
    answer = recent.duplicate("p:1", FP, now_s=50.0)
    assert answer is not None
    assert (answer.id, answer.key, answer.is_conflict) == (7, "p:1", False)


def test_unknown_key_or_another_body_goes_to_the_store() -> None:
    recent = RecentKeys()
    recent.remember("p:1", 7, FP, dedupe_expires_at_s=100.0)
    assert recent.duplicate("p:2", FP, now_s=50.0) is None
    assert recent.duplicate("p:1", OTHER, now_s=50.0) is None  # the store records the conflict


def test_nothing_is_answered_after_the_dedupe_window() -> None:
    recent = RecentKeys()
    recent.remember("p:1", 7, FP, dedupe_expires_at_s=100.0)
    assert recent.duplicate("p:1", FP, now_s=100.0) is None
    assert len(recent) == 0


def test_a_forgotten_event_is_no_longer_answered() -> None:
    recent = RecentKeys()
    recent.remember("p:1", 7, FP, dedupe_expires_at_s=100.0)
    recent.forget(7)
    assert recent.duplicate("p:1", FP, now_s=50.0) is None
    recent.forget(7)  # idempotent


def test_answers_are_counted_for_the_next_commit() -> None:
    recent = RecentKeys()
    recent.remember("p:1", 7, FP, dedupe_expires_at_s=100.0)
    for now in (10.0, 20.0, 30.0):
        assert recent.duplicate("p:1", FP, now_s=now) is not None
    assert recent.has_touches
    assert recent.take_touches() == [(3, 30.0, 7)]
    assert not recent.has_touches


def test_the_memory_is_bounded_oldest_first() -> None:
    recent = RecentKeys(max_keys=3)
    for i in range(5):
        recent.remember(f"p:{i}", i, FP, dedupe_expires_at_s=100.0)
    assert len(recent) == 3
    assert recent.duplicate("p:0", FP, now_s=1.0) is None
    assert recent.duplicate("p:4", FP, now_s=1.0) is not None
    recent.forget(1)  # an id evicted earlier: nothing to do
    assert len(recent) == 3


def test_a_full_memory_adds_nothing_for_the_garbage_collector_to_walk() -> None:
    """Full collections pause the event loop for as long as they walk tracked objects: a memory
    of 100,000 keys must not be 100,000 more of them."""
    import gc

    recent = RecentKeys(max_keys=20_000)
    gc.collect()
    before = len(gc.get_objects())
    for n in range(20_000):
        recent.remember(f"p:{n}", n, FP, dedupe_expires_at_s=100.0)
    gc.collect()
    assert len(gc.get_objects()) - before < 100
    assert recent.duplicate("p:19999", FP, now_s=50.0) is not None
