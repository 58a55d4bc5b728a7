"""The ``receiver`` command: parse, load config, call one library function, exit code.

Exit codes: 0 success, 1 runtime failure (storage, startup), 2 usage or configuration error.
"""

from __future__ import annotations

__all__ = ["main"]

import argparse
import asyncio
import io
import os
import re
import secrets
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from receiver import cli_db, cli_ops
from receiver.config import Config, config_path, load_config
from receiver.durations import format_duration
from receiver.errors import ConfigError, ReceiverError
from receiver.logs import configure_logging
from receiver.printed import capture_prints
from receiver.signatures.base import Signer, Unsigned

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
EXIT_BROKEN_PIPE = 128 + 13  # as a shell reports a process ended by SIGPIPE

Command = Callable[[argparse.Namespace], int]
_COMMANDS: dict[str, Command] = {}


def command(name: str) -> Callable[[Command], Command]:
    def register(fn: Command) -> Command:
        _COMMANDS[name] = fn
        return fn

    return register


cli_ops.register(command)  # events, replay, purge
cli_db.register(command)  # backup, compact


def _load(args: argparse.Namespace) -> Config:
    """The config to serve with: every provider resolved, and nothing ``serve`` would refuse."""
    return load_config(config_path(args.config), for_serving=True)


@command("serve")
def _serve(args: argparse.Namespace) -> int:
    from receiver.runtime import Receiver, serve

    config = _load(args)
    if configure_logging(config.settings.logging.level, config.settings.logging.format):
        capture_prints()  # a handler's print() among JSON lines would break their parsing
    try:
        import uvloop

        loop_factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    except ImportError:  # uvloop is optional (not on Windows)
        loop_factory = asyncio.new_event_loop
    serve(Receiver(config), loop_factory=loop_factory)
    return EXIT_OK


@command("check-config")
def _check_config(args: argparse.Namespace) -> int:
    config = _load(args)
    s = config.settings
    print(f"{config.path}: OK")
    print(f"  ingest  {_origin(s.server.host, s.server.port)}/webhooks/{{provider}}")
    print(f"  admin   {_origin(s.admin.host, s.admin.port)}/admin")
    print(f"  storage {s.storage.path} (synchronous={s.storage.synchronous})")
    print("  providers:")
    for name, provider in sorted(config.providers.items()):
        handler = provider.settings.handler
        print(
            f"    {name}: scheme={provider.scheme.name}"
            f" event_id={provider.event_id.expression}"
            f" payload_retention={format_duration(provider.payload_retention_s)}"
            f" dedupe_retention={format_duration(provider.dedupe_retention_s)}"
            f" handler={handler.kind if handler else 'none'}"
        )
    for warning in config.warnings:
        print(f"  warning: {warning}")
    return EXIT_OK


_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP header's name
_ID_HEADER = re.compile(rf"^header:({_TOKEN.pattern})$")


@command("sign")
def _sign(args: argparse.Namespace) -> int:
    # Only this provider is resolved: the other providers' secrets are not needed.
    config = load_config(config_path(args.config), only={args.provider})
    provider = config.providers.get(args.provider)
    if provider is None:
        print(f"error: no provider named {args.provider!r} in {config.path}", file=sys.stderr)
        return EXIT_USAGE
    verifier = provider.verifier
    if not isinstance(verifier, Signer):
        how = provider.scheme.docs.get("signing", "this scheme is verified with a public key")
        print(
            f"error: receiver cannot sign for scheme {provider.scheme.name}: {how}", file=sys.stderr
        )
        return EXIT_USAGE
    is_stdin = args.body in (None, "-")
    if args.curl and is_stdin:
        print(
            "error: --curl needs --body FILE: a body read from stdin is gone by the time the"
            " printed command runs",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if is_stdin and sys.stdin.isatty():  # else it looks like a hang
        print("reading the body from the terminal; end it with Ctrl-D", file=sys.stderr)
    body = sys.stdin.buffer.read() if is_stdin else Path(args.body).read_bytes()
    s = config.settings
    url = args.url or f"{_origin(s.server.host, s.server.port)}/webhooks/{args.provider}"
    event_id = args.event_id or f"msg_{secrets.token_hex(12)}"
    carried = dict(args.header)
    # Where the provider's own ID travels, when one header holds it (``hmac`` schemes): the
    # delivery must carry it, or it has no event ID (and the signed content may name it).
    named = _ID_HEADER.match(provider.event_id.expression.split("||")[0].strip())
    if named and named[1].lower() not in {name.lower() for name in carried}:
        carried[named[1]] = event_id
    try:
        headers = verifier.sign(
            Unsigned(body=body, now_s=time.time(), event_id=event_id, url=url, carried=carried)
        )
    except ValueError as exc:  # the signed content names a header nobody gave
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    signed = {name.lower() for name in headers}
    written = [name for name, _ in args.header if name.lower() in signed]
    if written:
        print(
            f"error: --header {written[0]}: sign writes that header itself (give the event ID"
            " with --event-id)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    headers |= {name: value for name, value in carried.items() if name.lower() not in signed}
    if args.event_id and not any(args.event_id in value for value in headers.values()):
        print(
            f"note: --event-id is not sent: provider {args.provider} reads its event ID from"
            f" {provider.event_id.expression} (write it into the body instead)",
            file=sys.stderr,
        )
    if args.curl:
        content_type = f"Content-Type: {provider.scheme.content_type}"
        parts = ["curl", "-sS", "-X", "POST", url, "-H", content_type]
        for name, value in headers.items():
            parts += ["-H", f"{name}: {value}"]
        parts += ["--data-binary", f"@{args.body}"]
        print(shlex.join(parts))
    else:
        for name, value in headers.items():
            print(f"{name}: {value}")
    return EXIT_OK


def _origin(host: str, port: int) -> str:
    """``http://host:port``, an IPv6 address in brackets (``http://[::1]:8080``)."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    name, value = name.strip(), value.strip()
    if not sep or not _TOKEN.fullmatch(name) or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise argparse.ArgumentTypeError(f"not a header line ('NAME: VALUE'): {text[:80]!r}")
    return name, value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="receiver", description="Webhook receiver and redelivery deduplicator."
    )
    parser.add_argument("--config", help=cli_ops.CONFIG_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("serve", help="run the ingest server, the admin server and the worker")
    sub.add_parser("check-config", help="validate the config and summarise the providers")
    sign = sub.add_parser("sign", help="print the headers a provider would send for a body")
    sign.add_argument("--provider", required=True, help="a provider name from the config")
    sign.add_argument("--body", help="file with the exact body bytes ('-' or absent: stdin)")
    sign.add_argument("--event-id", help="event id for schemes that send it in a header")
    sign.add_argument("--url", help="the URL the delivery goes to (default: the ingest URL)")
    sign.add_argument("--curl", action="store_true", help="print a ready curl command instead")
    sign.add_argument(
        "--header",
        action="append",
        default=[],
        type=_header,
        metavar="'NAME: VALUE'",
        help="another header the delivery carries (repeatable), e.g. 'X-GitHub-Hook-ID: 42'",
    )
    cli_ops.add_parsers(sub)
    cli_db.add_parsers(sub)
    _add_config_option(sub)
    return parser


def _add_config_option(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    # Accept --config after the subcommand too (``receiver serve --config x.yaml``).
    for subparser in sub.choices.values():
        subparser.add_argument(
            "--config",
            dest="config",
            default=argparse.SUPPRESS,
            metavar="PATH",
            help=cli_ops.CONFIG_HELP,
        )


def _explain(exc: BaseException) -> str:
    """The cause chain in plain words, without tracebacks (and without the causes an error
    raised ``from None`` already put in its own words)."""
    parts = [str(exc) or type(exc).__name__]
    cause = _cause_of(exc)
    while cause is not None and len(parts) < 4:
        text = str(cause)
        if text and text not in parts:
            parts.append(text)
        cause = _cause_of(cause)
    return ": ".join(parts)


def _cause_of(exc: BaseException) -> BaseException | None:
    return exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)


def _never_unencodable(stream: object) -> None:
    """What the terminal's encoding cannot show (a latin-1 locale, a cp1252 console) is
    written as a backslash escape rather than ending the command with a traceback."""
    if isinstance(stream, io.TextIOWrapper):
        stream.reconfigure(errors="backslashreplace")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _never_unencodable(sys.stdout)
    _never_unencodable(sys.stderr)
    try:
        code = _COMMANDS[args.command](args)
        sys.stdout.flush()  # here, where a reader gone away is caught, not at exit
        return code
    except BrokenPipeError:
        # The reader went away (``receiver events list | head``): stop quietly, as shell tools
        # do, with the status a SIGPIPE gives them. Nothing more can reach that pipe.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ReceiverError as exc:
        print(f"error: {_explain(exc)}", file=sys.stderr)
        return EXIT_FAILURE
    except OSError as exc:
        print(f"error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
