"""Dialect-specific storage: engines, the write gate, wake-ups (in-process and LISTEN/NOTIFY)."""

from zndraw_joblib_server.storage.database import (
    Database,
    EventSink,
    UnitOfWork,
    deliver,
    get_database,
)
from zndraw_joblib_server.storage.engine import create_engine, is_memory_sqlite
from zndraw_joblib_server.storage.notifier import Notifier, Subscription
from zndraw_joblib_server.storage.store import STORES, Store
from zndraw_joblib_server.storage.stores import PostgresStore, SqliteStore

__all__ = [
    "Database",
    "EventSink",
    "Notifier",
    "Store",
    "Subscription",
    "UnitOfWork",
    "create_engine",
    "deliver",
    "get_database",
    "is_memory_sqlite",
]

STORES.update(sqlite=SqliteStore(), postgresql=PostgresStore())
