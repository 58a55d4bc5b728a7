"""The benchmark harness (bench/) runs end to end on a tiny setting, so it cannot rot.

The tiny mode needs nothing beyond the test dependencies: it drives the servers with bench's own
aiohttp load generator instead of wrk, and skips the slow-disk scenarios when strace cannot
delay fsync. The real run (``python -m bench``) is not part of CI.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from standardwebhooks.webhooks import Webhook

from bench import gen, large_bodies
from bench.harness import _soak_summary, goals, summarise

REPO = Path(__file__).resolve().parents[2]


def _read_slices(prefix: Path, threads: int) -> list[list[list[str]]]:
    return [
        [
            line.split("\t", 3)
            for line in prefix.with_name(f"{prefix.name}.{t}.tsv").read_text().splitlines()
        ]
        for t in range(threads)
    ]


def test_unique_slices_are_disjoint_and_signed_with_standardwebhooks(tmp_path: Path) -> None:
    secret = gen.make_hmac_secret()
    gen.write_slices(
        tmp_path / "r", kind="unique", threads=3, per_thread=50, signer=gen.Signer(secret)
    )
    slices = _read_slices(tmp_path / "r", 3)
    ids = [row[0] for rows in slices for row in rows]
    assert len(ids) == len(set(ids)) == 150
    event_id, ts, sig, body = slices[2][7]
    headers = {"webhook-id": event_id, "webhook-timestamp": ts, "webhook-signature": sig}
    assert Webhook(secret).verify(body, headers) == json.loads(body)


def test_ed25519_slices_carry_v1a_signatures(tmp_path: Path) -> None:
    private, public = gen.make_ed25519_key()
    gen.write_slices(
        tmp_path / "r", kind="unique", threads=1, per_thread=3, signer=gen.Signer(None, private)
    )
    event_id, ts, sig, body = _read_slices(tmp_path / "r", 1)[0][0]
    version, _, encoded = sig.partition(",")
    assert version == "v1a"
    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public.removeprefix("whpk_")))
    key.verify(base64.b64decode(encoded), f"{event_id}.{ts}.{body}".encode())


def test_redeliveries_come_from_the_seeded_pool_with_the_same_body(tmp_path: Path) -> None:
    gen.write_slices(
        tmp_path / "r",
        kind="mix",
        threads=2,
        per_thread=20,
        signer=gen.Signer(gen.make_hmac_secret()),
        pool_size=5,
    )
    rows = [row for rows in _read_slices(tmp_path / "r", 2) for row in rows]
    pool = {gen.seed_id(n) for n in range(5)}
    redeliveries = [row for row in rows if row[0] in pool]
    assert len(redeliveries) == 20  # every second request
    assert all(row[3] == gen.body_for(row[0]) for row in redeliveries)
    moment = datetime.fromtimestamp(int(rows[0][1]), tz=UTC)
    assert moment.year >= 2024


def test_seeded_database_uses_receivers_schema(tmp_path: Path) -> None:
    import sqlite3

    db = gen.seeded_database(tmp_path / "seed.db", 100)
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 100
        assert conn.execute("SELECT count(*) FROM jobs").fetchone()[0] == 100
        key = conn.execute("SELECT key FROM events WHERE id = 1").fetchone()[0]
        assert key == f"{gen.PROVIDER_HMAC}:{gen.seed_id(0)}"
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


def test_soak_flatness_and_goals_are_judged() -> None:
    flat = _soak_summary(
        [(t, 60_000, 4 << 20) for t in range(40)], 1000, 0, 10.0, 2, 61_000, {"events": 1000}
    )
    assert flat["rss_flat"] and flat["wal_flat"]
    growing = _soak_summary(
        [(t, 60_000 + t * 2_000, 4 << 20) for t in range(40)], 1000, 0, 10.0, 2, 140_000, {}
    )
    assert not growing["rss_flat"]
    # The WAL is judged by its typical size: one late checkpoint is a spike, not growth.
    spike = [(t, 60_000, (9 << 20) if t == 35 else (4 << 20)) for t in range(40)]
    assert _soak_summary(spike, 1000, 0, 10.0, 2, 61_000, {})["wal_flat"]
    rising = [(t, 60_000, (4 << 20) + t * (256 << 10)) for t in range(40)]
    assert not _soak_summary(rising, 1000, 0, 10.0, 2, 61_000, {})["wal_flat"]

    def result(rps: float, p99: float) -> dict[str, object]:
        return {
            "rps": rps,
            "latency_ms": {"p50": 1.0, "p99": p99, "p999": p99},
            "cpu_s_per_1k": 0.1,
            "server_cpu_util": 1.0,
            "load_cpu_util": 0.5,
            "peak_rss_mb": 70.0,
            "fsyncs_per_1k": None,
            "problems": [],
        }

    summary = summarise(
        {
            "B0": [result(1000, 2.0), result(1200, 2.0)],
            "unique": [result(800, 3.0), result(900, 5.0)],
            "stored": [result(790, 3.0), result(850, 3.0)],
        }
    )
    assert summary["unique"]["ratio_to_b0"] == pytest.approx(850 / 1100)
    rows = {g["goal"]: g for g in goals(summary, flat, {"measured": False, "reason": "x"})}
    assert rows["unique events, synchronous=FULL >= 75 % of B0"]["met"] is True
    assert rows["N stored >= 90 % of the empty-database figure"]["met"] is True
    assert rows["duplicates only >= 85 % of B0"]["met"] is None
    assert rows["p99 ack latency <= 2x B0's p99 (unique events)"]["met"] is True


@pytest.mark.slow
def test_tiny_run_writes_the_table_and_the_json(tmp_path: Path) -> None:
    out = tmp_path / "results"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--tiny", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((out / "results.json").read_text())
    summary = report["summary"]
    for name in ("B0", "B1", "unique", "dup", "mix", "ed25519", "stored", "backlog"):
        assert summary[name]["rps_median"] > 0, name
        assert summary[name]["problems"] == [], (name, summary[name]["problems"])
    assert summary["B0"]["ratio_to_b0"] == pytest.approx(1.0)
    # Every acknowledged unique delivery is a stored row; redeliveries add none.
    unique_round = report["rounds"]["unique"][0]
    assert unique_round["rows_added"]["events"] >= unique_round["requests"]
    dup_round = report["rounds"]["dup"][0]
    assert dup_round["rows_added"]["events"] == report["options"]["pool_size"]
    assert dup_round["rows_added"]["duplicates"] >= dup_round["requests"]
    # The CPU budget: each stage answers, only the last one stores.
    stages = report["rounds"]
    assert stages["stage-verify"][0]["rows_added"]["events"] == 0
    assert stages["stage-store"][0]["rows_added"]["events"] >= stages["stage-store"][0]["requests"]
    budget = report["budget"]
    assert [b["stage"] for b in budget] == [
        "stage-framework",
        "stage-capture",
        "stage-verify",
        "stage-store",
        "unique",
    ]
    assert budget[-1]["total_us"] == pytest.approx(summary["unique"]["cpu_s_per_1k"] * 1000)
    assert len(report["goals"]) == 8
    assert report["soak"]["requests"] > 0
    markdown = (out / "results.md").read_text()
    assert "| B0: aiohttp no-op (the ceiling) |" in markdown
    assert "## Goals" in markdown
    assert "## Where a unique event's CPU goes" in markdown


def test_the_large_body_measurement_runs_and_sees_no_body_rewritten() -> None:
    """``python -m bench.large_bodies`` on a tiny setting, so it cannot rot; and its finding
    holds: a status change writes a page or two of WAL whatever the body's size."""
    small, large = large_bodies.main(
        ["--events", "30", "--changes", "30", "--body-bytes", "200", "50000"]
    )
    assert small.stats_ms_per_1000_events > 0 and large.stats_ms_per_1000_events > 0
    assert large.wal_bytes_per_change < 4 * small.wal_bytes_per_change
    assert large.store_cpu_us_indexed > 0 and large.store_cpu_us_unindexed > 0
