"""Importable ``python`` handler targets for the worker tests
(``target: "tests.integration.handler_targets:NAME"``). State is module-level; ``reset()``
before each test."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from dataclasses import dataclass, field

from receiver import PermanentError
from receiver.handlers import HandlerEvent


@dataclass
class State:
    calls: list[HandlerEvent] = field(default_factory=list)
    threads: list[str] = field(default_factory=list)
    entered: asyncio.Event = field(default_factory=asyncio.Event)
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    running: Counter[str] = field(default_factory=Counter)
    starts: list[tuple[str, int]] = field(default_factory=list)
    overlaps: list[str] = field(default_factory=list)
    max_parallel: int = 0


STATE = State()
not_callable = 42


def reset() -> None:
    global STATE
    STATE = State()


async def record(event: HandlerEvent) -> None:
    STATE.calls.append(event)


def record_sync(event: HandlerEvent) -> None:
    STATE.calls.append(event)
    STATE.threads.append(threading.current_thread().name)


async def fail_twice(event: HandlerEvent) -> None:
    STATE.calls.append(event)
    if event.attempt <= 2:
        raise RuntimeError(f"not yet (attempt {event.attempt})")


async def choke_on_poison(event: HandlerEvent) -> None:
    STATE.calls.append(event)
    if isinstance(event.json, dict) and event.json.get("poison"):
        raise ValueError("cannot digest this one")


def refuse(event: HandlerEvent) -> None:
    STATE.calls.append(event)
    raise PermanentError("this order does not exist")


async def block(event: HandlerEvent) -> None:
    """Waits until the test opens the gate."""
    STATE.calls.append(event)
    STATE.entered.set()
    await STATE.gate.wait()


async def slow(event: HandlerEvent) -> None:
    STATE.calls.append(event)
    await asyncio.sleep(1.0)


async def overlapping(event: HandlerEvent) -> None:
    """Notes how many handler runs overlap at most."""
    STATE.running["all"] += 1
    STATE.max_parallel = max(STATE.max_parallel, STATE.running["all"])
    await asyncio.sleep(0.005)
    STATE.running["all"] -= 1
    STATE.calls.append(event)


async def ordered(event: HandlerEvent) -> None:
    """Notes start order per ``account`` and any overlap of the same account."""
    assert isinstance(event.json, dict)
    account, n = str(event.json["account"]), int(event.json["n"])
    if STATE.running[account]:
        STATE.overlaps.append(account)
    STATE.running[account] += 1
    STATE.starts.append((account, n))
    STATE.max_parallel = max(STATE.max_parallel, sum(STATE.running.values()))
    await asyncio.sleep(0.005 * (1 + n % 3))
    STATE.running[account] -= 1
