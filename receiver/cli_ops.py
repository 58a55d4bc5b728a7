"""Operations commands: ``events list|show``, ``replay``, ``purge``.

They open the configured database directly (WAL lets them run beside ``receiver serve``) and use
the same store components as the admin API. Tables for people; ``--json`` for scripts, in the
admin API's shapes. A bad filter value exits 2 naming the flag.
"""

from __future__ import annotations

__all__ = ["EXIT_OK", "Command", "add_parsers", "load_ops_config", "register", "storage_path"]

import argparse
import asyncio
import json
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import structlog

from receiver.config import Config, config_path, load_config
from receiver.errors import ReceiverError
from receiver.store.filters import (
    Cursor,
    EventFilter,
    InvalidParameter,
    decode_cursor,
    parse_event_filter,
    parse_limit,
)
from receiver.store.replay import REPLAY_DEFAULT, REPLAY_MAX, ReplayReport
from receiver.store.sqlite import SqliteStore
from receiver.text import printable

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
CLI_ACTOR = "cli"

T = TypeVar("T")
Command = Callable[[argparse.Namespace], int]
_FILTER_FLAGS = ("provider", "status", "type", "key", "since", "until", "q")


def load_ops_config(args: argparse.Namespace) -> Config:
    """The config without any provider resolved: these commands read and write the store only,
    so they run where the webhook secrets are not set (an operator's shell)."""
    return load_config(config_path(args.config), only=())


@contextmanager
def _quiet_logs() -> Iterator[None]:
    """Warnings only, on stderr, while a command runs: stdout is for its output (and --json)."""
    saved = structlog.get_config()
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
    )
    try:
        yield
    finally:
        structlog.configure(**saved)


def storage_path(config: Config) -> Path:
    """The configured database, which must exist (opening it would create an empty one)."""
    path = config.settings.storage.path
    if not path.exists():
        raise ReceiverError(
            f"no database at {path}: check storage.path in {config.path}"
            " (receiver serve creates the database on its first start)"
        )
    return path


def _with_store(config: Config, work: Callable[[SqliteStore], Awaitable[T]]) -> T:
    storage = config.settings.storage
    path = storage_path(config)

    async def run() -> T:
        store = SqliteStore(
            path,
            busy_timeout_s=storage.busy_timeout_s,
            synchronous=storage.synchronous,
            retry_after_s=storage.retry_after_s,
            handled_providers=config.handled_providers,
            # No windows: the server, which writes events with them, is the one that moves the
            # stored expiries when they change (a one-off purge with an edited file beside a
            # server on the old one would leave its events on windows it never chose).
            retention_policies=None,
        )
        await store.open(serving=False)
        try:
            return await work(store)
        finally:
            await store.close()

    with _quiet_logs():
        return asyncio.run(run())


def _filter(args: argparse.Namespace) -> tuple[EventFilter, Cursor, float]:
    """The filters, the ``--cursor`` to continue from, and the clock relative times use (the
    first run's, carried in the cursor)."""
    cursor = decode_cursor("e", args.cursor)
    now = cursor.clock(time.time)
    values = {name: getattr(args, name) for name in _FILTER_FLAGS}
    return parse_event_filter(values, now_s=now), cursor, now


def _event_id(value: str) -> int:
    """An event id argument: digits, within SQLite's integers (a 30-digit id is a usage error,
    not an overflow inside the store)."""
    if not (value.isascii() and value.isdigit()) or len(value) > 18:
        raise argparse.ArgumentTypeError(f"{value!r} is not an event id")
    return int(value)


def _usage_error(exc: InvalidParameter) -> int:
    flag = exc.parameter.replace("_", "-")
    print(f"error: --{flag}: {exc.detail.split(': ', 1)[-1]}", file=sys.stderr)
    return EXIT_USAGE


def _print_json(data: object) -> None:
    # ASCII: every other character as a \u escape, so the output is valid JSON whatever the
    # terminal's encoding, and a sender's C1 or bidirectional control reaches no terminal raw.
    print(json.dumps(data, indent=2, ensure_ascii=True))


def _shown(value: object) -> str:
    """A stored value as the terminal may show it: keys, types, headers and bodies are the
    senders' text, and an escape sequence in them must not clear the screen or forge a line."""
    return printable(str(value))


def _table(rows: Sequence[Sequence[object]], headers: Sequence[str]) -> str:
    cells = [[str(h) for h in headers]] + [
        ["-" if v is None else _shown(v) for v in r] for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)


def _events_list(args: argparse.Namespace) -> int:
    try:
        flt, cursor, now = _filter(args)
        limit = parse_limit(args.limit, default=50, maximum=10_000)
    except InvalidParameter as exc:
        return _usage_error(exc)
    page = _with_store(
        load_ops_config(args),
        lambda store: store.queries.list_events(
            flt, before_id=cursor.before_id, limit=limit, now_s=now
        ),
    )
    events = [e.as_json() for e in page.items]
    if args.json:
        _print_json({"events": events, "next_cursor": page.next_cursor})
        return EXIT_OK
    if not events:
        print("no events match")
        return EXIT_OK
    print(
        _table(
            [
                (
                    e["id"],
                    e["received_at"],
                    e["provider"],
                    e["status"],
                    e["type"],
                    e["key"],
                    e["duplicate_count"],
                )
                for e in events
            ],
            ("ID", "RECEIVED", "PROVIDER", "STATUS", "TYPE", "KEY", "DUPS"),
        )
    )
    if page.next_cursor:
        print(f"(more match: continue with --cursor {page.next_cursor}, or narrow the filters)")
    return EXIT_OK


def _print_detail(data: Mapping[str, object]) -> None:
    fields = (
        *("id", "provider", "key", "type", "status", "received_at", "last_seen_at"),
        *("duplicate_count", "conflict_count", "fingerprint", "content_type", "remote_addr"),
        *("payload_expires_at", "dedupe_expires_at", "payload_purged_at"),
    )
    for name in fields:
        print(f"{name + ':':<20} {'-' if data.get(name) is None else _shown(data[name])}")
    job = data.get("job")
    if isinstance(job, dict):
        print(f"{'job:':<20} {job['status']} attempts={job['attempts']} replay={job['is_replay']}")
    headers = data.get("headers")
    if isinstance(headers, dict):
        print("headers:")
        for name, value in headers.items():
            print(f"  {_shown(name)}: {_shown(value)}")
    for section in ("attempts", "conflicts", "requeues"):
        items = data.get(section)
        if isinstance(items, list) and items:
            print(f"{section}:")
            for item in items:
                print("  " + " ".join(f"{k}={_shown(v)}" for k, v in item.items() if v is not None))
    body, encoding = data.get("body"), data.get("encoding")
    if body is None:
        print("body: (purged)" if data.get("payload_purged_at") else "body: -")
    else:
        print(f"body ({data.get('body_bytes')} bytes, {encoding}):")
        print(printable(str(body), keep_layout=True))


def _events_show(args: argparse.Namespace) -> int:
    detail = _with_store(load_ops_config(args), lambda store: store.queries.get_detail(args.id))
    if detail is None:
        print(f"error: no event with id {args.id}", file=sys.stderr)
        return EXIT_FAILURE
    data = detail.as_json()
    if args.json:
        _print_json(data)
    else:
        _print_detail(data)
    return EXIT_OK


def _events(args: argparse.Namespace) -> int:
    return _events_show(args) if args.events_command == "show" else _events_list(args)


def _print_replay(report: ReplayReport, *, as_json: bool) -> None:
    data = report.as_json()
    if as_json:
        _print_json(data)
        return
    verb = "would replay" if report.dry_run else "replayed"
    print(f"matched {report.matched}, {verb} {report.replayed}")
    for cause, count in sorted(report.skipped.items()):
        print(f"  skipped {count}: {cause.replace('_', ' ')}")
    if report.sample:
        print("  ids: " + " ".join(str(i) for i in report.sample))
    if report.next_cursor:
        print(f"  more events match: continue with --cursor {report.next_cursor}")


def _replay(args: argparse.Namespace) -> int:
    reason = None if args.reason is None else args.reason.strip()
    if reason == "":
        print("error: --reason is empty: leave it out, or say why you replay", file=sys.stderr)
        return EXIT_USAGE
    try:
        flt, cursor, now = _filter(args)
        limit = parse_limit(args.limit, default=REPLAY_DEFAULT, maximum=REPLAY_MAX)
    except InvalidParameter as exc:
        return _usage_error(exc)
    if len(args.ids) > REPLAY_MAX:
        # One transaction: 100 000 ids held the writer for 1.7 s, near the busy timeout at
        # which deliveries are answered 503.
        print(
            f"error: at most {REPLAY_MAX:,} event ids per run (got {len(args.ids):,})",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if args.ids and (not flt.is_empty or cursor.before_id is not None):
        print("error: give event ids or filters, not both", file=sys.stderr)
        return EXIT_USAGE
    if not args.ids and flt.is_empty:
        print(
            "error: give event ids, or at least one filter (--provider, --status…)", file=sys.stderr
        )
        return EXIT_USAGE

    async def work(store: SqliteStore) -> ReplayReport:
        replayer = store.replayer
        if args.ids:
            return await replayer.replay_ids(
                args.ids, actor=CLI_ACTOR, reason=reason, dry_run=args.dry_run
            )
        return await replayer.replay_matching(
            flt,
            actor=CLI_ACTOR,
            reason=reason,
            dry_run=args.dry_run,
            limit=limit,
            before_id=cursor.before_id,
            now_s=now,
        )

    report = _with_store(load_ops_config(args), work)
    _print_replay(report, as_json=args.json)
    # Named ids that could not be replayed are a failure the caller should see.
    return EXIT_FAILURE if args.ids and report.skipped else EXIT_OK


def _purge(args: argparse.Namespace) -> int:
    report = _with_store(load_ops_config(args), lambda store: store.retention.purge_once())
    if args.json:
        _print_json(report.as_json())
    else:
        print(
            f"payloads purged: {report.payloads_purged}\n"
            f"events deleted (dedupe window over): {report.events_deleted}\n"
            f"rejections trimmed: {report.rejections_deleted}"
        )
    return EXIT_OK


def _add_filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--provider", help="provider name")
    parser.add_argument("--status", help="queued, processing, retrying, succeeded, dead, received")
    parser.add_argument("--type", help="event type")
    parser.add_argument("--key", help="exact dedupe key ({provider}:{event id})")
    parser.add_argument("--since", help="ISO-8601 time, Unix seconds, or a duration ago (2h)")
    parser.add_argument("--until", help="ISO-8601 time, Unix seconds, or a duration ago")
    parser.add_argument("--q", help="text search over bodies")
    parser.add_argument("--cursor", help="continue where the last run said (its --cursor)")


CONFIG_HELP = "path to the YAML config (default: $RECEIVER_CONFIG, then config/receiver.yaml)"


def _config_option(parser: argparse.ArgumentParser) -> None:
    # Accept --config after the action too, like the other commands, and say so in its --help.
    parser.add_argument(
        "--config", dest="config", default=argparse.SUPPRESS, metavar="PATH", help=CONFIG_HELP
    )


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``events``, ``replay`` and ``purge`` to the ``receiver`` parser."""
    events = sub.add_parser("events", help="list and show stored events")
    actions = events.add_subparsers(dest="events_command", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="events, newest first")
    _add_filters(listing)
    listing.add_argument("--limit", type=int, help="how many (default 50)")
    listing.add_argument("--json", action="store_true", help="JSON for scripts")
    show = actions.add_parser("show", help="one event: body, headers, attempts")
    show.add_argument("id", type=_event_id, help="event id")
    show.add_argument("--json", action="store_true", help="JSON for scripts")
    for parser in (listing, show):
        _config_option(parser)

    replay = sub.add_parser("replay", help="queue events again (by id, or by filter)")
    replay.add_argument("ids", nargs="*", type=_event_id, metavar="ID", help="event ids")
    _add_filters(replay)
    replay.add_argument("--reason", help="why (kept in the audit trail)")
    replay.add_argument("--dry-run", action="store_true", help="count and show, change nothing")
    replay.add_argument("--limit", type=int, help="at most this many by filter (default 1000)")
    replay.add_argument("--json", action="store_true", help="JSON for scripts")

    purge = sub.add_parser("purge", help="run retention once")
    purge.add_argument("--json", action="store_true", help="JSON for scripts")


def register(command: Callable[[str], Callable[[Command], Command]]) -> None:
    """Register the commands with the CLI's ``@command`` registry."""
    command("events")(_events)
    command("replay")(_replay)
    command("purge")(_purge)
