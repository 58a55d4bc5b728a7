"""The ``python`` handler: call ``pkg.mod:func`` in this process, sync on a thread or async."""

from __future__ import annotations

__all__ = ["PythonTarget", "check_target", "load_target"]

import asyncio
import contextlib
import importlib
import inspect
import os
import sys
import threading
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path

import structlog

from receiver.errors import PermanentError
from receiver.handlers.base import SUCCESS, HandlerEvent, Outcome, summarize
from receiver.settings import PythonHandler

log = structlog.get_logger("receiver.handler")


def load_target(target: str) -> Callable[..., object]:
    """Import ``pkg.mod:func``. Raises ImportError/AttributeError/TypeError in plain words."""
    # Like uvicorn and gunicorn: modules next to the config's working directory are importable
    # even when receiver runs as a console script (whose sys.path[0] is its bin directory).
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.append(cwd)
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    fn = getattr(module, attr)
    if not callable(fn):
        raise TypeError(f"{target} is not callable")
    return fn  # type: ignore[no-any-return]  # a user's callable: its type is unknowable


class _Exited(Exception):
    """User code raised what cannot travel as itself, so it travels as an ordinary failure:
    ``SystemExit`` or ``KeyboardInterrupt`` (inside an asyncio task those would stop the whole
    event loop), any other ``BaseException`` (``GeneratorExit``, a class of the user's: it would
    end the worker's task, and the job would wait out its lease as if it hung), a
    ``StopIteration`` from a thread (a future refuses it, and the run would never end), or a
    ``CancelledError`` of its own (the worker would take it for a shutdown)."""


class _TimedOut(Exception):
    """The handler's ``timeout_s`` passed (a ``TimeoutError`` of the user's own code is a
    failure like any other, with its own words)."""

    def __init__(self, work: asyncio.Future[object]) -> None:
        super().__init__("timed out")
        self.work = work


def _is_async_callable(fn: object) -> bool:
    if inspect.iscoroutinefunction(fn):
        return True
    call = inspect.getattr_static(type(fn), "__call__", None)  # ``async def __call__``
    return inspect.iscoroutinefunction(call)


def _in_daemon_thread(fn: Callable[..., object], *args: object) -> asyncio.Future[object]:
    """``fn(*args)`` on a thread of its own. Daemon, and not from a pool: a call that never
    returns must neither take a pooled thread from the next handler nor hold the process at
    exit. Its result is delivered to the loop unless the future was given up on."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[object] = loop.create_future()

    def deliver(result: object, error: BaseException | None) -> None:
        if future.done():  # timed out or cancelled meanwhile: nobody waits for it
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def target() -> None:
        result: object = None
        error: BaseException | None = None
        try:
            result = fn(*args)
        except StopIteration as exc:  # ``next()`` on an empty iterator: a future refuses it
            error = _Exited(summarize(exc))
        except BaseException as exc:  # raised in the awaiting coroutine (SystemExit too)
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop has closed since
            loop.call_soon_threadsafe(deliver, result, error)

    threading.Thread(target=target, name="receiver-handler", daemon=True).start()
    return future


async def _thread_result(future: asyncio.Future[object]) -> object:
    """A thread's result. Cancelled (a timeout, a shutdown), this ends only when the thread
    does, as a run of async code that ignores cancellation would: the run is not over while
    its thread still runs (a second cancellation, at shutdown, leaves it behind)."""
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        await asyncio.wait({future})
        raise


# Work given up on at its timeout: kept referenced until it ends, if it ever does.
_OVERRUNNING: set[asyncio.Future[object]] = set()


def _give_up(task: asyncio.Future[object]) -> None:
    task.cancel()
    _OVERRUNNING.add(task)
    task.add_done_callback(_OVERRUNNING.discard)


async def _within(work: Awaitable[object], timeout_s: float) -> object:
    """``work``'s result within ``timeout_s``. At the timeout, or when the caller is cancelled,
    ``work`` is cancelled but not waited for: user code that ignores cancellation (or a thread,
    which cannot be stopped) must not hold a worker slot, a lease or the shutdown."""
    task = asyncio.ensure_future(work)
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout_s)
    except asyncio.CancelledError:
        _give_up(task)  # a thread's run ends only with the thread
        raise
    if not done:
        _give_up(task)
        raise _TimedOut(task)
    if task.cancelled():  # by the user's own code (an awaited task someone else cancelled)
        raise _Exited("CancelledError: the handler's own code was cancelled")
    return task.result()


class PythonTarget:
    def __init__(self, settings: PythonHandler) -> None:
        self._settings = settings
        self._fn = load_target(settings.target)
        self._is_async = _is_async_callable(self._fn)

    async def _call(self, event: HandlerEvent) -> None:
        try:
            if self._is_async:
                result = self._fn(event)
            else:
                result = await _thread_result(_in_daemon_thread(self._fn, event))
            if inspect.isawaitable(result):  # a sync wrapper (a decorator) around async code
                await result
        except (Exception, asyncio.CancelledError):
            raise  # a failure as itself; a cancellation is the worker's (a timeout, a stop)
        except BaseException as exc:
            raise _Exited(summarize(exc)) from None

    async def run(self, event: HandlerEvent) -> Outcome:
        try:
            await _within(self._call(event), self._settings.timeout_s)
        except _TimedOut as exc:
            return Outcome(
                is_success=False,
                error=f"timed out after {self._settings.timeout_s:g}s",
                still_running=exc.work,
            )
        except PermanentError as exc:
            return Outcome(is_success=False, error=summarize(exc), is_permanent=True)
        except _Exited as exc:
            return Outcome(is_success=False, error=str(exc))
        except Exception as exc:  # any failure of user code is an attempt's outcome
            _log_traceback(event, exc)
            return Outcome(is_success=False, error=f"{summarize(exc)}{_where(exc)}")
        return SUCCESS


def _where(exc: BaseException) -> str:
    """Where it was raised, for the attempt's error: `` (at buggy.py:3 in handle)``."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return ""
    frame = frames[-1]
    return f" (at {Path(frame.filename).name}:{frame.lineno} in {frame.name})"


def _log_traceback(event: HandlerEvent, exc: Exception) -> None:
    """The whole traceback, once per failed attempt: the attempt keeps one line, and a
    developer needs the frames (source lines only: no values, which could hold the payload)."""
    log.warning(
        "handler_raised",
        event_id=event.id,
        key=event.key,
        provider=event.provider,
        attempt=event.attempt,
        is_replay=event.is_replay,
        error=summarize(exc),
        exc_info=exc,
    )


def check_target(target: str) -> list[str]:
    """Problems with importing a ``python`` handler's target."""
    try:
        load_target(target)
    except ImportError as exc:
        return [f"cannot import {target}: {exc}"]
    except AttributeError:
        module, _, name = target.partition(":")
        return [f"module {module} has no attribute {name}"]
    except TypeError as exc:
        return [str(exc)]
    except Exception as exc:  # importing user code may fail in any way; report, not crash
        return [f"importing {target} failed: {summarize(exc)}"]
    return []
