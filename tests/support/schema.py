"""Database files as an older receiver left them, for upgrade tests."""

from __future__ import annotations

import sqlite3

from receiver.store import migrations


def build_schema(conn: sqlite3.Connection, version: int) -> None:
    """Run the schema's steps up to ``version`` on ``conn`` (in autocommit mode) and record
    ``version`` (which may be past this receiver's own, for a "newer file")."""
    conn.execute("PRAGMA journal_mode = WAL")
    for step in range(1, min(version, migrations.SCHEMA_VERSION) + 1):
        for statement in migrations.split_sql(migrations.migrations()[step]):
            conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {version}")
