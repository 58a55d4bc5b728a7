"""One running receiver: store, ingest listener, admin listener (and the worker), with a clean
start and a clean stop. ``receiver serve`` builds one of these; so do the integration tests."""

from __future__ import annotations

__all__ = ["Receiver", "StartupError", "run_until_signalled"]

import asyncio
import gc
import os
import resource
import signal
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from aiohttp import web

from receiver.clock_steps import ClockWatch
from receiver.config import Config, serving_problems
from receiver.errors import StartupError
from receiver.ingest import IngestService
from receiver.instance_lock import InstanceLock
from receiver.logs import unfiltered_logger
from receiver.loop_lag import LoopLagWatch
from receiver.metrics import Metrics
from receiver.server.admin_auth import AdminTokens
from receiver.server.admin_routes import AdminServices
from receiver.server.app import build_admin_app, build_ingest_app
from receiver.server.connection_cap import cap_connections
from receiver.server.health_routes import Readiness
from receiver.server.ingest_routes import IngestLimits
from receiver.server.protocol_errors import JsonErrorHandler
from receiver.server.protocol_log import route_aiohttp_server_log
from receiver.store.jobs import JobQueue
from receiver.store.migrations import SCHEMA_VERSION
from receiver.store.retention import PurgeReport, PurgeTask, policies_of
from receiver.store.sqlite import SqliteStore
from receiver.worker import Worker

# Allocations between two young-generation collections (Python's default is 700).
_GC_YOUNG_THRESHOLD = 10_000
# How long tasks still running after shutdown get to end before they are left behind.
_LEFTOVER_GRACE_S = 1.0
# Header lines a request head may have (aiohttp's default is 128, 8 KiB each).
_MAX_HEADERS = 64
# Open connections on the admin listener: operators, dashboards, a scraper, probes.
_ADMIN_MAX_CONNECTIONS = 64
# Descriptors beyond the listeners' connections: the database, the worker's handler
# connections and commands, logs.
_SPARE_FILES = 256
# How far in the clock's future the newest stored event may be before a start says the clock
# was set back (a minute: another host's clock, a redelivery's own jitter, never a step).
_CLOCK_BEHIND_S = 60.0
# A stop's budget beyond worker.shutdown_timeout_s: the store's last writes and its closing.
_STOP_MARGIN_S = 2.0


def _file_bytes(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:  # no WAL yet, or the last connection removed it
        return 0


class Receiver:
    def __init__(
        self,
        config: Config,
        *,
        clock: Callable[[], float] = time.time,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.config = config
        self.environ = os.environ if environ is None else environ
        s = config.settings
        self.metrics = Metrics()
        self.metrics.show_providers(config.providers, config.handled_providers)
        # Steps of the real wall clock are watched (a test's injected clock moves by design):
        # the worker moves stored schedules after a step back, and retention never runs ahead
        # of real time after a step forward (receiver.clock_steps).
        is_wall_clock = clock is time.time
        self.store = SqliteStore(
            s.storage.path,
            clock=clock,
            busy_timeout_s=s.storage.busy_timeout_s,
            synchronous=s.storage.synchronous,
            batch_max=s.storage.batch_max,
            retry_after_s=s.storage.retry_after_s,
            search_index=s.storage.search_index,
            on_batch=self.metrics.batch_size.observe,
            handled_providers=config.handled_providers,
            retention_policies=policies_of(config.providers),
            retention_clock=ClockWatch().not_ahead if is_wall_clock else None,
        )
        db = self.store.db  # its WAL is named after the file a symlink points to
        self.metrics.wal_bytes.set_function(lambda: _file_bytes(db.wal_path))
        self.service = IngestService(config.providers, self.store, clock=clock)
        self.worker = Worker(
            JobQueue(self.store.db, on_dead=self.store.writer.recent.forget),
            s.worker,
            {name: provider.settings for name, provider in config.providers.items()},
            clock=clock,
            metrics=self.metrics,
            withheld_env=[v for v in (s.admin.token_env, s.admin.read_token_env) if v],
            clock_watch=ClockWatch() if is_wall_clock else None,
        )
        self.store.on_committed(self.worker.wake)
        self.readiness = Readiness(
            checks={
                "store": self.store.unwritable_reason,
                "worker": self.worker.not_running_reason,
            },
            needs_restart=lambda: self.store.db.lost is not None,
        )
        self.ingest_app = build_ingest_app(
            self.service,
            limits=IngestLimits(
                max_body_bytes=s.server.max_body_bytes,
                read_timeout_s=s.server.read_timeout_s,
                body_memory_bytes=s.server.body_memory_bytes,
            ),
            metrics=self.metrics,
            readiness=self.readiness,
            rejections=self.store.rejections,
        )
        self._admin_tokens = AdminTokens.from_env(s.admin, self.environ)
        self.admin_app = build_admin_app(
            metrics=self.metrics,
            readiness=self.readiness,
            admin=AdminServices(
                db=self.store.db,
                queries=self.store.queries,
                replayer=self.store.replayer,
                policies=policies_of(config.providers),
                clock=clock,
            ),
            tokens=self._admin_tokens,
        )
        self.store.rejections.on_dropped = self.metrics.rejection_journal_dropped.inc
        self.store.replayer.on_replayed = self._count_replays
        # Counted per committed batch: a purge that fails part-way removed what it removed.
        self.store.retention.on_progress = self._count_purge
        self.purger = PurgeTask(
            self.store.retention, on_failure=self.metrics.background_errors.labels("retention").inc
        )
        self.loop_lag = LoopLagWatch(self.metrics.loop_lag.set)
        self._instance = InstanceLock(s.storage.path)
        # As the log shows it: a relative storage.path depends on the working directory.
        self._database_shown = os.path.abspath(s.storage.path)
        self._runners: list[web.AppRunner] = []
        self.ingest_port: int | None = None
        self.admin_port: int | None = None
        self._has_started = False  # receiver_started was logged: a stop says so too

    def _count_purge(self, report: PurgeReport) -> None:
        self.metrics.purged_payloads.inc(report.payloads_purged)
        self.metrics.purged_events.inc(report.events_deleted)
        self.metrics.purged_rejections.inc(report.rejections_deleted)

    def _count_replays(self, actor: str, count: int) -> None:
        self.metrics.replays.labels(actor).inc(count)

    def _check_admin_exposure(self) -> None:
        problems = serving_problems(self.config.settings.admin, self.environ)
        if problems:  # the one check check-config runs too (an exposed admin API)
            raise StartupError("; ".join(str(problem) for problem in problems))

    async def _start_site(self, app: web.Application, section: str, host: str, port: int) -> int:
        runner = web.AppRunner(
            app,
            access_log=None,
            shutdown_timeout=self.config.settings.worker.shutdown_timeout_s,
            # Raw bytes are the truth: never inflate a Content-Encoding before verifying.
            auto_decompress=False,
            # After a 413/408 do not keep reading a hostile body for long.
            lingering_time=1.0,
            # aiohttp closes a connection idle this long, also one that never finished its
            # request head (its default is an hour: a slow-header client would hold a socket).
            keepalive_timeout=self.config.settings.server.idle_timeout_s,
            # aiohttp allows 128 header lines of 8 KiB each, kept until the head is complete:
            # a webhook carries a few dozen (more pass through proxies).
            max_headers=_MAX_HEADERS,
        )
        await runner.setup()
        self._runners.append(runner)
        cap_connections(
            runner,
            listener=section,
            max_connections=self._max_connections(section),
            on_refused=lambda listener: self.metrics.connections_refused.labels(listener).inc(),
            handler_class=JsonErrorHandler,  # aiohttp's parser refusals answered in JSON too
        )
        site = web.TCPSite(runner, host, port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:  # which setting to change, not only the system's words
            # asyncio's bind error repeats the address; a name lookup's (gaierror) errno is not
            # an errno, its text is the cause.
            errno = exc.errno or 0
            cause = os.strerror(errno) if errno > 0 else (exc.strerror or str(exc))
            raise StartupError(
                f"cannot listen on {section}.host:{section}.port ({host}:{port}): {cause}"
            ) from None
        # The bound address tells the real port when 0 (any free port) was asked for.
        return int(runner.addresses[0][1])

    def _max_connections(self, section: str) -> int:
        if section == "admin":
            return _ADMIN_MAX_CONNECTIONS
        return self.config.settings.server.max_connections

    def _raise_open_files_limit(self) -> None:
        """Let the soft open-files limit (often 1024) hold every connection the listeners
        admit, as far as the hard limit allows; say so when it cannot."""
        needed = self.config.settings.server.max_connections + _ADMIN_MAX_CONNECTIONS
        needed += self.config.settings.worker.concurrency + _SPARE_FILES
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and soft < needed:
            raised = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            if raised < needed:
                unfiltered_logger("receiver").warning(
                    "open_files_limit_low",
                    limit=raised,
                    needed=needed,
                    message="server.max_connections may run the process out of file "
                    "descriptors: lower it, or raise the hard open-files limit (ulimit -Hn)",
                )

    async def start(self) -> None:
        self._check_admin_exposure()
        self._raise_open_files_limit()
        # Malformed HTTP is refused before any route: counted with the other refusals.
        route_aiohttp_server_log(self.metrics.rejections.labels("", "http_protocol_error").inc)
        startup_log = unfiltered_logger("receiver")  # shown even with logging.level: error
        for warning in self.config.warnings:
            startup_log.warning("config_warning", message=warning)
        if self._admin_tokens.is_open:  # allowed on loopback only (checked above), yet say so
            startup_log.warning(
                "admin_api_open",
                message=(
                    "no admin token is set (admin.token_env): whoever reaches"
                    f" {self.config.settings.admin.host} can read every event and replay it"
                ),
            )
        self._instance.acquire()  # before the store: a second server must not migrate it
        s = self.config.settings
        ingest, admin = (s.server.host, s.server.port), (s.admin.host, s.admin.port)
        # Listening before the store opens: an upgrade's migration can take minutes, and
        # meanwhile /healthz says the process is alive (a liveness probe that found no
        # listener killed it mid-migration, and the next start began again), /readyz and
        # every delivery 503 (the provider retries). A port in use fails before migrating.
        self.ingest_port = await self._start_site(self.ingest_app, "server", *ingest)
        self.admin_port = await self._start_site(self.admin_app, "admin", *admin)
        await self.store.open()
        self.purger.start()
        self.loop_lag.start()
        await self.worker.start()
        database = self._database_shown
        if self.store.db.was_created:
            # Every key from before is unknown to a new file: a storage.path (or working
            # directory) that moved must not pass for a first start without a word.
            startup_log.info(
                "database_created",
                path=database,
                message="a new, empty database: no event stored before is known to it",
            )
        await self._warn_of_a_clock_behind_the_store(startup_log)
        # At any logging.level, as its stop is: a crash loop shows in the log as starts.
        startup_log.info(
            "receiver_started",
            ingest=f"{s.server.host}:{self.ingest_port}",
            admin=f"{s.admin.host}:{self.admin_port}",
            database=database,
            schema_version=SCHEMA_VERSION,
            search_index=await self.store.queries.has_fts_index(),  # False: q reads the bodies
            providers=sorted(self.config.providers),
        )
        self._has_started = True

    async def _warn_of_a_clock_behind_the_store(self, log: Any) -> None:
        """A clock set back while the server was stopped cannot be seen as a step (README
        "Clock steps"), but events stored in its future can: retries wait that much longer."""
        newest = await self.store.queries.newest_received_at()
        now = self.store.clock()
        if newest is not None and newest - now > _CLOCK_BEHIND_S:
            log.warning(
                "clock_behind_stored_events",
                behind_s=round(newest - now),
                message=(
                    "the newest stored event was received later than the clock now reads:"
                    " waiting retries and expiries come that much later; correct the clock"
                ),
            )

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish their commits, stop the worker (running
        jobs get ``shutdown_timeout_s``, then go back to the queue), close the store."""
        runners, self._runners = self._runners, []
        # Side by side: the listeners' grace and the running jobs' share one shutdown_timeout_s.
        await asyncio.gather(*(runner.cleanup() for runner in runners), self.worker.stop())
        await self.purger.stop()
        await self.loop_lag.stop()
        await self.store.close()
        self._instance.release()
        if self._has_started:  # a start that failed said why, and nothing else
            unfiltered_logger("receiver").info("receiver_stopped")
            self._has_started = False


def _settle_garbage_collector() -> None:
    """After start-up, move everything alive (modules, config, the warmed key memory) out of
    the cyclic collector's sight, so its full collections walk only what serving creates, and
    collect the young generation less often: a request's garbage is freed by reference counting
    anyway; the collector is only for cycles."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(_GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


def serve(receiver: Receiver, *, loop_factory: Callable[[], asyncio.AbstractEventLoop]) -> None:
    """Run ``receiver`` until SIGTERM or SIGINT, like ``asyncio.run`` except at the end: once
    the receiver has stopped (store closed), tasks still left are handler code given up on at
    its timeout that ignores cancellation. They get a second cancellation and one second, and
    are then left behind instead of awaited, so shutdown cannot hang on them."""
    loop = loop_factory()
    asyncio.set_event_loop(loop)
    try:
        try:
            loop.run_until_complete(run_until_signalled(receiver))
        except ShutdownOverdue as exc:
            # The store's threads are blocked in SQLite (they are not daemon threads): an
            # exit that waited for them would wait on the stuck disk or lock too. A start that
            # failed first says why, as it would have.
            if isinstance(exc.__context__, StartupError):
                print(f"error: {exc.__context__}", file=sys.stderr)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(1)
        leftovers = asyncio.all_tasks(loop)
        for task in leftovers:
            task.cancel()
        if leftovers:
            loop.run_until_complete(asyncio.wait(leftovers, timeout=_LEFTOVER_GRACE_S))
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        asyncio.set_event_loop(None)
        loop.close()


async def run_until_signalled(receiver: Receiver) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    received: list[str] = []

    def request_stop(sig: signal.Signals) -> None:
        received.append(sig.name)
        stop.set()

    # SIGHUP too: a closed terminal or a log rotation's `kill -HUP` ended the process at once,
    # leaving its handlers' jobs held until their leases ran out.
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, request_stop, sig)
    # Awaited inside the try: a start that fails half-way (a port in use, a database that
    # breaks at the first read) still closes what it opened, or the store's threads would keep
    # the process alive after it reported the error.
    starting = asyncio.ensure_future(receiver.start())
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            # A stop asked for while starting: an upgrade's migration can take minutes, past
            # an orchestrator's grace; it is rolled back and the start fails, saying so.
            unfiltered_logger("receiver").info(
                "shutdown_requested", signal=received[0], during="start"
            )
            await receiver.store.db.abandon_open()
            await starting  # raises, unless the database was open already
            return
        await starting
        _settle_garbage_collector()
        await stopping
        unfiltered_logger("receiver").info("shutdown_requested", signal=received[0])
    finally:
        stopping.cancel()
        await _stop_within_budget(receiver)


class ShutdownOverdue(Exception):
    """The stop did not end within its budget: storage is stuck (a lock another process
    holds, a frozen disk), and the store's threads wait on it."""


async def _stop_within_budget(receiver: Receiver) -> None:
    """Stop, within ``worker.shutdown_timeout_s`` and a margin for closing the store. Each
    write of the stop (releasing running jobs, the last duplicate counts) waits up to
    ``storage.busy_timeout_s`` on a stuck store, one after another: an orchestrator's grace
    ran out first and killed the process anyway. What was acknowledged is committed by then,
    and a job left running comes back after its lease, so giving up is safe."""
    budget_s = receiver.config.settings.worker.shutdown_timeout_s + _STOP_MARGIN_S
    try:
        async with asyncio.timeout(budget_s):
            await receiver.stop()
    except TimeoutError:
        unfiltered_logger("receiver").error(
            "shutdown_overdue",
            budget_s=budget_s,
            message=(
                "the store did not answer in time (a lock another process holds, a stuck"
                " disk): exiting without closing it; what was acknowledged is committed, and"
                " jobs left running come back after their lease"
            ),
        )
        raise ShutdownOverdue from None
