"""Prometheus metrics, one registry per running receiver (so tests can build several)."""

from __future__ import annotations

__all__ = ["IngestMetrics", "Metrics"]

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from prometheus_client import (
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from receiver import __version__
from receiver.logs import dropped_lines

# No ``*_created`` series beside every counter and histogram: one more series per label set
# that dashboards and alerts do not use (the setting is the process's, as the server is).
disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped in the library

# Up to a minute: a delivery can wait for its commit (storage.busy_timeout_s * 1.25, up to
# 75 s) or a slow body (server.read_timeout_s), and those belong in a bucket, not in +Inf.
_LATENCY_BUCKETS = (
    *(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5),
    *(1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
# Every outcome a configured provider's deliveries and attempts can have, each series shown
# from the start at 0: a counter that appears only at its first increment reads 0 in
# ``increase()`` for that increment, the first storage failure or dead event after a start.
_DELIVERY_OUTCOMES = ("accepted", "duplicate", "storage_unavailable", "server_busy")
_ATTEMPT_OUTCOMES = ("succeeded", "retry", "dead", "interrupted")
# Handlers take from a millisecond (a downstream on the same host) up to their timeouts.
_HANDLER_BUCKETS = (
    *(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5),
    *(1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0),
)


@dataclass(frozen=True, slots=True)
class IngestMetrics:
    """One configured provider's ingest series, labelled once (``labels()`` is a lookup under a
    lock on every call; the ingest path counts several times per request)."""

    accepted: Counter
    duplicate: Counter
    duplicates: Counter
    conflicts: Counter
    latency: Histogram


class _DroppedLogLines(Collector):
    """The log lines stdout could not take (a full disk, a closed pipe): what the log itself
    cannot say."""

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(
            "receiver_log_lines_dropped",
            "Log lines that could not be written (stdout full or closed) and were dropped",
            value=dropped_lines(),
        )


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        r.register(_DroppedLogLines())
        # process_start_time_seconds (a restart, a crash loop), open file descriptors against
        # their limit (max_connections), resident memory; and the version running.
        r.register(PROCESS_COLLECTOR)
        r.register(PLATFORM_COLLECTOR)
        Info("receiver_build", "The receiver running", registry=r).info({"version": __version__})
        self.received = Counter(
            "receiver_deliveries_total",
            "Deliveries answered, by provider and outcome (each event of a batch counts)",
            ["provider", "outcome"],
            registry=r,
        )
        self.rejections = Counter(
            "receiver_rejections_total",
            "Rejected deliveries, by cause",
            ["provider", "cause"],
            registry=r,
        )
        self.duplicates = Counter(
            "receiver_duplicates_total", "Redeliveries recognised", ["provider"], registry=r
        )
        self.connections_refused = Counter(
            "receiver_connections_refused_total",
            "Connections answered 503 at once: the listener had max_connections open",
            ["listener"],
            registry=r,
        )
        self.conflicts = Counter(
            "receiver_conflicts_total",
            "Redeliveries whose body differs from the original",
            ["provider"],
            registry=r,
        )
        self.ingest_latency = Histogram(
            "receiver_ingest_latency_seconds",
            "Time from request start to answer",
            ["provider"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "receiver_commit_batch_size",
            "Events per group commit",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048),  # batch_max: 2 000
            registry=r,
        )
        self._add_worker_metrics()
        self._add_operations_metrics()
        self._ingest: dict[str, IngestMetrics] = {}

    def ingest_for(self, provider: str) -> IngestMetrics:
        """The series of a configured provider (never call it with an unchecked name: each
        name is kept)."""
        series = self._ingest.get(provider)
        if series is None:
            series = self._ingest[provider] = IngestMetrics(
                accepted=self.received.labels(provider, "accepted"),
                duplicate=self.received.labels(provider, "duplicate"),
                duplicates=self.duplicates.labels(provider),
                conflicts=self.conflicts.labels(provider),
                latency=self.ingest_latency.labels(provider),
            )
        return series

    def _add_worker_metrics(self) -> None:
        r = self.registry
        self.attempts = Counter(
            "receiver_handler_attempts_total",
            "Handler attempts, by provider and outcome (succeeded, retry, dead, interrupted)",
            ["provider", "outcome"],
            registry=r,
        )
        self.handler_latency = Histogram(
            "receiver_handler_latency_seconds",
            "Duration of one handler attempt",
            ["provider"],
            buckets=_HANDLER_BUCKETS,
            registry=r,
        )
        self.dead = Counter(
            "receiver_dead_events_total", "Events that went dead", ["provider"], registry=r
        )
        self.queue_depth = Gauge(
            "receiver_queue_depth",
            "Queued jobs (due now or scheduled for a retry), by provider",
            ["provider"],
            registry=r,
        )
        self.loop_lag = Gauge(
            "receiver_event_loop_lag_seconds",
            "How late the event loop ran a timer, the worst of the last 5 s (something blocks it)",
            registry=r,
        )
        self.running = Gauge(
            "receiver_jobs_running",
            "Jobs a handler is running (a hung or overrunning one too), by provider",
            ["provider"],
            registry=r,
        )
        self.oldest_queued_age = Gauge(
            "receiver_queue_oldest_age_seconds",
            "How long the oldest due job has waited for a worker, by provider",
            ["provider"],
            registry=r,
        )
        self.oldest_unfinished_age = Gauge(
            "receiver_queue_oldest_unfinished_age_seconds",
            "How long the oldest event not yet handled has been queued (received, redelivered"
            " or replayed), its retries included, by provider",
            ["provider"],
            registry=r,
        )
        self.overrunning = Gauge(
            "receiver_handlers_overrunning",
            "Handler runs past their timeout that have not ended (a thread cannot be stopped)",
            ["provider"],
            registry=r,
        )

    def _add_operations_metrics(self) -> None:
        r = self.registry
        # Read when scraped (the runtime points it at the database's WAL file).
        self.wal_bytes = Gauge(
            "receiver_wal_bytes",
            "Size of the database's write-ahead log; it grows while a reader holds a snapshot",
            registry=r,
        )
        self.purged_payloads = Counter(
            "receiver_purged_payloads_total",
            "Event payloads (bodies and headers) dropped after their payload retention",
            registry=r,
        )
        self.purged_events = Counter(
            "receiver_purged_events_total",
            "Events deleted after their dedupe retention (a redelivery is new again)",
            registry=r,
        )
        self.purged_rejections = Counter(
            "receiver_purged_rejections_total",
            "Rejection journal rows dropped to keep the journal capped",
            registry=r,
        )
        self.rejection_journal_dropped = Counter(
            "receiver_rejection_journal_dropped_total",
            "Rejections counted but not journaled (buffer full in a flood, or store unavailable)",
            registry=r,
        )
        self.replays = Counter(
            "receiver_replays_total", "Events replayed by an operator", ["actor"], registry=r
        )
        self.background_errors = Counter(
            "receiver_background_errors_total",
            "Background tasks that failed and start again (worker: its loop crashed; retention:"
            " a purge failed), by task",
            ["task"],
            registry=r,
        )
        for task in ("worker", "retention"):
            self.background_errors.labels(task)

    def show_providers(self, providers: Iterable[str], handled: Iterable[str]) -> None:
        """Every configured provider's delivery series, and the handled ones' attempt series,
        at 0 from the start (see ``_DELIVERY_OUTCOMES``)."""
        for provider in providers:
            self.ingest_for(provider)
            for outcome in _DELIVERY_OUTCOMES:
                self.received.labels(provider, outcome)
        for provider in handled:
            self.dead.labels(provider)
            for outcome in _ATTEMPT_OUTCOMES:
                self.attempts.labels(provider, outcome)

    def render(self) -> bytes:
        return generate_latest(self.registry)
