"""Run SQLite statements in the event loop's thread instead of aiosqlite's worker thread.

SQLAlchemy's ``sqlite+aiosqlite`` dialect hands every DBAPI call (cursor, execute, fetch,
close, commit) to aiosqlite's thread and waits for the answer: four thread round trips per
statement, which costs several times what running the statement inline does. The queue's
statements are short index lookups and writes that the in-process write gate already
serialises, so blocking the loop for them is cheaper than the hops.

:class:`InlineSQLiteDialect` is SQLAlchemy's own ``pysqlite`` dialect (the standard
library's ``sqlite3``, through its public DBAPI), registered under its own driver name
(:data:`INLINE_DRIVER`) and declared usable by SQLAlchemy's asyncio extension: every call
it makes returns at once, so the greenlet bridge never has to wait, and statements on its
connections may run straight from the event loop (see :func:`sync_connection_of`). It suits
one server process per database file (the supported SQLite deployment): a writer in
another process would make statements wait for the busy timeout inside the event loop.
Set ``ZNDRAW_JOBLIB_SQLITE_INLINE=false`` to use aiosqlite's thread instead.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from sqlalchemy import pool
from sqlalchemy.dialects import registry
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite
from sqlalchemy.engine import URL, make_url

__all__ = [
    "INLINE_DRIVER",
    "InlineCursor",
    "InlineSQLite",
    "InlineSQLiteDialect",
    "inline_url",
    "sync_connection_of",
]

INLINE_DRIVER = "zndraw_joblib_inline"
"""The driver name of :class:`InlineSQLiteDialect` in database URLs (``sqlite+...``)."""


class InlineCursor(sqlite3.Cursor):
    """A ``sqlite3`` cursor that SQLAlchemy's asyncio results may also release."""

    async def _async_soft_close(self) -> None:
        """Nothing to release: rows are read in the caller's thread.

        SQLAlchemy's asyncio extension awaits this on the cursor of every result it hands
        out (the one method its async results need beyond the DBAPI's); a test runs
        ``AsyncSession.execute`` on inline connections, so a change to that is seen.
        """


class InlineSQLite(sqlite3.Connection):
    """A ``sqlite3`` connection whose cursors are :class:`InlineCursor` s."""

    def cursor(self, factory: Any = InlineCursor) -> Any:
        """A new cursor (an :class:`InlineCursor` unless ``factory`` says otherwise)."""
        return super().cursor(factory)


class InlineSQLiteDialect(SQLiteDialect_pysqlite):
    """SQLAlchemy's ``pysqlite`` dialect, for an async engine whose calls never wait.

    For database files only (:func:`~.engine.create_engine` opens memory databases with
    aiosqlite). Connections come from a pool for asyncio (as with aiosqlite); a connection
    dropped without being returned is closed at once, which ``sqlite3`` allows from any
    thread.
    """

    driver = INLINE_DRIVER
    is_async = True
    has_terminate = True
    supports_statement_cache = True

    @classmethod
    def get_pool_class(cls, url: URL) -> type[pool.Pool]:
        """The asyncio queue pool."""
        return pool.AsyncAdaptedQueuePool

    def connect(self, *cargs: Any, **cparams: Any) -> Any:
        """A new :class:`InlineSQLite` connection (``sqlite3.connect``'s ``factory``)."""
        cparams.setdefault("factory", InlineSQLite)
        return sqlite3.connect(*cargs, **cparams)

    def do_terminate(self, dbapi_connection: Any) -> None:
        """Close the connection (``sqlite3`` closes at once)."""
        dbapi_connection.close()


registry.register(f"sqlite.{INLINE_DRIVER}", __name__, "InlineSQLiteDialect")


def inline_url(url: str) -> URL:
    """``url`` (a SQLite URL with any driver) with the inline driver."""
    return make_url(url).set(drivername=f"sqlite+{INLINE_DRIVER}")


def sync_connection_of(connection: Any) -> Any:
    """The synchronous SQLAlchemy connection under an async one when its driver is inline.

    Statements on it may be executed straight from the event loop (no greenlet): nothing
    underneath awaits. None for every other connection.
    """
    sync = connection.sync_connection
    return sync if sync is not None and isinstance(sync.dialect, InlineSQLiteDialect) else None
