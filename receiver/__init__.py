"""receiver: a self-hosted webhook receiver and redelivery deduplicator."""

from receiver.errors import PermanentError

__all__ = ["PermanentError", "__version__"]

__version__ = "0.1.0"
