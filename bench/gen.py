"""Signed deliveries and seed rows for the benchmark.

Requests are written as one TSV file per load-generator thread (``id, timestamp, signature,
body``), so every thread has its own slice and threads never repeat each other. Bodies are a
deterministic function of the event ID, so a redelivery carries the same body (and fingerprint)
as the stored original.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import secrets
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from standardwebhooks.webhooks import Webhook

# Bumped when seeded rows change shape or the preset windows they carry (3: standard-webhooks
# keeps keys 90 days): cached seeds of another version are not reused.
SEED_VERSION = 3
PROVIDER_HMAC = "bench"  # standard-webhooks, v1 HMAC (whsec_)
PROVIDER_ED25519 = "benched"  # standard-webhooks, v1a Ed25519 (whpk_)
KINDS = ("unique", "dup", "mix")


def make_hmac_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode("ascii")


def make_ed25519_key() -> tuple[Ed25519PrivateKey, str]:
    """A fresh signing key and the ``whpk_`` public key receiver is configured with."""
    private = Ed25519PrivateKey.generate()
    raw = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return private, "whpk_" + base64.b64encode(raw).decode("ascii")


def body_for(event_id: str) -> str:
    """A ~330-byte JSON event, the same for every delivery of ``event_id``."""
    digest = hashlib.blake2b(event_id.encode(), digest_size=8).hexdigest()
    return json.dumps(
        {
            "type": "invoice.paid",
            "timestamp": "2025-01-01T00:00:00Z",
            "data": {
                "id": f"in_{digest}",
                "object": "invoice",
                "amount_due": int(digest[:6], 16),
                "currency": "eur",
                "customer": f"cus_{digest[8:]}",
                "status": "paid",
                "lines": [{"price": "price_basic_monthly", "quantity": 1}],
                "metadata": {"source": "bench", "event": event_id},
            },
        },
        separators=(",", ":"),
    )


def seed_id(n: int) -> str:
    """The event ID of the ``n``-th seeded (already stored) event."""
    return "msg_s" + hashlib.blake2b(n.to_bytes(8, "little"), digest_size=12).hexdigest()


def new_id(thread: int) -> str:
    """A fresh event ID; the thread prefix keeps slices disjoint, the rest is random."""
    return f"msg_{thread}x{secrets.token_hex(12)}"


@dataclass(frozen=True, slots=True)
class Signer:
    """Signs with the ``standardwebhooks`` package (v1) or ``cryptography`` Ed25519 (v1a)."""

    hmac_secret: str | None = None
    ed25519_key: Ed25519PrivateKey | None = None

    def sign(self, event_id: str, timestamp: int, body: str) -> str:
        if self.hmac_secret is not None:
            moment = datetime.fromtimestamp(timestamp, tz=UTC)
            return Webhook(self.hmac_secret).sign(event_id, moment, body)
        assert self.ed25519_key is not None
        content = f"{event_id}.{timestamp}.{body}".encode()
        return "v1a," + base64.b64encode(self.ed25519_key.sign(content)).decode("ascii")


def _ids(kind: str, thread: int, per_thread: int, pool_size: int) -> Iterator[str]:
    for k in range(per_thread):
        is_dup = kind == "dup" or (kind == "mix" and k % 2 == 1)
        if is_dup:
            yield seed_id((thread * per_thread + k) % pool_size)
        else:
            yield new_id(thread)


def write_slices(
    prefix: Path,
    *,
    kind: str,
    threads: int,
    per_thread: int,
    signer: Signer,
    pool_size: int = 0,
) -> list[Path]:
    """Write ``threads`` files ``{prefix}.{t}.tsv`` of signed requests; return their paths."""
    if kind not in KINDS:
        raise ValueError(f"unknown request kind {kind!r}")
    if kind != "unique" and pool_size <= 0:
        raise ValueError("redeliveries need a seeded pool")
    timestamp = int(time.time())
    hmac_signer = Webhook(signer.hmac_secret) if signer.hmac_secret is not None else None
    moment = datetime.fromtimestamp(timestamp, tz=UTC)
    paths: list[Path] = []
    for thread in range(threads):
        path = prefix.with_name(f"{prefix.name}.{thread}.tsv")
        with path.open("w", encoding="utf-8") as out:
            lines = []
            for event_id in _ids(kind, thread, per_thread, pool_size):
                body = body_for(event_id)
                if hmac_signer is not None:
                    signature = hmac_signer.sign(event_id, moment, body)
                else:
                    signature = signer.sign(event_id, timestamp, body)
                lines.append(f"{event_id}\t{timestamp}\t{signature}\t{body}\n")
            out.writelines(lines)
        paths.append(path)
    return paths


def preset_windows() -> tuple[float, float]:
    """``(payload, dedupe)`` retention of the bench's providers (the standard-webhooks preset)."""
    from receiver.providers import retention_windows
    from receiver.settings import ProviderSettings
    from receiver.signatures.registry import get_scheme

    scheme = get_scheme("standard-webhooks")
    assert scheme is not None
    return retention_windows(ProviderSettings(scheme="standard-webhooks"), scheme)


def create_schema(db_path: Path) -> None:
    """Open the database once with receiver itself, so its schema (and WAL mode) exists."""
    from receiver.store.database import Database

    async def _open() -> None:
        db = Database(db_path)
        await db.open()
        await db.close()

    asyncio.run(_open())


def _headers_json(event_id: str, body: str) -> str:
    return json.dumps(
        {
            "host": "127.0.0.1:8080",
            "content-type": "application/json",
            "content-length": str(len(body)),
            "webhook-id": event_id,
            "webhook-timestamp": "1735689600",
        },
        separators=(",", ":"),
    )


def seed_events(
    db_path: Path,
    *,
    start: int,
    count: int,
    provider: str = PROVIDER_HMAC,
    event_status: str = "received",
    job_status: str = "succeeded",
    chunk: int = 100_000,
) -> None:
    """Insert seeded events ``start .. start+count`` (IDs from :func:`seed_id`) and their jobs
    straight into receiver's schema with plain sqlite3 (fast: no fsync, big transactions).
    Their expiries and the record of the windows applied are what a receiver running with the
    bench's config would have written (else its first purge would set them all right, in the
    middle of the measurement)."""
    now = time.time()
    payload_s, dedupe_s = preset_windows()
    conn = sqlite3.connect(db_path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = DELETE")
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("PRAGMA cache_size = -262144")
        first_id = conn.execute("SELECT coalesce(max(id), 0) + 1 FROM events").fetchone()[0]
        for base in range(start, start + count, chunk):
            stop = min(base + chunk, start + count)
            events = []
            payloads = []
            jobs = []
            for n in range(base, stop):
                event_id = seed_id(n)
                body = body_for(event_id)
                row_id = first_id + (n - start)
                events.append(
                    (
                        row_id,
                        provider,
                        f"{provider}:{event_id}",
                        event_id,
                        "invoice.paid",
                        hashlib.sha256(body.encode()).hexdigest(),
                        "application/json",
                        "127.0.0.1",
                        event_status,
                        None,
                        now,
                        now,
                        1,
                        now + payload_s,
                        now + dedupe_s,
                    )
                )
                payloads.append((row_id, body.encode(), _headers_json(event_id, body)))
                jobs.append((row_id, provider, job_status, now, now, None, now))
            conn.execute("BEGIN")
            conn.executemany(
                "INSERT INTO events (id, provider, key, provider_event_id, event_type,"
                " fingerprint, content_type, remote_addr, status, serialize_key, received_at,"
                " last_seen_at, requeue_dead, payload_expires_at, dedupe_expires_at)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                events,
            )
            conn.executemany(
                "INSERT INTO payloads (event_id, body, headers) VALUES (?,?,?)", payloads
            )
            conn.executemany(
                "INSERT INTO jobs (event_id, provider, status, run_at, enqueued_at,"
                " serialize_key, updated_at) VALUES (?,?,?,?,?,?,?)",
                jobs,
            )
            conn.execute("COMMIT")
        conn.executemany(
            "INSERT OR REPLACE INTO retention_applied VALUES (?, ?, ?)",
            [(name, payload_s, dedupe_s) for name in (PROVIDER_HMAC, PROVIDER_ED25519)],
        )
        conn.execute("PRAGMA journal_mode = WAL")
    finally:
        conn.close()


def seeded_database(path: Path, count: int, **kwargs: object) -> Path:
    """A fresh receiver database at ``path`` holding ``count`` seeded events."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    create_schema(path)
    if count:
        seed_events(path, start=0, count=count, **kwargs)  # type: ignore[arg-type]
    return path
