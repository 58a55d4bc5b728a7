"""Storage: the async store interface and its SQLite implementation."""

from receiver.store.base import Store
from receiver.store.sqlite import SqliteStore

__all__ = ["SqliteStore", "Store"]
