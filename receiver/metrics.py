"""Prometheus metrics, one registry per running receiver (so tests can build several)."""

from __future__ import annotations

__all__ = ["Metrics"]

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.received = Counter(
            "receiver_deliveries_total",
            "Deliveries answered, by provider and outcome",
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
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
