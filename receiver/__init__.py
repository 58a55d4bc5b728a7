"""receiver: a self-hosted webhook receiver and redelivery deduplicator."""

__version__ = "0.1.0"
