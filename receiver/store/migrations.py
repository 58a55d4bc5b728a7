"""The schema's versions: version 1 is ``schema.sql``; each later version is a forward step.

A database records its version in ``PRAGMA user_version``; :class:`~receiver.store.database.
Database` runs the steps past it, each in its own transaction.
"""

from __future__ import annotations

__all__ = ["PAYLOADS_FTS", "SCHEMA_VERSION", "migrations", "sqlite_has_fts5", "split_sql"]

import sqlite3
from importlib import resources

SCHEMA_VERSION = 7


# Version 2: full-text search over bodies (admin ``q``). An external-content FTS5 index kept in
# step by triggers; a purged or deleted body leaves the index. Bodies are indexed as UTF-8 text.
_FTS_MIGRATION = """
CREATE VIRTUAL TABLE events_fts USING fts5(body, content='events', content_rowid='id');
INSERT INTO events_fts (rowid, body)
    SELECT id, CAST(body AS TEXT) FROM events WHERE body IS NOT NULL;
CREATE TRIGGER events_fts_insert AFTER INSERT ON events WHEN new.body IS NOT NULL BEGIN
    INSERT INTO events_fts (rowid, body) VALUES (new.id, CAST(new.body AS TEXT));
END;
CREATE TRIGGER events_fts_delete AFTER DELETE ON events WHEN old.body IS NOT NULL BEGIN
    INSERT INTO events_fts (events_fts, rowid, body)
        VALUES ('delete', old.id, CAST(old.body AS TEXT));
END;
CREATE TRIGGER events_fts_purge AFTER UPDATE OF body ON events WHEN old.body IS NOT NULL BEGIN
    INSERT INTO events_fts (events_fts, rowid, body)
        VALUES ('delete', old.id, CAST(old.body AS TEXT));
END;
CREATE TRIGGER events_fts_restore AFTER UPDATE OF body ON events WHEN new.body IS NOT NULL BEGIN
    INSERT INTO events_fts (rowid, body) VALUES (new.id, CAST(new.body AS TEXT));
END;
"""

# Version 3: ``jobs_ready (status, run_at)`` goes. Every query that reads jobs by status also
# names the provider (or reads them all), which ``jobs_provider_ready (provider, status, run_at)``
# serves; the second index only cost each job three more index writes (queued, claimed, done).
# (A version 1 file written before that index joined schema.sql gets it here.)
_DROP_JOBS_READY = """
CREATE INDEX IF NOT EXISTS jobs_provider_ready ON jobs (provider, status, run_at);
DROP INDEX IF EXISTS jobs_ready;
"""
# Version 4: the retention windows last applied to each provider's stored events, so a changed
# window is applied to the events already stored (once), not only to those received after.
_RETENTION_APPLIED = """
CREATE TABLE retention_applied (
    provider            TEXT    PRIMARY KEY,
    payload_retention_s REAL    NOT NULL,
    dedupe_retention_s  REAL    NOT NULL
);
"""


def sqlite_has_fts5() -> bool:
    """Whether the linked SQLite has FTS5 (aiosqlite uses this same library)."""
    conn = sqlite3.connect(":memory:")
    try:
        conn.execute("CREATE VIRTUAL TABLE fts_probe USING fts5(x)")
    except sqlite3.OperationalError:
        return False
    finally:
        conn.close()
    return True


def _search_text(body: str) -> str:
    """SQL for the text a body is indexed under: a JSON body's values, decoded (a ``\\n`` or
    ``\\u00fc`` escape would otherwise glue itself to the next word: ``nsecond``,
    ``u00fcller``); any other body as its bytes read as text. Deterministic, so a delete from
    the external-content index names exactly what was indexed."""
    text = f"CAST({body} AS TEXT)"
    values = (
        "(SELECT group_concat(CASE WHEN type = 'text' THEN value ELSE atom END, ' ')"
        f" FROM json_tree({text}) WHERE atom IS NOT NULL)"
    )
    # json_valid first: json_tree raises on what it cannot parse (too deep, not JSON).
    return f"CASE WHEN json_valid({text}) THEN coalesce({values}, '') ELSE {text} END"


# Version 5: the index holds decoded JSON values (version 2 indexed the raw JSON text, where
# escapes hid words); rebuilt whole, triggers and all (also where version 2 found no FTS5).
_FTS_DECODED = f"""
DROP TRIGGER IF EXISTS events_fts_insert;
DROP TRIGGER IF EXISTS events_fts_delete;
DROP TRIGGER IF EXISTS events_fts_purge;
DROP TRIGGER IF EXISTS events_fts_restore;
DROP TABLE IF EXISTS events_fts;
CREATE VIRTUAL TABLE events_fts USING fts5(body, content='events', content_rowid='id');
INSERT INTO events_fts (rowid, body)
    SELECT id, {_search_text("body")} FROM events WHERE body IS NOT NULL;
CREATE TRIGGER events_fts_insert AFTER INSERT ON events WHEN new.body IS NOT NULL BEGIN
    INSERT INTO events_fts (rowid, body) VALUES (new.id, {_search_text("new.body")});
END;
CREATE TRIGGER events_fts_delete AFTER DELETE ON events WHEN old.body IS NOT NULL BEGIN
    INSERT INTO events_fts (events_fts, rowid, body)
        VALUES ('delete', old.id, {_search_text("old.body")});
END;
CREATE TRIGGER events_fts_purge AFTER UPDATE OF body ON events WHEN old.body IS NOT NULL BEGIN
    INSERT INTO events_fts (events_fts, rowid, body)
        VALUES ('delete', old.id, {_search_text("old.body")});
END;
CREATE TRIGGER events_fts_restore AFTER UPDATE OF body ON events WHEN new.body IS NOT NULL BEGIN
    INSERT INTO events_fts (rowid, body) VALUES (new.id, {_search_text("new.body")});
END;
"""


# Version 6: when a redelivery brought a purged payload back. Its retention counts from then
# (``payload_expires_at`` = restored + window), also when a changed window is applied later:
# counted from ``received_at`` it could be purged again before its job ran.
_PAYLOAD_RESTORED = "ALTER TABLE events ADD COLUMN payload_restored_at REAL;"


# Version 7: bodies and headers move to a table of their own. SQLite writes a row whole when
# its size changes, overflow pages and all: with the body in the event's row, each status change
# or duplicate count rewrote the body (40 KB bodies: 90 KB of WAL per change, now 11), and every
# scan of events (stats, listings) read past them. ``payload_purged_at`` alone now says whether
# the payload is gone. The full-text index follows the bodies (same rowids: the event ids).
# An event deleted by hand (the sqlite3 shell has foreign keys off, so no cascade) takes its
# payload along all the same: a trigger fires either way. And a job records when it was queued
# (its event received, redelivered after it went dead, or replayed once it had finished; a
# retry keeps it): the age of the oldest event not yet handled, retries and all. The queue's
# index carries it, so the queue gauges' count still reads the index alone.
_PAYLOADS_TABLE = """
DROP TRIGGER IF EXISTS events_fts_insert;
DROP TRIGGER IF EXISTS events_fts_delete;
DROP TRIGGER IF EXISTS events_fts_purge;
DROP TRIGGER IF EXISTS events_fts_restore;
DROP TABLE IF EXISTS events_fts;
DROP INDEX IF EXISTS events_payload_expiry;
CREATE TABLE payloads (
    event_id            INTEGER PRIMARY KEY REFERENCES events (id) ON DELETE CASCADE,
    body                BLOB    NOT NULL,
    headers             TEXT    NOT NULL
);
INSERT INTO payloads (event_id, body, headers)
    SELECT id, body, coalesce(headers, '{}') FROM events WHERE body IS NOT NULL;
UPDATE events SET payload_purged_at = NULL WHERE body IS NOT NULL AND payload_purged_at IS NOT NULL;
UPDATE events SET payload_purged_at = last_seen_at WHERE body IS NULL AND payload_purged_at IS NULL;
ALTER TABLE events DROP COLUMN body;
ALTER TABLE events DROP COLUMN headers;
CREATE INDEX events_payload_expiry ON events (payload_expires_at) WHERE payload_purged_at IS NULL;
CREATE TRIGGER payloads_follow_events AFTER DELETE ON events BEGIN
    DELETE FROM payloads WHERE event_id = old.id;
END;
ALTER TABLE jobs ADD COLUMN enqueued_at REAL;
UPDATE jobs SET enqueued_at = coalesce(
    (SELECT max(at) FROM requeues WHERE requeues.event_id = jobs.event_id),
    (SELECT received_at FROM events WHERE events.id = jobs.event_id)
) WHERE status IN ('queued', 'running');
DROP INDEX jobs_provider_ready;
CREATE INDEX jobs_provider_ready ON jobs (provider, status, run_at, enqueued_at);
"""
PAYLOADS_FTS = f"""
CREATE VIRTUAL TABLE events_fts USING fts5(body, content='payloads', content_rowid='event_id');
INSERT INTO events_fts (rowid, body) SELECT event_id, {_search_text("body")} FROM payloads;
CREATE TRIGGER payloads_fts_insert AFTER INSERT ON payloads BEGIN
    INSERT INTO events_fts (rowid, body) VALUES (new.event_id, {_search_text("new.body")});
END;
CREATE TRIGGER payloads_fts_delete AFTER DELETE ON payloads BEGIN
    INSERT INTO events_fts (events_fts, rowid, body)
        VALUES ('delete', old.event_id, {_search_text("old.body")});
END;
"""


def migrations(*, search_index: bool = True) -> dict[int, str]:
    """Forward migrations by target version. Version 1 is the whole schema.

    Without FTS5, or with ``storage.search_index: false``, the steps that build the full-text
    index are empty (text search reads the bodies, see store.queries): an upgrade must not
    index every stored body only for the start to drop the index again. An index an earlier
    version built goes with version 7, which drops the old one first.
    """
    schema = resources.files("receiver.store").joinpath("schema.sql").read_text("utf-8")
    is_indexed = search_index and sqlite_has_fts5()
    return {
        1: schema,
        2: _FTS_MIGRATION if is_indexed else "",
        3: _DROP_JOBS_READY,
        4: _RETENTION_APPLIED,
        5: _FTS_DECODED if is_indexed else "",
        6: _PAYLOAD_RESTORED,
        7: _PAYLOADS_TABLE + (PAYLOADS_FTS if is_indexed else ""),
    }


def split_sql(script: str) -> list[str]:
    """Split a migration into statements; a trigger's ``BEGIN … END`` stays one statement.

    Comments are dropped first (no string literal in a migration contains ``--``).
    """
    text = "\n".join(line.split("--", 1)[0] for line in script.splitlines())
    statements: list[str] = []
    current = ""
    for piece in text.split(";"):
        current += piece + ";"
        if sqlite3.complete_statement(current):
            if statement := current.strip().removesuffix(";").strip():
                statements.append(statement)
            current = ""
    if statement := current.strip().removesuffix(";").strip():
        statements.append(statement)
    return statements
