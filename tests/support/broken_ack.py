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
import sqlite3
import time

from receiver.models import IngestOutcome
from receiver.store import ingest_writer
from receiver.store.ingest_writer import IngestWriter

# Wide enough that a SIGKILL sent right after the first answers always lands before COMMIT.
COMMIT_DELAY_S = 3.0

_original_write_batch = ingest_writer._write_batch


def _answer(future: asyncio.Future[IngestOutcome], outcome: IngestOutcome) -> None:
    if not future.done():
        future.set_result(outcome)


async def _flush(self: IngestWriter) -> None:
    loop = asyncio.get_running_loop()
    while self._pending:
        batch = self._pending[: self._batch_max]
        del self._pending[: self._batch_max]

        def ack_then_commit_late(
            conn: sqlite3.Connection, batch: list[ingest_writer._Pending] = batch
        ) -> object:
            written = _original_write_batch(
                conn, events=[item.event for item in batch], touches=[], now=time.time()
            )
            for item, outcome in zip(batch, written.outcomes, strict=True):
                # The bug: answered before the COMMIT below.
                loop.call_soon_threadsafe(_answer, item.future, outcome)
            time.sleep(COMMIT_DELAY_S)
            return written

        await self._db.transaction_sync(ack_then_commit_late)


ingest_writer.IngestWriter._flush = _flush  # type: ignore[method-assign]
