"""receiver: a self-hosted webhook receiver and redelivery deduplicator."""

from receiver.errors import PermanentError
from receiver.handlers.base import HandlerEvent

__all__ = ["HandlerEvent", "PermanentError", "__version__"]

__version__ = "0.1.0"
