"""Baseline B1, the receiver people write by hand: verify the Standard Webhooks HMAC, then
INSERT one row and COMMIT, per request, with aiosqlite (WAL, synchronous=FULL, like receiver).

    BENCH_SECRET=whsec_... python bench/b1_naive.py --port PORT --db PATH

One transaction per request: a lock spans INSERT + COMMIT. (Without it, concurrent handlers
sharing one aiosqlite connection interleave their statements inside Python's implicit
transaction and commit each other's rows: an accidental group commit that few people know
they rely on.) Dedupe is INSERT OR IGNORE on a UNIQUE key, so a redelivery is answered 200.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import os
import time

import aiosqlite
from aiohttp import web

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    body BLOB NOT NULL,
    headers TEXT NOT NULL,
    received_at REAL NOT NULL
)
"""
DB = web.AppKey("db", aiosqlite.Connection)
LOCK = web.AppKey("lock", asyncio.Lock)
KEY = web.AppKey("key", bytes)


async def handle(request: web.Request) -> web.Response:
    body = await request.read()
    msg_id = request.headers.get("webhook-id", "")
    timestamp = request.headers.get("webhook-timestamp", "")
    signatures = request.headers.get("webhook-signature", "")
    if not msg_id or not timestamp.isdigit() or abs(time.time() - int(timestamp)) > 300:
        return web.Response(status=400, text="bad headers")
    mac = hmac.new(request.app[KEY], f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256)
    expected = base64.b64encode(mac.digest()).decode()
    ok = any(
        hmac.compare_digest(part.partition(",")[2], expected)
        for part in signatures.split(" ")
        if part.startswith("v1,")
    )
    if not ok:
        return web.Response(status=401, text="bad signature")
    db = request.app[DB]
    async with request.app[LOCK]:
        await db.execute(
            "INSERT OR IGNORE INTO events (key, body, headers, received_at) VALUES (?, ?, ?, ?)",
            (msg_id, body, json.dumps(dict(request.headers)), time.time()),
        )
        await db.commit()
    return web.json_response({"status": "ok"})


async def build(db_path: str, secret: str) -> web.Application:
    app = web.Application()
    app[KEY] = base64.b64decode(secret.removeprefix("whsec_"))
    db = await aiosqlite.connect(db_path)
    await db.execute("PRAGMA journal_mode = WAL")
    await db.execute("PRAGMA synchronous = FULL")
    await db.execute(SCHEMA)
    await db.commit()
    app[DB] = db
    app[LOCK] = asyncio.Lock()

    async def close(app: web.Application) -> None:
        await app[DB].close()

    app.on_cleanup.append(close)
    app.router.add_post("/{tail:.*}", handle)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--db", required=True)
    parser.add_argument("--secret-env", default="BENCH_SECRET")
    args = parser.parse_args()
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        loop_factory = asyncio.new_event_loop
    loop = loop_factory()
    asyncio.set_event_loop(loop)
    app = loop.run_until_complete(build(args.db, os.environ[args.secret_env]))
    web.run_app(app, host=args.host, port=args.port, access_log=None, print=None, loop=loop)


if __name__ == "__main__":
    main()
