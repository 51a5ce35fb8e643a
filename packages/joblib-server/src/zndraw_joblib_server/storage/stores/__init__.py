"""The concrete :class:`~zndraw_joblib_server.storage.store.Store` of each database.

``storage`` registers them when imported; services use only the protocol.
"""

from zndraw_joblib_server.storage.store import register_store
from zndraw_joblib_server.storage.stores.postgres import PostgresStore
from zndraw_joblib_server.storage.stores.sqlite import SqliteStore

__all__ = ["PostgresStore", "SqliteStore", "register_all"]


def register_all() -> None:
    """Register each database's store (``storage.store.store_for`` then finds it)."""
    register_store("sqlite", SqliteStore())
    register_store("postgresql", PostgresStore())
