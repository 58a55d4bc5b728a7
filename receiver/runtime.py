"""One running receiver: store, ingest listener, admin listener (and the worker), with a clean
start and a clean stop. ``receiver serve`` builds one of these; so do the integration tests."""

from __future__ import annotations

__all__ = ["Receiver", "StartupError", "run_until_signalled"]

import asyncio
import ipaddress
import os
import signal
import time
from collections.abc import Callable, Mapping

import structlog
from aiohttp import web

from receiver.config import Config
from receiver.errors import ReceiverError
from receiver.ingest import IngestService
from receiver.metrics import Metrics
from receiver.server.app import build_admin_app, build_ingest_app
from receiver.server.health_routes import Readiness
from receiver.server.ingest_routes import IngestLimits
from receiver.store.sqlite import SqliteStore

log = structlog.get_logger("receiver")


class StartupError(ReceiverError):
    """The receiver refuses to start (for a reason that is not a config file problem)."""


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
        self.store = SqliteStore(
            s.storage.path,
            clock=clock,
            busy_timeout_s=s.storage.busy_timeout_s,
            synchronous=s.storage.synchronous,
            batch_max=s.storage.batch_max,
            retry_after_s=s.storage.retry_after_s,
            on_batch=self.metrics.batch_size.observe,
        )
        self.service = IngestService(config.providers, self.store, clock=clock)
        self.readiness = Readiness(checks={"store": self.store.check_writable})
        self.ingest_app = build_ingest_app(
            self.service,
            limits=IngestLimits(
                max_body_bytes=s.server.max_body_bytes, read_timeout_s=s.server.read_timeout_s
            ),
            metrics=self.metrics,
            readiness=self.readiness,
        )
        self.admin_app = build_admin_app(metrics=self.metrics, readiness=self.readiness)
        self._runners: list[web.AppRunner] = []
        self.ingest_port: int | None = None
        self.admin_port: int | None = None

    def _check_admin_exposure(self) -> None:
        admin = self.config.settings.admin
        if not _is_loopback(admin.host) and not self.environ.get(admin.token_env):
            raise StartupError(
                f"the admin listener is on {admin.host}, which is not a loopback address, and "
                f"{admin.token_env} is not set: set a token or bind admin to 127.0.0.1"
            )

    async def _start_site(self, app: web.Application, host: str, port: int) -> int:
        runner = web.AppRunner(
            app,
            access_log=None,
            shutdown_timeout=self.config.settings.worker.shutdown_timeout_s,
        )
        await runner.setup()
        self._runners.append(runner)
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
        server = site._server  # the bound socket tells the real port when 0 was asked for
        sockets = getattr(server, "sockets", None) or []
        return int(sockets[0].getsockname()[1]) if sockets else port

    async def start(self) -> None:
        self._check_admin_exposure()
        for warning in self.config.warnings:
            log.warning("config_warning", message=warning)
        await self.store.open()
        s = self.config.settings
        self.ingest_port = await self._start_site(self.ingest_app, s.server.host, s.server.port)
        self.admin_port = await self._start_site(self.admin_app, s.admin.host, s.admin.port)
        log.info(
            "receiver_started",
            ingest=f"{s.server.host}:{self.ingest_port}",
            admin=f"{s.admin.host}:{self.admin_port}",
            database=str(s.storage.path),
            providers=sorted(self.config.providers),
        )

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish their commits, close the store."""
        runners, self._runners = self._runners, []
        for runner in runners:
            await runner.cleanup()
        await self.store.close()
        log.info("receiver_stopped")


async def run_until_signalled(receiver: Receiver) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await receiver.start()
    try:
        await stop.wait()
        log.info("shutdown_requested")
    finally:
        await receiver.stop()
