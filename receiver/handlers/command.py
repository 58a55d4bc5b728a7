"""The ``command`` handler: run ``argv`` with the body on stdin, in a process group of its own."""

from __future__ import annotations

__all__ = ["CommandTarget", "check_executable"]

import asyncio
import contextlib
import os
import shutil
import signal

from receiver.handlers.base import HandlerEvent, Outcome
from receiver.settings import CommandHandler


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


# How often a command's exit is looked for while its stdin is full and unread.
_EXIT_POLL_S = 0.05


async def _feed(stdin: asyncio.StreamWriter, body: bytes) -> None:
    """The body on stdin, then its end. A command may exit (or close stdin) before reading it
    all: that is for its exit code to judge, not a failure of ours (uvloop reports a write to
    the closed pipe as ``RuntimeError``, asyncio as ``BrokenPipeError``)."""
    try:
        stdin.write(body)
        await stdin.drain()
        stdin.close()
    except (BrokenPipeError, ConnectionResetError, RuntimeError):
        pass


async def _feed_and_wait(proc: asyncio.subprocess.Process, body: bytes) -> None:
    """Feed the body until it is written or the command has exited, whichever comes first,
    then wait for the exit, which decides. A child the command left behind may hold stdin open
    without reading it: a body larger than the pipe then never finished writing, and the
    command's exit 0 was taken for a timeout (and run again). The exit is polled while a write
    is blocked: asyncio's ``wait()`` itself waits for the pipe to close."""
    stdin = proc.stdin
    if stdin is not None:  # always: it is started with stdin=PIPE
        feeding = asyncio.ensure_future(_feed(stdin, body))
        try:
            while not feeding.done() and proc.returncode is None:
                await asyncio.wait({feeding}, timeout=_EXIT_POLL_S)
        finally:
            if not feeding.done():
                feeding.cancel()
                if not stdin.transport.is_closing():  # asyncio's abort() closes twice
                    stdin.transport.abort()  # drop what is unread; close() would wait to flush
            await asyncio.wait({feeding})
    await proc.wait()


def _env_value(value: str | None) -> str:
    """A stored header as an environment variable can hold it (no NUL, no control bytes)."""
    if not value:
        return ""
    return "".join(c if c >= " " and c != "\x7f" else " " for c in value)


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
            # How to read the bytes on stdin (JSON or a form; compressed or not), as the
            # http handler's Content-Type and Content-Encoding say it.
            "RECEIVER_CONTENT_TYPE": _env_value(event.content_type),
            "RECEIVER_CONTENT_ENCODING": _env_value(event.headers.get("content-encoding")),
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


def check_executable(program: str) -> list[str]:
    """Problems with a ``command`` handler's program (``argv[0]``)."""
    if os.sep in program or (os.altsep and os.altsep in program):
        if not os.path.isfile(program):
            return [f"executable {program} does not exist"]
        if not os.access(program, os.X_OK):
            return [f"{program} is not executable (chmod +x?)"]
        return []
    if shutil.which(program) is None:
        return [f"executable {program} is not found on PATH"]
    return []
