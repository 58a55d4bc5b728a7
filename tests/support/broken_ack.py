"""A deliberately broken build for testing the crash test: it acknowledges before COMMIT.

Importing this module patches :class:`receiver.store.ingest_writer.IngestWriter` so each group
commit resolves its waiters (the HTTP answer goes out) *inside* the transaction and then holds
the transaction open for :data:`COMMIT_DELAY_S` seconds before committing. A SIGKILL in that
window loses events the clients were told are stored: exactly what guarantee 1 forbids, and
what the crash harness must detect. It lives in the test tree only; production code has no
switch for it. Start it with::

    python -c "import tests.support.broken_ack; from receiver.cli import main; \
raise SystemExit(main())" serve --config PATH
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence

import aiosqlite

from receiver.models import IngestOutcome
from receiver.store import ingest_writer
from receiver.store.ingest_writer import IngestWriter, _Pending

# Wide enough that a SIGKILL sent right after the first answers always lands before COMMIT.
COMMIT_DELAY_S = 3.0

_original_write = IngestWriter._write


async def _ack_then_commit_late(
    self: IngestWriter, conn: aiosqlite.Connection, *, batch: Sequence[_Pending]
) -> list[IngestOutcome]:
    outcomes = await _original_write(self, conn, batch=batch)
    for item, outcome in zip(batch, outcomes, strict=True):
        if not item.future.done():
            item.future.set_result(outcome)  # the bug: answered before the COMMIT below
    await asyncio.sleep(COMMIT_DELAY_S)
    return outcomes


async def _flush(self: IngestWriter) -> None:
    while self._pending:
        batch = self._pending[: self._batch_max]
        del self._pending[: self._batch_max]
        write = functools.partial(_ack_then_commit_late, self, batch=batch)
        await self._db.transaction(write)


ingest_writer.IngestWriter._flush = _flush  # type: ignore[method-assign]
