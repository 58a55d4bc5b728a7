"""Importable ``python`` handler targets for the worker tests
(``target: "tests.integration.handler_targets:NAME"``). State is module-level; ``reset()``
before each test."""

from __future__ import annotations

import asyncio
import sys
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
    # Holds hung sync handlers' threads; set on reset() so none outlives its test for long.
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)


STATE = State()
not_callable = 42


def reset() -> None:
    global STATE
    STATE.release.set()
    STATE = State()


async def record(event: HandlerEvent) -> None:
    STATE.calls.append(event)


def record_sync(event: HandlerEvent) -> None:
    STATE.calls.append(event)
    STATE.threads.append(threading.current_thread().name)


async def prints(event: HandlerEvent) -> None:
    """What a developer writes first: a print, in pieces and whole."""
    print("handled", event.key, end="", flush=True)
    print(" (async)")


def prints_sync(event: HandlerEvent) -> None:
    print(f"handled {event.key} (in a thread)")


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


def exits(event: HandlerEvent) -> None:
    """A library deep inside a handler calls sys.exit()."""
    STATE.calls.append(event)
    sys.exit(3)


async def exits_async(event: HandlerEvent) -> None:
    STATE.calls.append(event)
    raise SystemExit(4)


def next_of_nothing(event: HandlerEvent) -> None:
    """``next()`` on an empty iterator: a StopIteration out of a thread."""
    STATE.calls.append(event)
    next(iter([]))


class Unusual(BaseException):
    """Not an Exception: a library's own signal of some kind."""


def raises_unusual(event: HandlerEvent) -> None:
    STATE.calls.append(event)
    raise Unusual("x")


async def raises_unusual_async(event: HandlerEvent) -> None:
    STATE.calls.append(event)
    raise GeneratorExit("y")


class AsyncCallable:
    """An object whose ``__call__`` is ``async def``: a coroutine function only by its method."""

    async def __call__(self, event: HandlerEvent) -> None:
        STATE.calls.append(event)
        raise RuntimeError("ran, and failed")


async_callable = AsyncCallable()


def returns_coroutine(event: HandlerEvent) -> object:
    """A sync wrapper (as a decorator makes) around async code: its coroutine must be run."""
    return record(event)


def hang_sync(event: HandlerEvent) -> None:
    """Blocks its thread (a socket read without a timeout) until the test is over."""
    STATE.calls.append(event)
    STATE.release.wait(30)


async def deaf(event: HandlerEvent) -> None:
    """Swallows cancellation, as ``except BaseException`` around an await does (for 2 s)."""
    STATE.calls.append(event)
    for _ in range(4):
        try:
            await asyncio.sleep(0.5)
        except asyncio.CancelledError:
            continue


async def deaf_forever(event: HandlerEvent) -> None:
    """Swallows every cancellation (for 30 s, so a test process is never held for good)."""
    STATE.calls.append(event)
    deadline = asyncio.get_running_loop().time() + 30
    while asyncio.get_running_loop().time() < deadline:
        try:
            await asyncio.sleep(0.1)
        except asyncio.CancelledError:
            continue


async def cancelled_by_its_own_code(event: HandlerEvent) -> None:
    """Awaits a task something else cancelled: the CancelledError is the handler's own."""
    STATE.calls.append(event)
    task = asyncio.ensure_future(asyncio.sleep(10))
    task.cancel()
    await task


async def own_timeout(event: HandlerEvent) -> None:
    """Its own ``asyncio.timeout`` fires, long before the handler's ``timeout_s``."""
    STATE.calls.append(event)
    async with asyncio.timeout(0.01):
        await asyncio.sleep(1)


def overrun_sync(event: HandlerEvent) -> None:
    """Runs past its timeout (0.6 s) on a thread that cannot be stopped; notes any overlap."""
    STATE.calls.append(event)
    with STATE.lock:
        STATE.running[event.key] += 1
        STATE.max_parallel = max(STATE.max_parallel, STATE.running[event.key])
    STATE.release.wait(0.6)
    with STATE.lock:
        STATE.running[event.key] -= 1
