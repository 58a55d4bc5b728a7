"""The full-text index over stored bodies (the admin API's ``q``), on or off by
``storage.search_index``.

With it on, every stored body is indexed as it is inserted and taken out when its payload is
purged: with an 800-byte JSON body that is about a third of a new event's SQLite work, and
more with larger bodies. With it off, ``q`` is a substring search that reads the bodies
(:mod:`receiver.store.queries`). The index is built or dropped when a server opens the file,
in one transaction: turned on again, it covers every payload still stored, those received
while it was off too.
"""

from __future__ import annotations

__all__ = ["BUILD", "DROP", "exists"]

import aiosqlite

from receiver.store.migrations import PAYLOADS_FTS

BUILD = PAYLOADS_FTS
DROP = """
DROP TRIGGER IF EXISTS payloads_fts_insert;
DROP TRIGGER IF EXISTS payloads_fts_delete;
DROP TABLE IF EXISTS events_fts;
"""


async def exists(conn: aiosqlite.Connection) -> bool:
    """Whether the file has the index (built by a migration, or by an earlier start)."""
    rows = await conn.execute_fetchall(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events_fts'"
    )
    return bool(list(rows))
