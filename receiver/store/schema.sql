-- receiver schema, version 1. Applied once to an empty database; later versions migrate forward.
-- Times are Unix seconds (REAL). Bodies are stored byte-exact as BLOBs.

CREATE TABLE events (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    provider            TEXT    NOT NULL,
    key                 TEXT    NOT NULL UNIQUE,      -- "{provider}:{event id}": the dedupe key
    provider_event_id   TEXT    NOT NULL,
    event_type          TEXT,
    fingerprint         TEXT    NOT NULL,             -- hex SHA-256 of the body (keys.py: event_sha256)
    body                BLOB,                         -- NULL once the payload is purged
    headers             TEXT,                         -- JSON object, credentials removed; NULL once purged
    content_type        TEXT,
    remote_addr         TEXT,
    status              TEXT    NOT NULL,
    serialize_key       TEXT,
    received_at         REAL    NOT NULL,
    last_seen_at        REAL    NOT NULL,
    duplicate_count     INTEGER NOT NULL DEFAULT 0,
    conflict_count      INTEGER NOT NULL DEFAULT 0,
    requeue_dead        INTEGER NOT NULL DEFAULT 1,
    payload_expires_at  REAL    NOT NULL,
    dedupe_expires_at   REAL    NOT NULL,
    payload_purged_at   REAL
);
CREATE INDEX events_provider_id ON events (provider, id);
CREATE INDEX events_status_id ON events (status, id);
CREATE INDEX events_type_id ON events (event_type, id);
CREATE INDEX events_received ON events (received_at);
CREATE INDEX events_dedupe_expiry ON events (dedupe_expires_at);
CREATE INDEX events_payload_expiry ON events (payload_expires_at) WHERE body IS NOT NULL;

-- One job per event: the event's place in the worker queue.
CREATE TABLE jobs (
    event_id            INTEGER PRIMARY KEY REFERENCES events (id) ON DELETE CASCADE,
    provider            TEXT    NOT NULL,
    status              TEXT    NOT NULL,             -- queued | running | succeeded | dead
    attempts            INTEGER NOT NULL DEFAULT 0,
    run_at              REAL    NOT NULL,
    lease_token         TEXT,
    lease_expires_at    REAL,
    serialize_key       TEXT,
    is_replay           INTEGER NOT NULL DEFAULT 0,
    last_error          TEXT,
    updated_at          REAL    NOT NULL
);
CREATE INDEX jobs_ready ON jobs (status, run_at);
CREATE INDEX jobs_provider_ready ON jobs (provider, status, run_at);
CREATE INDEX jobs_serialize ON jobs (serialize_key, event_id) WHERE serialize_key IS NOT NULL;

-- Every handler run, for the admin timeline.
CREATE TABLE attempts (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id            INTEGER NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    number              INTEGER NOT NULL,
    is_replay           INTEGER NOT NULL DEFAULT 0,
    started_at          REAL    NOT NULL,
    finished_at         REAL,
    outcome             TEXT,                         -- succeeded | retry | dead | interrupted
    http_status         INTEGER,
    exit_code           INTEGER,
    error               TEXT,
    duration_s          REAL
);
CREATE INDEX attempts_event ON attempts (event_id, id);

-- Same key, different body: the original is kept, the newcomer's fingerprint is noted here.
CREATE TABLE conflicts (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id            INTEGER NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    fingerprint         TEXT    NOT NULL,
    seen_at             REAL    NOT NULL
);
CREATE INDEX conflicts_event ON conflicts (event_id);

-- Redeliveries of dead events that re-queued them, and operator replays: the audit trail.
CREATE TABLE requeues (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id            INTEGER NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    at                  REAL    NOT NULL,
    cause               TEXT    NOT NULL,             -- redelivery | replay
    actor               TEXT,
    reason              TEXT
);
CREATE INDEX requeues_event ON requeues (event_id);

-- Rejected deliveries (no bodies), capped by the purge.
CREATE TABLE rejections (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    at                  REAL    NOT NULL,
    provider            TEXT,
    cause               TEXT    NOT NULL,
    remote_addr         TEXT,
    body_bytes          INTEGER
);
CREATE INDEX rejections_at ON rejections (at);
