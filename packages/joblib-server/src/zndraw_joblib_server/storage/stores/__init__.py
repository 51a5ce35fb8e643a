"""The concrete :class:`~zndraw_joblib_server.storage.store.Store` of each database.

``storage`` registers them when imported; services use only the protocol.
"""

from zndraw_joblib_server.storage.stores.postgres import PostgresStore
from zndraw_joblib_server.storage.stores.sqlite import SqliteStore

__all__ = ["PostgresStore", "SqliteStore"]
