"""The three handler kinds: ``http``, ``python`` and ``command``.

A handler takes a :class:`HandlerEvent` and answers with an :class:`Outcome`; it never raises
for a failed delivery (only cancellation propagates). Error texts are short summaries: never
the event body, never a configured header value, never a URL's credentials.

- ``http`` POSTs the original body bytes with the original content type, plus
  ``Idempotency-Key`` (the event's dedupe key: the same on every attempt and replay),
  ``Receiver-Event-Id``, ``Receiver-Attempt``, ``Receiver-Provider``, ``Receiver-Replay``,
  ``Receiver-Event-Type`` and the configured headers. 2xx is success. One shared
  ``ClientSession`` reuses connections and keeps no cookies; at most 1 MiB of an answer is
  read.
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

from receiver.handlers.base import Handler, HandlerEvent, Outcome, parse_json, summarize
from receiver.handlers.call import PythonTarget, check_target, load_target
from receiver.handlers.command import CommandTarget, check_executable
from receiver.handlers.forward import HttpClient, HttpTarget, check_url
from receiver.settings import CommandHandler, HttpHandler, PythonHandler

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


def check_handler(settings: HandlerSettings) -> list[str]:
    """Plain-words problems with a handler; an empty list means it can run.

    ``http``: the URL; ``python``: the target; ``command``: ``argv[0]``.
    """
    if isinstance(settings, HttpHandler):
        return check_url(settings.url)
    if isinstance(settings, PythonHandler):
        return check_target(settings.target)
    return check_executable(settings.argv[0])
