"""Engine creation with the right settings per database.

SQLite gets WAL, a busy timeout, foreign keys and ``synchronous=NORMAL`` on every
connection; PostgreSQL gets a connection pool sized for the server.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry, StaticPool

__all__ = ["create_engine", "is_memory_sqlite"]


def is_memory_sqlite(url: str) -> bool:
    """Whether ``url`` names an in-memory SQLite database."""
    return url.startswith("sqlite") and (url.endswith("://") or ":memory:" in url)


def create_engine(url: str, *, busy_timeout_ms: int = 5_000, **kwargs: Any) -> AsyncEngine:
    """Create an async engine for ``url`` with the pragmas and pool this package needs.

    Args:
        url: ``sqlite+aiosqlite:///path.db``, ``sqlite+aiosqlite://`` (memory) or
            ``postgresql+asyncpg://...``.
        busy_timeout_ms: SQLite busy timeout.
        **kwargs: Passed on to :func:`sqlalchemy.ext.asyncio.create_async_engine`.
    """
    if url.startswith("sqlite"):
        if is_memory_sqlite(url):
            kwargs.setdefault("poolclass", StaticPool)
        kwargs.setdefault("connect_args", {"check_same_thread": False})
        engine = create_async_engine(url, **kwargs)
        _install_sqlite_pragmas(engine, busy_timeout_ms, memory=is_memory_sqlite(url))
        return engine
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    kwargs.setdefault("pool_pre_ping", True)
    return create_async_engine(url, **kwargs)


def _install_sqlite_pragmas(engine: AsyncEngine, busy_timeout_ms: int, *, memory: bool) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
        cursor = dbapi_connection.cursor()
        if not memory:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()
