"""The benchmark: baselines and receiver scenarios in one job, interleaved rounds, one report.

    python -m bench            # the real run (~12 min): wrk + strace, installed when missing
    python -m bench --quick    # a few minutes, short soak
    python -m bench --tiny     # seconds, Python load generator, for the test suite

See bench/README.md for what each scenario means and how to read the table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from bench import gen
from bench.procs import (
    Pinning,
    Server,
    cpu_seconds,
    free_port,
    memory_kb,
    start_server,
    strace_supports_delay,
)

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
CACHE = BENCH_DIR / ".cache"
HMAC_ENV = "BENCH_SECRET"
ED25519_ENV = "BENCH_PUBKEY"


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    server: str  # b0 | b1 | receiver
    kind: str = "unique"  # request kind: unique | dup | mix
    provider: str = gen.PROVIDER_HMAC
    db: str = "empty"  # empty | pool | stored | backlog
    slow: bool = False
    title: str = ""
    stage: str = ""  # run bench.stages with this stage instead of the whole receiver


FAST = (
    Scenario("B0", "b0", title="B0: aiohttp no-op (the ceiling)"),
    Scenario("B1", "b1", title="B1: naive HMAC + one commit per request"),
    Scenario("unique", "receiver", title="receiver: unique events"),
    Scenario("dup", "receiver", kind="dup", db="pool", title="receiver: duplicates only"),
    Scenario("mix", "receiver", kind="mix", db="pool", title="receiver: 50/50 new/duplicate"),
    Scenario(
        "ed25519",
        "receiver",
        provider=gen.PROVIDER_ED25519,
        title="receiver: unique, v1a Ed25519",
    ),
    Scenario("stored", "receiver", db="stored", title="receiver: unique, DB with N stored"),
    Scenario(
        "backlog",
        "receiver",
        db="backlog",
        title="receiver: unique, B queued jobs and a slow handler working them",
    ),
)
# The CPU budget of a unique event: the receiver answering right after each ingest phase.
STAGES = tuple(
    Scenario(f"stage-{stage}", "receiver", stage=stage, title=f"stage: {title}")
    for stage, title in (
        ("framework", "body read, fixed answer"),
        ("capture", "+ request captured"),
        ("verify", "+ signature, parse, key"),
        ("store", "+ group commit"),
    )
)
SLOW = tuple(
    replace(s, name=f"{s.name}-slow", slow=True, title=f"{s.title}, fsync +2 ms")
    for s in FAST
    if s.server != "b0"
)


@dataclass
class Options:
    mode: str = "full"
    rounds: int = 3
    duration_s: float = 8.0
    warmup_s: float = 1.0
    soak_s: float = 180.0
    soak_segment_s: float = 20.0
    connections: int = 64
    threads: int = 2
    load: str = "wrk"
    stored_events: int = 1_000_000
    pool_size: int = 20_000
    backlog_jobs: int = 100_000
    handler_delay_s: float = 1.0
    fsync_delay_us: int = 2000
    with_slow: bool = True
    with_stages: bool = True
    only: tuple[str, ...] = ()
    profile: bool = False
    keep: bool = False
    out: Path = BENCH_DIR / "results"
    install: bool = True
    batch_max: int | None = None
    search_index: bool = True  # storage.search_index
    # The drain's handler is a no-op: the worker, not the downstream, is what is measured, so
    # it may run more at once than the default of 8 (a setting users raise the same way).
    worker_concurrency: int = 32

    @classmethod
    def preset(cls, mode: str) -> Options:
        if mode == "quick":
            return cls(mode="quick", rounds=2, duration_s=3.0, soak_s=20.0, soak_segment_s=10.0)
        if mode == "tiny":
            return cls(
                mode="tiny",
                rounds=1,
                duration_s=0.4,
                warmup_s=0.0,
                soak_s=1.0,
                soak_segment_s=0.5,
                connections=8,
                load="python",
                stored_events=2_000,
                pool_size=200,
                backlog_jobs=200,
                install=False,
            )
        return cls()


# ----------------------------------------------------------------------------- tools


def ensure_tools(opts: Options) -> dict[str, str]:
    """Install Debian's wrk and strace when missing (the real run only); report versions."""
    wanted = []
    if opts.load == "wrk" and shutil.which("wrk") is None:
        wanted.append("wrk")
    if opts.with_slow and shutil.which("strace") is None:
        wanted.append("strace")
    if wanted and opts.install:
        print(f"[bench] installing {' '.join(wanted)} with apt-get", flush=True)
        subprocess.run(["apt-get", "update", "-qq"], check=True, timeout=600)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", *wanted],
            check=True,
            timeout=600,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
    if opts.load == "wrk" and shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk), or use --load python")
    versions: dict[str, str] = {}
    if shutil.which("wrk"):
        out = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
        versions["wrk"] = (out.stdout or out.stderr).splitlines()[0].strip()
    if shutil.which("strace"):
        out = subprocess.run(["strace", "-V"], capture_output=True, text=True, check=False)
        versions["strace"] = out.stdout.splitlines()[0].strip()
    return versions


def machine_info() -> dict[str, Any]:
    model = "unknown"
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    import aiohttp
    import aiosqlite

    try:
        import uvloop

        uv = uvloop.__version__
    except ImportError:
        uv = "not installed"
    fs = subprocess.run(
        ["df", "-T", str(CACHE)], capture_output=True, text=True, check=False
    ).stdout.splitlines()
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "aiosqlite": aiosqlite.__version__,
        "uvloop": uv,
        "sqlite": sqlite3.sqlite_version,
        "filesystem": fs[-1].split()[1] if len(fs) > 1 else "unknown",
    }


# ----------------------------------------------------------------------------- the run


@dataclass
class Run:
    """State of one benchmark job."""

    opts: Options
    work: Path
    pinning: Pinning
    env: dict[str, str]
    signers: dict[str, gen.Signer]
    slow_ok: bool
    results: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    counter: int = 0
    # Servers a scenario needs beside the one measured (the backlog's slow handler target).
    helpers: list[Server] = field(default_factory=list)

    def next_name(self, base: str) -> str:
        self.counter += 1
        return f"{self.counter:03d}-{base}"

    def b0_rate(self) -> float | None:
        rates = [r["rps"] for r in self.results.get("B0", []) if r.get("rps")]
        return rates[-1] if rates else None


def _receiver_config(
    run: Run,
    path: Path,
    *,
    port: int,
    db: Path,
    handler_url: str | None = None,
    worker_concurrency: int | None = None,
) -> Path:
    import yaml

    providers: dict[str, Any] = {
        gen.PROVIDER_HMAC: {"scheme": "standard-webhooks", "secret_envs": [HMAC_ENV]},
        gen.PROVIDER_ED25519: {"scheme": "standard-webhooks", "secret_envs": [ED25519_ENV]},
    }
    if handler_url is not None:
        providers[gen.PROVIDER_HMAC]["handler"] = {"kind": "http", "url": handler_url}
    storage: dict[str, Any] = {"path": str(db), "synchronous": "FULL"}
    if run.opts.batch_max is not None:
        storage["batch_max"] = run.opts.batch_max
    if not run.opts.search_index:
        storage["search_index"] = False
    doc = {
        "server": {"host": "127.0.0.1", "port": port},
        "admin": {"host": "127.0.0.1", "port": free_port()},
        "storage": storage,
        "logging": {"level": "info", "format": "json"},
        "providers": providers,
    }
    if worker_concurrency is not None:
        doc["worker"] = {"concurrency": worker_concurrency}
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def _remove_db(path: Path) -> None:
    """A database and everything SQLite and receiver keep beside it."""
    for suffix in ("", "-wal", "-shm", "-journal", ".lock"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _fresh_db(path: Path) -> Path:
    _remove_db(path)
    return path


def _seeded_copy(cached: Path, name: str, run: Run) -> Path:
    """A fresh copy of a cached seed for one run, flushed to disk before the server starts (so
    the kernel's write-back of the copy never competes with the measured fsyncs)."""
    copy = _fresh_db(run.work / f"{name}.db")
    shutil.copyfile(cached, copy)
    with copy.open("rb+") as f:
        os.fsync(f.fileno())
    return copy


def _seed_day() -> str:
    """Seeds expire like real events (a week on): a cached one is reused the day it was made."""
    return time.strftime("%Y%m%d")


def _stored_db(run: Run, name: str) -> Path:
    """A fresh copy of the big seeded database, so that every round starts from the same N
    stored events (reusing one copy made each round measure the rows the previous ones added)."""
    from receiver.store.migrations import SCHEMA_VERSION

    n = run.opts.stored_events
    cached = CACHE / f"stored-{n}-schema{SCHEMA_VERSION}-seed{gen.SEED_VERSION}-{_seed_day()}.db"
    if not cached.exists():
        print(f"[bench] seeding {n:,} stored events into {cached} (cached for later runs)")
        started = time.monotonic()
        tmp = cached.with_name(cached.name + ".tmp")
        gen.seeded_database(tmp, n)
        tmp.rename(cached)
        print(f"[bench] seeded in {time.monotonic() - started:.1f} s", flush=True)
    return _seeded_copy(cached, name, run)


def _backlog_db(run: Run, name: str) -> Path:
    """A fresh copy of a database holding ``backlog_jobs`` queued events (cached seed)."""
    from receiver.store.migrations import SCHEMA_VERSION

    n = run.opts.backlog_jobs
    cached = CACHE / f"backlog-{n}-schema{SCHEMA_VERSION}-seed{gen.SEED_VERSION}-{_seed_day()}.db"
    if not cached.exists():
        print(f"[bench] seeding {n:,} queued jobs into {cached} (cached for later runs)")
        tmp = cached.with_name(cached.name + ".tmp")
        gen.seeded_database(tmp, n, event_status="queued", job_status="queued")
        tmp.rename(cached)
    return _seeded_copy(cached, name, run)


def _slow_target(run: Run, name: str) -> str:
    """Start a downstream that takes ``handler_delay_s`` per call; return its URL."""
    port = free_port()
    target = start_server(
        f"{name}-target",
        [
            sys.executable,
            str(BENCH_DIR / "b0_noop.py"),
            "--port",
            str(port),
            "--delay-s",
            str(run.opts.handler_delay_s),
        ],
        port=port,
        pinning=Pinning(run.pinning.load_core, run.pinning.load_core),
        log_dir=run.work,
        env=run.env,
        cwd=REPO,
        health_path="/",
    )
    run.helpers.append(target)
    return f"http://127.0.0.1:{port}/hook"


def _db_for(run: Run, scn: Scenario, name: str) -> Path:
    if scn.db == "stored":
        return _stored_db(run, name)
    if scn.db == "backlog":
        return _backlog_db(run, name)
    path = _fresh_db(run.work / f"{name}.db")
    if scn.db == "pool":
        gen.seeded_database(path, run.opts.pool_size)
    return path


# A receiver's listeners open before its database (which may take a while: the key memory is
# warmed from it), so the load waits for /readyz; the baselines only have to answer at all.
_RECEIVER_READY: dict[str, Any] = {"health_path": "/readyz", "until_ok": True}


def _start(run: Run, scn: Scenario, name: str, db: Path, port: int) -> Server:
    delay = run.opts.fsync_delay_us if scn.slow else None
    py = sys.executable
    if scn.server == "b0":
        argv = [py, str(BENCH_DIR / "b0_noop.py"), "--port", str(port)]
    elif scn.server == "b1":
        argv = [py, str(BENCH_DIR / "b1_naive.py"), "--port", str(port), "--db", str(db)]
    else:
        handler_url = _slow_target(run, name) if scn.db == "backlog" else None
        cfg = _receiver_config(
            run, run.work / f"{name}.yaml", port=port, db=db, handler_url=handler_url
        )
        argv = [py, "-m", "receiver", "serve", "--config", str(cfg)]
        if scn.stage:
            argv = [py, "-m", "bench.stages", "--stage", scn.stage, "--config", str(cfg)]
    return start_server(
        name,
        argv,
        port=port,
        pinning=run.pinning,
        log_dir=run.work,
        env=run.env,
        cwd=REPO,
        fsync_delay_us=delay,
        **(_RECEIVER_READY if scn.server == "receiver" else {}),
    )


def _slice_size(run: Run, scn: Scenario, seconds: float) -> int:
    """Requests per thread: enough for the fastest plausible rate, so slices do not wrap."""
    guess = run.b0_rate() or (2_000.0 if run.opts.load == "python" else 25_000.0)
    same = "unique" if scn.name == "soak" else scn.name  # the soak is unique-event load
    previous = [r["rps"] for r in run.results.get(same, []) if r.get("rps")]
    if previous:
        guess = min(guess, 1.5 * max(previous))
    total = guess * 1.3 * seconds + 200
    return max(50, math.ceil(total / run.opts.threads))


def _run_load(
    run: Run, scn: Scenario, port: int, prefix: Path, seconds: float
) -> tuple[dict[str, Any], float]:
    """One load-generator run; returns its JSON summary and its own CPU seconds."""
    provider = scn.provider if scn.server == "receiver" else "bench"
    path = f"/webhooks/{provider}"
    if run.opts.load == "wrk":
        argv = [
            *run.pinning.load_prefix(),
            "wrk",
            f"-t{run.opts.threads}",
            f"-c{run.opts.connections}",
            f"-d{max(1, round(seconds))}s",
            "--latency",
            "--timeout",
            "10s",
            "-s",
            str(BENCH_DIR / "load.lua"),
            f"http://127.0.0.1:{port}",
        ]
        env = {**os.environ, "BENCH_REQS": str(prefix), "BENCH_PATH": path}
    else:
        argv = [
            *run.pinning.load_prefix(),
            sys.executable,
            "-m",
            "bench.pyload",
            "--url",
            f"http://127.0.0.1:{port}{path}",
            "--reqs",
            str(prefix),
            "--threads",
            str(run.opts.threads),
            "--connections",
            str(run.opts.connections),
            "--duration",
            str(seconds),
        ]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
    before = _children_cpu()
    popen = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=REPO
    )
    try:
        out, err = popen.communicate(timeout=seconds + 120)
    except subprocess.TimeoutExpired:
        popen.kill()
        out, err = popen.communicate(timeout=10)
        raise RuntimeError("the load generator did not finish in time") from None
    usage = _children_cpu() - before  # only the load generator was reaped meanwhile
    for line in out.decode(errors="replace").splitlines():
        if line.startswith("BENCH_JSON "):
            return json.loads(line.removeprefix("BENCH_JSON ")), usage
    raise RuntimeError(
        f"the load generator printed no result (exit {popen.returncode}): "
        f"{out.decode(errors='replace')[-500:]} {err.decode(errors='replace')[-500:]}"
    )


def _children_cpu() -> float:
    """CPU seconds of all reaped children so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _count_rows(scn: Scenario, db: Path) -> dict[str, int]:
    if scn.server == "b0" or not db.exists():
        return {}
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        if scn.server == "b1":
            return {"events": conn.execute("SELECT count(*) FROM events").fetchone()[0]}
        events, dups = conn.execute(
            "SELECT count(*), coalesce(sum(duplicate_count), 0) FROM events"
        ).fetchone()
        return {"events": events, "duplicates": dups}
    finally:
        conn.close()


def _gen(run: Run, scn: Scenario, prefix: Path, seconds: float) -> None:
    signer = run.signers[scn.provider if scn.server == "receiver" else gen.PROVIDER_HMAC]
    gen.write_slices(
        prefix,
        kind=scn.kind,
        threads=run.opts.threads,
        per_thread=_slice_size(run, scn, seconds),
        signer=signer,
        pool_size=run.opts.pool_size,
    )


def _cleanup_slices(prefix: Path, threads: int) -> None:
    for t in range(threads):
        prefix.with_name(f"{prefix.name}.{t}.tsv").unlink(missing_ok=True)


def run_scenario(run: Run, scn: Scenario, *, profile_to: Path | None = None) -> dict[str, Any]:
    """Start a fresh server, warm it up, measure one load run, stop it."""
    name = run.next_name(scn.name)
    db = _db_for(run, scn, name)
    rows_before = _count_rows(scn, db) if scn.db in ("stored", "backlog") else {}
    port = free_port()
    server = _start(run, scn, name, db, port)
    opts = run.opts
    result: dict[str, Any] = {"scenario": scn.name}
    try:
        if opts.warmup_s > 0:
            warm = run.work / f"{name}-warm"
            _gen(run, scn, warm, opts.warmup_s)
            _run_load(run, scn, port, warm, opts.warmup_s)
            _cleanup_slices(warm, opts.threads)
        prefix = run.work / f"{name}-load"
        _gen(run, scn, prefix, opts.duration_s)
        spy = _start_profiler(server.pid, opts.duration_s, profile_to) if profile_to else None
        cpu0, fsync0, t0 = cpu_seconds(server.pid), server.fsyncs(), time.monotonic()
        load, load_cpu = _run_load(run, scn, port, prefix, opts.duration_s)
        cpu1, fsync1, t1 = cpu_seconds(server.pid), server.fsyncs(), time.monotonic()
        mem = memory_kb(server.pid)
        if spy is not None:
            spy.wait(timeout=60)
        _cleanup_slices(prefix, opts.threads)
    finally:
        server.stop()
        while run.helpers:
            run.helpers.pop().stop()
    requests = int(load["requests"])
    errors = load["errors"]
    rps = requests / load["duration_s"] if load["duration_s"] else 0.0
    result.update(
        rps=rps,
        requests=requests,
        latency_ms=load["latency_ms"],
        cpu_s_per_1k=(cpu1 - cpu0) / requests * 1000 if requests else None,
        server_cpu_util=(cpu1 - cpu0) / (t1 - t0),
        load_cpu_util=load_cpu / (t1 - t0),
        peak_rss_mb=mem.get("VmHWM", 0) / 1024,
        errors=errors,
        wraps=load["wraps"],
        fsyncs_per_1k=((fsync1 - fsync0) / requests * 1000) if scn.slow and requests else None,
    )
    rows = _count_rows(scn, db)
    if rows_before:
        rows = {k: v - rows_before.get(k, 0) for k, v in rows.items()}
    result["rows_added"] = rows
    problems = []
    if sum(errors.values()):
        problems.append(f"errors {errors}")
    stores = scn.stage in ("", "store")  # the earlier stages answer before storing
    # Repeated requests matter only where they would be stored (as duplicates, not new).
    if load["wraps"] and scn.kind != "dup" and scn.server != "b0" and stores:
        problems.append(f"request slices wrapped {load['wraps']}x: not all unique")
    if scn.server != "b0" and scn.kind == "unique" and stores and rows["events"] < requests:
        problems.append(f"only {rows['events']} rows for {requests} acknowledged requests")
    result["problems"] = problems
    _remove_db(db)  # every run has its own database (or copy of a seed)
    if server.strace_log is not None:
        server.strace_log.unlink(missing_ok=True)
    return result


def _start_profiler(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    if shutil.which("py-spy") is None:
        print("[bench] py-spy not found (pip install py-spy): no profile", flush=True)
        return None
    return subprocess.Popen(
        [
            "py-spy",
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(max(1, int(seconds))),
            "--rate",
            "1000",
            "--nonblocking",
            "--format",
            "raw",
            "-o",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


# ----------------------------------------------------------------------------- soak


def run_soak(run: Run) -> dict[str, Any]:
    """Unique events for ``soak_s`` seconds against one receiver; sample RSS and WAL size."""
    opts = run.opts
    scn = Scenario("soak", "receiver")
    name = run.next_name("soak")
    db = _fresh_db(run.work / f"{name}.db")
    port = free_port()
    server = _start(run, scn, name, db, port)
    samples: list[tuple[float, int, int]] = []
    stop = threading.Event()
    started = time.monotonic()
    interval = max(0.1, min(2.0, opts.soak_s / 60))

    def sample() -> None:
        while not stop.is_set():
            try:
                rss = memory_kb(server.pid).get("VmRSS", 0)
            except OSError:
                return
            wal = Path(f"{db}-wal")
            size = wal.stat().st_size if wal.exists() else 0
            samples.append((round(time.monotonic() - started, 2), rss, size))
            stop.wait(interval)

    sampler = threading.Thread(target=sample, name="soak-sampler", daemon=True)
    sampler.start()
    requests = 0
    errors = 0
    segments = 0
    try:
        deadline = started + opts.soak_s
        while time.monotonic() < deadline and segments < 10_000:
            seconds = max(0.3, min(opts.soak_segment_s, deadline - time.monotonic()))
            prefix = run.work / f"{name}-{segments}"
            _gen(run, scn, prefix, seconds)
            load, _ = _run_load(run, scn, port, prefix, seconds)
            _cleanup_slices(prefix, opts.threads)
            requests += int(load["requests"])
            errors += sum(load["errors"].values())
            segments += 1
        elapsed = time.monotonic() - started
        peak = memory_kb(server.pid).get("VmHWM", 0)
    finally:
        stop.set()
        sampler.join(timeout=5)
        server.stop()
    rows = _count_rows(scn, db)
    _remove_db(db)
    return _soak_summary(samples, requests, errors, elapsed, segments, peak, rows)


def _soak_summary(
    samples: Sequence[tuple[float, int, int]],
    requests: int,
    errors: int,
    elapsed: float,
    segments: int,
    peak_kb: int,
    rows: dict[str, int],
) -> dict[str, Any]:
    n = len(samples)
    quarter = max(1, n // 4)
    rss = [s[1] / 1024 for s in samples]
    wal = [s[2] / 2**20 for s in samples]
    early_rss = max(rss[quarter : 2 * quarter] or rss[:1] or [0.0])
    late_rss = max(rss[-quarter:] or [0.0])
    early_wal = max(wal[: 2 * quarter] or [0.0])
    late_wal = max(wal[-quarter:] or [0.0])
    early_wal_typical = statistics.median(wal[: 2 * quarter] or [0.0])
    late_wal_typical = statistics.median(wal[-quarter:] or [0.0])
    # Flat: the last quarter grows by at most 10 % (+4 MB for RSS, +1 MB for WAL) over the
    # second quarter (RSS, after warm-up: its high mark) or the first half (WAL: its typical
    # size, the median; one checkpoint that finishes late is a single sample over 4 MiB, cut
    # back by journal_size_limit, while a WAL that really grows raises every later sample).
    rss_flat = late_rss <= early_rss * 1.10 + 4
    wal_flat = late_wal_typical <= early_wal_typical * 1.10 + 1
    step = max(1, n // 40)
    return {
        "seconds": round(elapsed, 1),
        "segments": segments,
        "requests": requests,
        "rps": requests / elapsed if elapsed else 0.0,
        "errors": errors,
        "rows": rows,
        "peak_rss_mb": peak_kb / 1024,
        "rss_mb": {"second_quarter_max": early_rss, "last_quarter_max": late_rss},
        "wal_mb": {
            "first_half_max": early_wal,
            "last_quarter_max": late_wal,
            "first_half_median": early_wal_typical,
            "last_quarter_median": late_wal_typical,
            "max": max(wal or [0.0]),
        },
        "rss_flat": rss_flat,
        "wal_flat": wal_flat,
        "samples": [
            {"t": s[0], "rss_mb": round(s[1] / 1024, 1), "wal_mb": round(s[2] / 2**20, 2)}
            for s in samples[::step]
        ],
    }


# ----------------------------------------------------------------------------- worker


def run_worker_drain(run: Run, ingest_rps: float | None) -> dict[str, Any]:
    """Events/s moving from queued to succeeded with an http handler to the no-op server."""
    if not (REPO / "receiver" / "worker.py").exists():
        return {"measured": False, "reason": "receiver/worker.py does not exist yet"}
    opts = run.opts
    n = int(min(200_000, max(500, (ingest_rps or 1000) * opts.duration_s)))
    name = run.next_name("worker")
    db = _fresh_db(run.work / f"{name}.db")
    gen.seeded_database(db, n, event_status="queued", job_status="queued")
    target_port = free_port()
    target = start_server(
        f"{name}-target",
        [sys.executable, str(BENCH_DIR / "b0_noop.py"), "--port", str(target_port)],
        port=target_port,
        pinning=Pinning(run.pinning.load_core, run.pinning.load_core),
        log_dir=run.work,
        env=run.env,
        cwd=REPO,
        health_path="/",
    )
    port = free_port()
    cfg = _receiver_config(
        run,
        run.work / f"{name}.yaml",
        port=port,
        db=db,
        handler_url=f"http://127.0.0.1:{target_port}/hook",
        worker_concurrency=opts.worker_concurrency,
    )
    server = None
    try:
        server = start_server(
            name,
            [sys.executable, "-m", "receiver", "serve", "--config", str(cfg)],
            port=port,
            pinning=run.pinning,
            log_dir=run.work,
            env=run.env,
            cwd=REPO,
            **_RECEIVER_READY,
        )
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            first: tuple[float, int] | None = None
            last = (time.monotonic(), 0)
            deadline = time.monotonic() + max(30.0, opts.duration_s * 6)
            cpu0 = cpu_seconds(server.pid)
            while time.monotonic() < deadline:
                done = conn.execute(
                    "SELECT count(*) FROM jobs WHERE status = 'succeeded'"
                ).fetchone()[0]
                now = time.monotonic()
                if first is None and done > 0:
                    first = (now, done)
                last = (now, done)
                if done >= n:
                    break
                time.sleep(0.1)
            cpu = cpu_seconds(server.pid) - cpu0
        finally:
            conn.close()
        rss = memory_kb(server.pid).get("VmHWM", 0) / 1024
    finally:
        if server is not None:
            server.stop()
        target.stop()
    if first is None or last[0] <= first[0]:
        return {"measured": False, "reason": f"no progress: {last[1]} of {n} jobs succeeded"}
    rate = (last[1] - first[1]) / (last[0] - first[0])
    return {
        "measured": True,
        "concurrency": opts.worker_concurrency,
        "events": n,
        "succeeded": last[1],
        "rps": rate,
        "cpu_s_per_1k": cpu / last[1] * 1000 if last[1] else None,
        "peak_rss_mb": rss,
        "vs_unique_ingest": rate / ingest_rps if ingest_rps else None,
    }


# ----------------------------------------------------------------------------- report


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summarise(results: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    b0 = [r["rps"] for r in results.get("B0", [])]
    b0_med = _median(b0)
    for name, rounds in results.items():
        rps = [r["rps"] for r in rounds]

        def med(
            getter: Callable[[dict[str, Any]], float | None],
            rounds: list[dict[str, Any]] = rounds,
        ) -> float | None:
            values = [v for v in (getter(r) for r in rounds) if v is not None]
            return _median(values) if values else None

        out[name] = {
            "rounds": len(rounds),
            "rps_median": _median(rps),
            "rps_min": min(rps),
            "rps_max": max(rps),
            "ratio_to_b0": _median(rps) / b0_med if b0 and b0_med else None,
            "p50_ms": med(lambda r: r["latency_ms"]["p50"]),
            "p99_ms": med(lambda r: r["latency_ms"]["p99"]),
            "p999_ms": med(lambda r: r["latency_ms"]["p999"]),
            "cpu_s_per_1k": med(lambda r: r["cpu_s_per_1k"]),
            "server_cpu_util": med(lambda r: r["server_cpu_util"]),
            "load_cpu_util": med(lambda r: r["load_cpu_util"]),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in rounds),
            "fsyncs_per_1k": med(lambda r: r["fsyncs_per_1k"]),
            "problems": sorted({p for r in rounds for p in r["problems"]}),
        }
    return out


def goals(
    summary: dict[str, dict[str, Any]], soak: dict[str, Any] | None, worker: dict[str, Any]
) -> list[dict[str, Any]]:
    def ratio(name: str) -> float | None:
        return summary.get(name, {}).get("ratio_to_b0")

    def rps(name: str) -> float | None:
        return summary.get(name, {}).get("rps_median")

    def row(goal: str, value: float | None, target: float, fmt: str, note: str = "") -> dict:
        met = None if value is None else value >= target
        shown = "not measured" if value is None else fmt.format(value)
        return {"goal": goal, "value": value, "shown": shown, "met": met, "note": note}

    rows = [
        row("unique events, synchronous=FULL >= 75 % of B0", ratio("unique"), 0.75, "{:.0%}"),
    ]
    b1_slow = ratio("B1-slow")
    rows.append(
        row(
            "unique events, fsync +2 ms >= 60 % of B0",
            ratio("unique-slow"),
            0.60,
            "{:.0%}",
            note=f"B1 with fsync +2 ms: {b1_slow:.1%} of B0" if b1_slow is not None else "",
        )
    )
    rows.append(row("duplicates only >= 85 % of B0", ratio("dup"), 0.85, "{:.0%}"))
    stored, unique = rps("stored"), rps("unique")
    rows.append(
        row(
            "N stored >= 90 % of the empty-database figure",
            stored / unique if stored and unique else None,
            0.90,
            "{:.0%}",
        )
    )
    backlog = rps("backlog")
    rows.append(
        row(
            "B queued jobs + a slow handler >= 90 % of unique-event ingest",
            backlog / unique if backlog and unique else None,
            0.90,
            "{:.0%}",
        )
    )
    p99, b0_p99 = summary.get("unique", {}).get("p99_ms"), summary.get("B0", {}).get("p99_ms")
    p99_ratio = p99 / b0_p99 if p99 and b0_p99 else None
    rows.append(
        {
            "goal": "p99 ack latency <= 2x B0's p99 (unique events)",
            "value": p99_ratio,
            "shown": "not measured"
            if p99_ratio is None
            else f"{p99_ratio:.1f}x ({p99:.1f} ms vs {b0_p99:.1f} ms)",
            "met": None if p99_ratio is None else p99_ratio <= 2.0,
            "note": "",
        }
    )
    if worker.get("measured"):
        rows.append(
            row(
                "worker drains a no-op handler faster than unique ingest",
                worker.get("vs_unique_ingest"),
                1.0,
                "{:.2f}x",
                note=f"{worker['rps']:.0f} events/s",
            )
        )
    else:
        rows.append(
            {
                "goal": "worker drains a no-op handler faster than unique ingest",
                "value": None,
                "shown": "not measured",
                "met": None,
                "note": worker.get("reason", ""),
            }
        )
    peak = max(
        [s["peak_rss_mb"] for s in summary.values()] + ([soak["peak_rss_mb"]] if soak else [])
    )
    flat = bool(soak and soak["rss_flat"] and soak["wal_flat"])
    rows.append(
        {
            "goal": "peak RSS <= 200 MB and flat over the soak",
            "value": peak,
            "shown": f"{peak:.0f} MB; soak "
            + ("flat" if flat else "NOT flat" if soak else "not run"),
            "met": peak <= 200 and flat if soak else None,
            "note": "",
        }
    )
    return rows


def cpu_budget(summary: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """CPU µs per unique event spent in each ingest phase: the differences between consecutive
    stages, the full receiver last. Empty when the stages or ``unique`` did not run."""
    steps = [
        ("stage-framework", "aiohttp: parse the request, read the body, send a fixed answer"),
        ("stage-capture", "capture: headers, URL, query into an InboundRequest"),
        ("stage-verify", "verify the signature, parse the JSON, derive the key"),
        ("stage-store", "group commit: insert event and job, wait for COMMIT"),
        ("unique", "answer JSON, metrics, the request's log line"),
    ]
    cpu = {name: summary.get(name, {}).get("cpu_s_per_1k") for name, _ in steps}
    if any(value is None for value in cpu.values()):
        return []
    rows: list[dict[str, Any]] = []
    previous = 0.0
    for name, phase in steps:
        total_us = float(cpu[name] or 0.0) * 1000
        rows.append(
            {"stage": name, "phase": phase, "us": total_us - previous, "total_us": total_us}
        )
        previous = total_us
    return rows


def _fmt(value: float | None, spec: str) -> str:
    return (
        "-"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else format(value, spec)
    )


def render_markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    o = report["options"]
    lines = [
        f"# receiver benchmark ({o['mode']})",
        "",
        f"- Machine: {m['nproc']} CPUs, {m['cpu_model']}, Linux {m['kernel']}, "
        f"{m['filesystem']}; Python {m['python']}, aiohttp {m['aiohttp']}, "
        f"uvloop {m['uvloop']}, SQLite {m['sqlite']}; {report['tools']}",
        f"- Server on core {report['pinning']['server_core']}, load generator "
        f"({o['load']}, {o['threads']} threads, {o['connections']} connections) on core "
        f"{report['pinning']['load_core']}; {o['rounds']} interleaved rounds of "
        f"{o['duration_s']:g} s (+{o['warmup_s']:g} s warm-up) per scenario; "
        f"N stored = {o['stored_events']:,}; B queued = {o['backlog_jobs']:,} "
        f"(handler {o['handler_delay_s']:g} s per call); fsync delay {o['fsync_delay_us']} µs.",
        f"- Started {report['started']}, took {report['elapsed_s'] / 60:.1f} min.",
        "",
        "| scenario | req/s median [min-max] | vs B0 | p50 ms | p99 ms | p99.9 ms "
        "| CPU s / 1k req | server CPU | peak RSS MB | fsyncs / 1k req |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in report["summary"].items():
        title = report["titles"].get(name, name)
        lines.append(
            f"| {title} | {s['rps_median']:,.0f} [{s['rps_min']:,.0f}-{s['rps_max']:,.0f}] "
            f"| {_fmt(s['ratio_to_b0'], '.0%')} | {_fmt(s['p50_ms'], '.2f')} "
            f"| {_fmt(s['p99_ms'], '.2f')} | {_fmt(s['p999_ms'], '.2f')} "
            f"| {_fmt(s['cpu_s_per_1k'], '.3f')} | {_fmt(s['server_cpu_util'], '.0%')} "
            f"| {s['peak_rss_mb']:.0f} | {_fmt(s['fsyncs_per_1k'], '.1f')} |"
        )
    problems = [(n, p) for n, s in report["summary"].items() for p in s["problems"]]
    if problems:
        lines += ["", "Problems:"] + [f"- {n}: {p}" for n, p in problems]
    budget = report.get("budget") or []
    if budget:
        lines += [
            "",
            "## Where a unique event's CPU goes",
            "",
            "The receiver answering right after each ingest phase (`bench/stages.py`), same load;",
            "each row is the CPU per request it adds (all threads of the server process).",
            "",
            "| phase | CPU µs / request | running total |",
            "|---|---|---|",
        ]
        lines += [f"| {b['phase']} | {b['us']:.0f} | {b['total_us']:.0f} |" for b in budget]
    lines += ["", "## Goals", ""]
    lines += ["| goal | result | met | note |", "|---|---|---|---|"]
    for g in report["goals"]:
        met = "n/a" if g["met"] is None else ("yes" if g["met"] else "**no**")
        lines.append(f"| {g['goal']} | {g['shown']} | {met} | {g['note']} |")
    soak = report.get("soak")
    if soak:
        lines += [
            "",
            "## Soak",
            "",
            f"{soak['seconds']:g} s of unique events in {soak['segments']} segments, "
            f"{soak['requests']:,} requests ({soak['rps']:,.0f}/s), {soak['errors']} errors, "
            f"{soak['rows'].get('events', 0):,} rows stored.",
            f"RSS: second-quarter max {soak['rss_mb']['second_quarter_max']:.1f} MB, "
            f"last-quarter max {soak['rss_mb']['last_quarter_max']:.1f} MB, peak "
            f"{soak['peak_rss_mb']:.1f} MB ({'flat' if soak['rss_flat'] else 'GROWING'}). "
            f"WAL: first-half median {soak['wal_mb']['first_half_median']:.1f} MB "
            f"(max {soak['wal_mb']['first_half_max']:.1f}), last-quarter median "
            f"{soak['wal_mb']['last_quarter_median']:.1f} MB "
            f"(max {soak['wal_mb']['last_quarter_max']:.1f}) "
            f"({'flat' if soak['wal_flat'] else 'GROWING'}).",
        ]
    w = report["worker"]
    lines += ["", "## Worker drain", ""]
    if w.get("measured"):
        lines.append(
            f"{w['succeeded']:,} of {w['events']:,} queued events to succeeded at "
            f"{w['rps']:,.0f} events/s ({_fmt(w['vs_unique_ingest'], '.2f')}x unique ingest), "
            f"{_fmt(w['cpu_s_per_1k'], '.3f')} CPU s / 1k events, with `worker.concurrency: "
            f"{w.get('concurrency', 8)}` (the default is 8; the no-op handler makes the worker, "
            "not the downstream, the limit)."
        )
    else:
        lines.append(f"Not measured: {w.get('reason')}.")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> Options:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="short rounds and a short soak")
    mode.add_argument("--tiny", action="store_true", help="seconds; Python load generator")
    p.add_argument("--rounds", type=int)
    p.add_argument("--duration", type=float, help="seconds of load per scenario and round")
    p.add_argument("--warmup", type=float, help="seconds of warm-up load before each run")
    p.add_argument("--soak", type=float, help="soak seconds (0: no soak)")
    p.add_argument("--connections", type=int)
    p.add_argument("--threads", type=int, help="load generator threads (request slices)")
    p.add_argument("--load", choices=("wrk", "python"))
    p.add_argument("--stored", type=int, help="events already stored in the 'stored' scenario")
    p.add_argument("--no-slow", action="store_true", help="skip the fsync +2 ms scenarios")
    p.add_argument("--only", help="comma-separated scenario names (B0 always runs)")
    p.add_argument("--no-stages", action="store_true", help="skip the CPU-budget stages")
    p.add_argument("--batch-max", type=int, help="receiver storage.batch_max")
    p.add_argument(
        "--no-search-index", action="store_true", help="receiver storage.search_index: false"
    )
    p.add_argument(
        "--worker-concurrency", type=int, help="worker.concurrency of the drain (default 32)"
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="py-spy profile of each receiver scenario (last round)",
    )
    p.add_argument("--keep", action="store_true", help="keep the scratch directory")
    p.add_argument("--out", type=Path, help="results directory (default bench/results)")
    a = p.parse_args(argv)
    opts = Options.preset("quick" if a.quick else "tiny" if a.tiny else "full")
    for attr, value in (
        ("rounds", a.rounds),
        ("duration_s", a.duration),
        ("warmup_s", a.warmup),
        ("soak_s", a.soak),
        ("connections", a.connections),
        ("threads", a.threads),
        ("load", a.load),
        ("stored_events", a.stored),
        ("batch_max", a.batch_max),
        ("worker_concurrency", a.worker_concurrency),
        ("out", a.out),
    ):
        if value is not None:
            setattr(opts, attr, value)
    opts.with_slow = not a.no_slow
    opts.with_stages = not a.no_stages
    opts.only = tuple(s.strip() for s in a.only.split(",")) if a.only else ()
    opts.profile = a.profile
    opts.search_index = not a.no_search_index
    opts.keep = a.keep
    if opts.rounds < 1 or opts.duration_s <= 0 or opts.threads < 1 or opts.connections < 1:
        p.error("rounds, duration, threads and connections must be positive")
    if opts.connections < opts.threads:
        p.error("need at least one connection per thread")
    return opts


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    started = time.time()
    tools = ensure_tools(opts)
    slow_ok = opts.with_slow and strace_supports_delay()
    if opts.with_slow and not slow_ok:
        print("[bench] strace cannot delay fsync here: slow-disk scenarios skipped", flush=True)
    pinning = Pinning.detect()
    if pinning.load_core is not None:
        os.sched_setaffinity(0, {pinning.load_core})  # the harness stays off the server core
    scenarios = [s for s in FAST if not opts.only or s.name in opts.only or s.name == "B0"]
    if opts.with_stages:
        scenarios += [s for s in STAGES if not opts.only or s.name in opts.only]
    if slow_ok:
        slow = [s for s in SLOW if not opts.only or s.name in opts.only]
        if opts.mode == "tiny" and not opts.only:
            slow = [s for s in slow if s.name in ("B1-slow", "unique-slow")]
        scenarios += slow
    CACHE.mkdir(parents=True, exist_ok=True)
    work = CACHE / f"run-{os.getpid()}"
    work.mkdir(parents=True, exist_ok=True)
    private, public = gen.make_ed25519_key()
    hmac_secret = gen.make_hmac_secret()
    run = Run(
        opts=opts,
        work=work,
        pinning=pinning,
        env={
            **os.environ,
            HMAC_ENV: hmac_secret,
            ED25519_ENV: public,
            "PYTHONPATH": str(REPO),
        },
        signers={
            gen.PROVIDER_HMAC: gen.Signer(hmac_secret=hmac_secret),
            gen.PROVIDER_ED25519: gen.Signer(ed25519_key=private),
        },
        slow_ok=slow_ok,
    )
    try:
        for r in range(opts.rounds):
            for scn in scenarios:
                profile_to = None
                if opts.profile and scn.server == "receiver" and r == opts.rounds - 1:
                    opts.out.mkdir(parents=True, exist_ok=True)
                    profile_to = opts.out / f"profile-{scn.name}.txt"
                try:
                    res = run_scenario(run, scn, profile_to=profile_to)
                except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
                    print(f"[bench] {scn.name} failed: {exc}", flush=True)
                    continue
                res["round"] = r
                run.results.setdefault(scn.name, []).append(res)
                print(
                    f"[bench] round {r + 1}/{opts.rounds} {scn.name:<12} "
                    f"{res['rps']:>9,.0f} req/s  p99 {res['latency_ms']['p99']:7.2f} ms  "
                    f"cpu/1k {res['cpu_s_per_1k'] or 0:.3f} s  rss {res['peak_rss_mb']:.0f} MB"
                    + (f"  PROBLEMS {res['problems']}" if res["problems"] else ""),
                    flush=True,
                )
        summary = summarise(run.results)
        unique_rps = summary.get("unique", {}).get("rps_median")
        worker = run_worker_drain(run, unique_rps)
        print(f"[bench] worker drain: {worker}", flush=True)
        soak = run_soak(run) if opts.soak_s > 0 else None
        if soak:
            print(
                f"[bench] soak: {soak['rps']:,.0f} req/s, rss {soak['rss_mb']}, "
                f"wal {soak['wal_mb']}",
                flush=True,
            )
    finally:
        if not opts.keep:
            shutil.rmtree(work, ignore_errors=True)
    report = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)),
        "elapsed_s": time.time() - started,
        "machine": machine_info(),
        "tools": ", ".join(f"{v}" for v in tools.values()) or "no external tools",
        "pinning": asdict(pinning),
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opts).items()},
        "titles": {
            s.name: s.title.replace("N stored", f"{opts.stored_events:,} stored").replace(
                "B queued", f"{opts.backlog_jobs:,} queued"
            )
            for s in (*FAST, *STAGES, *SLOW)
        },
        "summary": summary,
        "budget": cpu_budget(summary),
        "goals": goals(summary, soak, worker),
        "soak": soak,
        "worker": worker,
        "rounds": run.results,
    }
    opts.out.mkdir(parents=True, exist_ok=True)
    (opts.out / "results.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    markdown = render_markdown(report)
    (opts.out / "results.md").write_text(markdown, encoding="utf-8")
    print(markdown)
    print(f"[bench] wrote {opts.out / 'results.md'} and {opts.out / 'results.json'}")
    return 0
