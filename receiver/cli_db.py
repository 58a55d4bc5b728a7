"""Database-file commands: ``backup`` (beside a running server) and ``compact`` (without one).

The image has no ``sqlite3`` shell, so these are how an operator copies the file safely and
gives a purge's free pages back to the disk (see :mod:`receiver.store.maintenance`).
"""

from __future__ import annotations

__all__ = ["add_parsers", "register"]

import argparse
import json
from collections.abc import Callable
from pathlib import Path

from receiver.cli_ops import EXIT_OK, Command, load_ops_config, storage_path
from receiver.store import maintenance


def _megabytes(size: int) -> str:
    return f"{size / 1_000_000:,.1f} MB"


def _backup(args: argparse.Namespace) -> int:
    config = load_ops_config(args)
    report = maintenance.backup(
        storage_path(config), Path(args.dest), busy_timeout_s=config.settings.storage.busy_timeout_s
    )
    return _done(
        args,
        report.as_json(),
        f"backed up {report.events:,} events (schema version {report.schema_version}) to"
        f" {report.path}: {_megabytes(report.bytes)} in {report.duration_s:.1f} s",
    )


def _compact(args: argparse.Namespace) -> int:
    config = load_ops_config(args)
    report = maintenance.compact(
        storage_path(config), busy_timeout_s=config.settings.storage.busy_timeout_s
    )
    return _done(
        args,
        report.as_json(),
        f"compacted: {_megabytes(report.bytes_before)} -> {_megabytes(report.bytes_after)}"
        f" in {report.duration_s:.1f} s"
        + (
            "; a reader holds the old pages: the file shrinks at the next checkpoint after it"
            " is done"
            if report.is_shrink_pending
            else ""
        ),
    )


def _done(args: argparse.Namespace, data: dict[str, object], text: str) -> int:
    print(json.dumps(data) if args.json else text)
    return EXIT_OK


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``backup`` and ``compact`` to the ``receiver`` parser."""
    backup = sub.add_parser(
        "backup", help="copy the database, consistent and checked, beside a running server"
    )
    backup.add_argument("dest", metavar="DEST", help="the new file (it must not exist)")
    compact = sub.add_parser(
        "compact", help="give free pages back to the disk (the server must be stopped)"
    )
    for parser in (backup, compact):
        parser.add_argument("--json", action="store_true", help="JSON for scripts")


def register(command: Callable[[str], Callable[[Command], Command]]) -> None:
    command("backup")(_backup)
    command("compact")(_compact)
