"""Engine creation with the right settings per database.

SQLite gets WAL, a busy timeout, foreign keys and ``synchronous=FULL`` (durable: a commit
survives a power failure; ``NORMAL`` is faster and may lose the last commits) on every
connection; PostgreSQL gets a connection pool sized for the server, whose connections are
checked before reuse only after sitting idle (see :func:`create_engine`).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from typing import Any

from sqlalchemy import event, exc
from sqlalchemy.engine import Connection
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry, StaticPool

from zndraw_joblib_server.storage.sqlite_inline import inline_url

__all__ = ["create_engine", "is_memory_sqlite", "with_async_driver"]

logger = logging.getLogger("zndraw_joblib_server")

# A URL that names no driver gets the async one this package ships with; SQLAlchemy would
# pick a blocking driver (pysqlite, psycopg2) that the async engine cannot use.
_ASYNC_SCHEMES = {
    "sqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
}


def with_async_driver(url: str) -> str:
    """Return ``url`` with the async driver added when its scheme names none.

    ``sqlite:///x.db`` becomes ``sqlite+aiosqlite:///x.db``, ``postgresql://...`` and
    ``postgres://...`` become ``postgresql+asyncpg://...``; any other URL is returned as is.
    """
    scheme, sep, rest = url.partition("://")
    target = _ASYNC_SCHEMES.get(scheme.lower()) if sep else None
    return f"{target}://{rest}" if target else url


def is_memory_sqlite(url: str) -> bool:
    """Whether ``url`` names an in-memory SQLite database."""
    return url.startswith("sqlite") and (url.endswith("://") or ":memory:" in url)


def create_engine(
    url: str,
    *,
    busy_timeout_ms: int = 5_000,
    sqlite_inline: bool = True,
    ping_idle_seconds: float = 2.0,
    sqlite_synchronous: str = "full",
    **kwargs: Any,
) -> AsyncEngine:
    """Create an async engine for ``url`` with the pragmas and pool this package needs.

    Args:
        url: ``sqlite+aiosqlite:///path.db``, ``sqlite+aiosqlite://`` (memory) or
            ``postgresql+asyncpg://...``.
        busy_timeout_ms: SQLite busy timeout.
        sqlite_inline: Run SQLite statements in the event loop's thread (see
            :mod:`zndraw_joblib_server.storage.sqlite_inline`) rather than aiosqlite's.
        ping_idle_seconds: PostgreSQL: ping a pooled connection before reuse only when it
            sat idle for longer than this (a dead one is replaced); 0 pings every checkout.
            SQLAlchemy's ``pool_pre_ping`` pings every time, one round trip per
            transaction; a connection that dies while in use fails its request, which
            answers 503 and is retried by clients.
        sqlite_synchronous: SQLite ``PRAGMA synchronous`` level: ``full`` (a commit is on
            disk before it returns) or ``normal`` (WAL commits may be lost on power failure,
            never corrupted).
        **kwargs: Passed on to :func:`sqlalchemy.ext.asyncio.create_async_engine`.

    A URL without a driver (``sqlite:///x.db``, ``postgresql://...``) gets the async one
    (see :func:`with_async_driver`).
    """
    driven = with_async_driver(url)
    if driven != url:
        logger.info("database URL names no driver; using %s", driven.partition("://")[0])
        url = driven
    if url.startswith("sqlite"):
        memory = is_memory_sqlite(url)
        if memory:
            kwargs.setdefault("poolclass", StaticPool)
        kwargs.setdefault("connect_args", {"check_same_thread": False})
        inline = sqlite_inline and not memory
        engine = create_async_engine(inline_url(url) if inline else url, **kwargs)
        if sqlite_synchronous.lower() not in _SYNCHRONOUS:
            raise ValueError(f"sqlite_synchronous must be one of {sorted(_SYNCHRONOUS)}")
        _install_sqlite_pragmas(engine, busy_timeout_ms, sqlite_synchronous.upper(), memory=memory)
        return engine
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    engine = create_async_engine(url, **kwargs)
    if not kwargs.get("pool_pre_ping"):
        _ping_when_idle(engine, ping_idle_seconds)
    return engine


_IDLE_SINCE = "zndraw_joblib.idle_since"
_SYNCHRONOUS = frozenset({"full", "normal"})


def _ping_when_idle(engine: AsyncEngine, idle_seconds: float) -> None:
    """Ping connections that come back from more than ``idle_seconds`` in the pool."""
    dialect = engine.sync_engine.dialect

    @event.listens_for(engine.sync_engine, "checkin")
    def _on_checkin(_dbapi_connection: DBAPIConnection, record: ConnectionPoolEntry) -> None:
        record.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _on_checkout(
        dbapi_connection: DBAPIConnection, record: ConnectionPoolEntry, _proxy: object
    ) -> None:
        is_closed = getattr(record.driver_connection, "is_closed", None)
        if callable(is_closed) and is_closed():  # the driver saw it close: no round trip
            raise exc.DisconnectionError("pooled connection closed")
        since = record.info.get(_IDLE_SINCE)
        if since is None or time.monotonic() - since <= idle_seconds:
            return  # new, or back in use at once: a busy server pings nothing
        try:
            dialect.do_ping(dbapi_connection)
        except Exception as error:
            # The pool discards this connection and checks out another one.
            raise exc.DisconnectionError("stale pooled connection") from error


def _install_sqlite_pragmas(
    engine: AsyncEngine, busy_timeout_ms: int, synchronous: str, *, memory: bool
) -> None:
    # sqlite3's legacy transaction handling starts transactions only before DML, so a
    # SAVEPOINT before any write would open (and its RELEASE commit) a transaction of its
    # own. Take transaction control: autocommit at the driver, an explicit BEGIN per
    # SQLAlchemy transaction (SQLAlchemy's documented recipe).
    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        driver = conn.connection.driver_connection
        if isinstance(driver, sqlite3.Connection):  # inline: straight to sqlite3
            driver.execute("BEGIN")
        else:
            conn.exec_driver_sql("BEGIN")

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        if not memory:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()
