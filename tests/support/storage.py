"""Reaching into a running receiver's store, for fault injection in tests."""

from __future__ import annotations

import aiosqlite

from receiver.runtime import Receiver


async def writer_pragma(receiver: Receiver, pragma: str) -> int:
    """Run a pragma on the store's own writer connection (``max_page_count`` is per
    connection, so a second connection could not make the store's writes fail)."""

    async def work(conn: aiosqlite.Connection) -> int:
        async with conn.execute(pragma) as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    return await receiver.store.db.transaction(work)


async def fill_up(receiver: Receiver) -> None:
    """Cap the database at its current size: the next write that needs a page fails (full)."""
    pages = await writer_pragma(receiver, "PRAGMA page_count")
    await writer_pragma(receiver, f"PRAGMA max_page_count = {pages}")
