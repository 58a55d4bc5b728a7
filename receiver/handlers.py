"""The three handler kinds: ``http``, ``python`` and ``command``.

A handler takes a :class:`HandlerEvent` and answers with an :class:`Outcome`; it never raises
for a failed delivery (only cancellation propagates). Error texts are short summaries: never
the event body, never a configured header value, never a URL's credentials.

- ``http`` POSTs the original body bytes with the original content type, plus
  ``Idempotency-Key`` (the event's dedupe key: the same on every attempt and replay),
  ``Receiver-Event-Id``, ``Receiver-Attempt``, ``Receiver-Provider``, ``Receiver-Replay``,
  ``Receiver-Event-Type`` and the configured headers. 2xx is success. One shared
  ``ClientSession`` reuses connections; at most 1 MiB of an answer is read.
- ``python`` calls ``target`` (``pkg.mod:func``), sync on a thread of its own or async;
  returning is success, raising (``SystemExit`` too) is failure, raising
  :class:`~receiver.errors.PermanentError` is "do not retry". At its timeout the call is given
  up on: cancelled, but not waited for.
- ``command`` runs ``argv`` (no shell) in its own session with the body on stdin; exit 0 is
  success. On timeout or cancellation the whole process group is killed.
"""

from __future__ import annotations

__all__ = [
    "Handler",
    "HandlerEvent",
    "HttpClient",
    "Outcome",
    "build_handler",
    "check_handler",
    "load_target",
    "parse_json",
    "summarize",
]

import asyncio
import contextlib
import functools
import importlib
import inspect
import json
import os
import re
import shutil
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

import aiohttp

from receiver.config import CommandHandler, HttpHandler, PythonHandler
from receiver.errors import PermanentError

_ERROR_CHARS = 300


@dataclass(frozen=True, kw_only=True)
class HandlerEvent:
    """What a handler receives: one stored event and the attempt it is on."""

    id: int
    key: str  # the dedupe key: use it as your idempotency key
    provider: str
    type: str | None
    headers: Mapping[str, str]
    body: bytes
    content_type: str | None
    attempt: int
    is_replay: bool

    @functools.cached_property
    def json(self) -> object | None:
        """The body parsed as JSON (on first use: an ``http`` or ``command`` handler never
        pays for it), or None when it is not JSON."""
        return parse_json(self.body)


def parse_json(body: bytes) -> object | None:
    try:
        value: object = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """How one handler run ended."""

    is_success: bool
    error: str | None = None
    is_permanent: bool = False
    http_status: int | None = None
    retry_after: str | None = None
    exit_code: int | None = None
    # A run given up on at its timeout that has not ended: a thread cannot be stopped, and
    # async code may ignore its cancellation. The event is not run again before it ends.
    still_running: asyncio.Future[object] | None = None


SUCCESS = Outcome(is_success=True)


def summarize(exc: BaseException) -> str:
    """``Type: message``, cut short. Exception texts from our handlers carry no payload."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    summary = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return summary[:_ERROR_CHARS]


class Handler(Protocol):
    async def run(self, event: HandlerEvent) -> Outcome: ...


class HttpClient:
    """The one ``aiohttp.ClientSession`` every ``http`` handler shares, opened lazily."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                # No pool limit of its own: the worker's concurrency already bounds requests.
                connector=aiohttp.TCPConnector(limit=0),
                auto_decompress=False,
            )
        return self._session

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()


# The most of a downstream's answer that is read (and dropped) to keep its connection for
# reuse; a longer answer closes the connection instead of filling memory.
_DRAIN_BYTES = 1024 * 1024


async def _drain(response: aiohttp.ClientResponse) -> None:
    """Read (and drop) at most ``_DRAIN_BYTES`` of the answer; a longer one, or one that
    breaks off or runs past the timeout, is dropped with its connection."""
    left = _DRAIN_BYTES
    try:
        while left > 0:
            chunk = await response.content.readany()
            if not chunk:
                return
            left -= len(chunk)
    except (aiohttp.ClientError, TimeoutError):
        pass
    response.close()


_URL = re.compile(r"""(?i)https?://[^\s'"<>]+""")


def _shown_url(match: re.Match[str]) -> str:
    """A URL found in an error text, as it may be shown (see :func:`_shown_location`)."""
    return _shown_location(match.group(0))


def _shown_location(url: str) -> str:
    """A URL as error texts may show it, absolute or relative (a redirect's ``Location``): no
    credentials, no query string or fragment (which often carry a token)."""
    try:
        parts = urlsplit(url)
        host = parts.netloc.rpartition("@")[2]
    except ValueError:
        return "<url>"
    origin = f"{parts.scheme}://{host}" if parts.scheme else f"//{host}" if parts.netloc else ""
    return origin + parts.path


class HttpTarget:
    def __init__(self, settings: HttpHandler, client: HttpClient) -> None:
        self._settings = settings
        self._client = client
        self._timeout = aiohttp.ClientTimeout(total=settings.timeout_s)

    def _headers(self, event: HandlerEvent) -> dict[str, str]:
        headers = dict(self._settings.headers)
        headers.update(
            {
                "Content-Type": event.content_type or "application/octet-stream",
                "Idempotency-Key": event.key,
                "Receiver-Event-Id": str(event.id),
                "Receiver-Attempt": str(event.attempt),
                "Receiver-Provider": event.provider,
                "Receiver-Replay": "true" if event.is_replay else "false",
            }
        )
        if event.type is not None:
            headers["Receiver-Event-Type"] = event.type
        # The body is forwarded as it came: compressed bytes need their coding named with them.
        encoding = event.headers.get("content-encoding")
        if encoding:
            headers["Content-Encoding"] = encoding
        return headers

    async def run(self, event: HandlerEvent) -> Outcome:
        try:
            async with self._client.session().post(
                self._settings.url,
                data=event.body,
                headers=self._headers(event),
                timeout=self._timeout,
                allow_redirects=False,
            ) as response:
                # The status is the answer; the body is only read to reuse the connection, and
                # one that comes slowly or breaks off does not undo a 2xx.
                status = response.status
                await _drain(response)
                if 200 <= status < 300:
                    return Outcome(is_success=True, http_status=status)
                error = f"HTTP {status} {response.reason or ''}".strip()
                location = response.headers.get("Location")
                if 300 <= status < 400 and location:  # redirects are not followed: say where
                    error += " to " + _shown_location(location)
                return Outcome(
                    is_success=False,
                    error=error[:_ERROR_CHARS],
                    http_status=status,
                    retry_after=response.headers.get("Retry-After"),
                )
        except TimeoutError:
            return Outcome(is_success=False, error=f"timed out after {self._settings.timeout_s:g}s")
        except aiohttp.ClientError as exc:
            error = _URL.sub(_shown_url, summarize(exc))
            return Outcome(is_success=False, error=error)


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
    """User code raised ``SystemExit`` or ``KeyboardInterrupt``: inside an asyncio task those
    would stop the whole event loop, so they travel as an ordinary failure instead. So does a
    ``CancelledError`` of its own, which the worker would take for a shutdown."""


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
        except (SystemExit, KeyboardInterrupt) as exc:
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
            return Outcome(is_success=False, error=summarize(exc))
        return SUCCESS


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


async def _feed_and_wait(proc: asyncio.subprocess.Process, body: bytes) -> None:
    """The body on stdin, then the exit. A command may exit (or close stdin) before reading it
    all: that is for its exit code to judge, not a failure of ours (uvloop reports a write to
    the closed pipe as ``RuntimeError``, asyncio as ``BrokenPipeError``)."""
    stdin = proc.stdin
    if stdin is not None:  # always: it is started with stdin=PIPE
        try:
            stdin.write(body)
            await stdin.drain()
            stdin.close()
        except (BrokenPipeError, ConnectionResetError, RuntimeError):
            pass
    await proc.wait()


class CommandTarget:
    def __init__(
        self, settings: CommandHandler, *, withheld_env: frozenset[str] = frozenset()
    ) -> None:
        self._settings = settings
        self._withheld_env = withheld_env

    def _env(self, event: HandlerEvent) -> dict[str, str]:
        return {
            **{k: v for k, v in os.environ.items() if k not in self._withheld_env},
            "RECEIVER_EVENT_ID": str(event.id),
            "RECEIVER_KEY": event.key,
            "RECEIVER_ATTEMPT": str(event.attempt),
            "RECEIVER_PROVIDER": event.provider,
            "RECEIVER_EVENT_TYPE": event.type or "",
            "RECEIVER_IS_REPLAY": "1" if event.is_replay else "0",
        }

    async def run(self, event: HandlerEvent) -> Outcome:
        s = self._settings
        try:
            proc = await asyncio.create_subprocess_exec(
                *s.argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL,  # stdout is for our JSON log lines
                stderr=None,  # the command's own messages go where ours go
                env=self._env(event),
                start_new_session=True,  # its own process group, so a timeout kills it all
            )
        except OSError as exc:
            return Outcome(is_success=False, error=f"cannot start {s.argv[0]}: {exc.strerror}")
        try:
            async with asyncio.timeout(s.timeout_s):
                await _feed_and_wait(proc, event.body)
        except TimeoutError:
            _kill_group(proc)
            await proc.wait()
            return Outcome(is_success=False, error=f"timed out after {s.timeout_s:g}s")
        finally:
            if proc.returncode is None:  # cancelled (shutdown): leave nothing running
                _kill_group(proc)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
        code = proc.returncode
        if code == 0:
            return Outcome(is_success=True, exit_code=0)
        if code is not None and code < 0:
            name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
            return Outcome(is_success=False, error=f"killed by {name}", exit_code=code)
        return Outcome(
            is_success=False,
            error=f"exit code {code}",
            exit_code=code,
            is_permanent=code in s.permanent_exit_codes,
        )


HandlerSettings = HttpHandler | PythonHandler | CommandHandler


def build_handler(
    settings: HandlerSettings, client: HttpClient, *, withheld_env: frozenset[str] = frozenset()
) -> Handler:
    """``withheld_env``: variables a command must not inherit (the webhook secrets)."""
    if isinstance(settings, HttpHandler):
        return HttpTarget(settings, client)
    if isinstance(settings, PythonHandler):
        return PythonTarget(settings)
    return CommandTarget(settings, withheld_env=withheld_env)


def _check_executable(program: str) -> str | None:
    if os.sep in program or (os.altsep and os.altsep in program):
        if not os.path.isfile(program):
            return f"executable {program} does not exist"
        if not os.access(program, os.X_OK):
            return f"{program} is not executable (chmod +x?)"
        return None
    if shutil.which(program) is None:
        return f"executable {program} is not found on PATH"
    return None


def check_handler(settings: HandlerSettings) -> list[str]:
    """Plain-words problems with a handler; an empty list means it can run.

    ``http``: the URL; ``python``: the target; ``command``: ``argv[0]``.
    """
    if isinstance(settings, HttpHandler):
        try:
            parts = urlsplit(settings.url)
            parts.port  # noqa: B018 - parsed on access: a port out of range raises here
        except ValueError as exc:
            return [f"is not a valid URL: {exc}"]
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return ["must be an http:// or https:// URL with a host"]
        return []
    if isinstance(settings, PythonHandler):
        try:
            load_target(settings.target)
        except ImportError as exc:
            return [f"cannot import {settings.target}: {exc}"]
        except AttributeError:
            module, _, name = settings.target.partition(":")
            return [f"module {module} has no attribute {name}"]
        except TypeError as exc:
            return [str(exc)]
        except Exception as exc:  # importing user code may fail in any way; report, not crash
            return [f"importing {settings.target} failed: {summarize(exc)}"]
        return []
    problem = _check_executable(settings.argv[0])
    return [problem] if problem else []
