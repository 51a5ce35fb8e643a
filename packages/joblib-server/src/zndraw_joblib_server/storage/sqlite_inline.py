"""Run SQLite statements in the event loop's thread instead of aiosqlite's worker thread.

SQLAlchemy's ``sqlite+aiosqlite`` dialect hands every DBAPI call (cursor, execute, fetch,
close, commit) to aiosqlite's thread and waits for the answer: four thread round trips per
statement, which costs several times what running the statement inline does. The queue's
statements are short index lookups and writes that the in-process write gate already
serialises, so blocking the loop for them is cheaper than the hops.

This module provides a connection object with the (async) interface SQLAlchemy's aiosqlite
adapter calls, backed directly by the standard library's ``sqlite3``. Pass
:func:`inline_creator` as ``async_creator`` to ``create_async_engine``. It suits one server
process per database file (the supported SQLite deployment): a writer in another process
would make statements wait for the busy timeout inside the event loop. Set
``ZNDRAW_JOBLIB_SQLITE_INLINE=false`` to use aiosqlite's thread instead.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from sqlalchemy.dialects.sqlite.aiosqlite import AsyncAdapt_aiosqlite_connection

__all__ = [
    "InlineAdaptedConnection",
    "InlineConnection",
    "InlineCursor",
    "adopt",
    "inline_creator",
    "run_now",
    "sync_connection_of",
]


class InlineCursor:
    """A ``sqlite3`` cursor behind aiosqlite's awaitable cursor interface."""

    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor

    @property
    def description(self) -> Any:
        """Column description of the last statement."""
        return self._cursor.description

    @property
    def lastrowid(self) -> int | None:
        """Row id of the last inserted row."""
        return self._cursor.lastrowid

    @property
    def rowcount(self) -> int:
        """Rows changed by the last statement."""
        return self._cursor.rowcount

    async def execute(self, sql: str, parameters: Sequence[Any] = ()) -> InlineCursor:
        """Execute one statement."""
        self._cursor.execute(sql, parameters)
        return self

    async def executemany(self, sql: str, parameters: Iterable[Sequence[Any]]) -> InlineCursor:
        """Execute one statement for each parameter set."""
        self._cursor.executemany(sql, parameters)
        return self

    async def fetchone(self) -> Any:
        """The next row."""
        return self._cursor.fetchone()

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        """The next ``size`` rows."""
        return self._cursor.fetchmany(size) if size is not None else self._cursor.fetchmany()

    async def fetchall(self) -> list[Any]:
        """All remaining rows."""
        return self._cursor.fetchall()

    async def close(self) -> None:
        """Close the cursor."""
        self._cursor.close()


class _RunNow:
    """Stands in for aiosqlite's request queue: runs a queued call at once."""

    def put_nowait(self, item: tuple[asyncio.Future[Any], Callable[[], Any]]) -> None:
        future, function = item
        try:
            future.set_result(function())
        except Exception as exc:
            future.set_exception(exc)


class InlineConnection:
    """A ``sqlite3`` connection behind aiosqlite's awaitable connection interface."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._conn = connection
        self._tx = _RunNow()  # SQLAlchemy's adapter queues isolation-level changes here

    @property
    def isolation_level(self) -> str | None:
        """The ``sqlite3`` transaction mode."""
        return self._conn.isolation_level

    @isolation_level.setter
    def isolation_level(self, value: str | None) -> None:
        self._conn.isolation_level = value  # type: ignore[assignment]

    async def cursor(self) -> InlineCursor:
        """A new cursor."""
        return InlineCursor(self._conn.cursor())

    async def execute(self, sql: str, parameters: Sequence[Any] = ()) -> InlineCursor:
        """Execute one statement on a new cursor."""
        return InlineCursor(self._conn.execute(sql, parameters))

    async def create_function(self, *args: Any, **kwargs: Any) -> None:
        """Register a SQL function."""
        self._conn.create_function(*args, **kwargs)

    def begin(self) -> None:
        """Open a transaction at once (called from SQLAlchemy's synchronous ``begin`` event)."""
        self._conn.execute("BEGIN")

    async def commit(self) -> None:
        """Commit the transaction."""
        self._conn.commit()

    async def rollback(self) -> None:
        """Roll the transaction back."""
        self._conn.rollback()

    async def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    def stop(self) -> None:
        """Close at once (SQLAlchemy's forced termination)."""
        self._conn.close()


def inline_creator(path: str, **connect_args: Any) -> Callable[[], Awaitable[InlineConnection]]:
    """An ``async_creator`` opening ``path`` with ``sqlite3`` for inline use."""

    async def create() -> InlineConnection:
        connection = sqlite3.connect(path, check_same_thread=False, **connect_args)
        return InlineConnection(connection)

    return create


def run_now(awaitable: Any) -> Any:
    """The result of an awaitable that completes without suspending (an inline call's).

    SQLAlchemy's adapter hands every driver call to ``await_only``, which switches greenlets
    twice to await it on the event loop. The inline connection's coroutines never suspend,
    so they are simply run to their end here.

    Raises:
        RuntimeError: The awaitable did suspend (it is not an inline call).
    """
    if isinstance(awaitable, asyncio.Future):
        return awaitable.result()  # already resolved (see _RunNow)
    try:
        awaitable.send(None)
    except StopIteration as stop:
        return stop.value
    awaitable.close()
    raise RuntimeError("an inline SQLite call suspended")


class InlineAdaptedConnection(AsyncAdapt_aiosqlite_connection):
    """SQLAlchemy's aiosqlite adapter, finishing the inline connection's calls at once."""

    __slots__ = ()
    await_ = staticmethod(run_now)


def adopt(dbapi_connection: Any) -> None:
    """Make SQLAlchemy's adapter of an inline connection run its calls without greenlets.

    Called from the pool's ``connect`` event; other connections are left as they are.
    """
    if type(dbapi_connection) is AsyncAdapt_aiosqlite_connection and isinstance(
        dbapi_connection._connection, InlineConnection
    ):
        dbapi_connection.__class__ = InlineAdaptedConnection


def sync_connection_of(connection: Any) -> Any:
    """The synchronous SQLAlchemy connection under an async one when its driver is inline.

    Statements on it may be executed straight from the event loop (no greenlet): nothing
    underneath awaits. None for every other connection.
    """
    sync = connection.sync_connection
    if sync is None:
        return None
    fairy = sync.connection
    return sync if isinstance(fairy.dbapi_connection, InlineAdaptedConnection) else None
