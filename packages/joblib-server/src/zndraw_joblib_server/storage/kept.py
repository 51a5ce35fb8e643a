"""Autocommit connections kept checked out between writes outside a transaction (PostgreSQL).

A write outside a transaction runs on a connection of its own. Checking one out of the pool
and back, and switching it to autocommit and back, costs more CPU than the statement's own
work on the server; :class:`KeptConnections` keeps a few of them checked out between
writes instead, each with whatever its user keeps along (the session bound to it: creating
and closing a session per write cost about as much again).
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

__all__ = ["KEEP", "KeptConnections"]

KEEP = 8
"""At most this many connections are kept (of the pool's 10 + 20 overflow by default), and
never more than the pool's size less two, so a host's smaller pool keeps room for the
transactions (a pool of 3 keeps one, of 2 or less none)."""


class KeptConnections:
    """Autocommit connections of ``engine``, kept between uses.

    Args:
        engine: The engine with ``isolation_level="AUTOCOMMIT"``.
        idle_seconds: A connection kept for longer goes back to the pool before use, which
            pings it first (the pool's own ``db_ping_idle_seconds``), so a connection the
            database dropped meanwhile is not handed out.
    """

    def __init__(self, engine: AsyncEngine, idle_seconds: float) -> None:
        self._engine = engine
        self._idle_seconds = idle_seconds
        self._idle: list[tuple[AsyncConnection, Any, float]] = []
        self._closed = False
        size = getattr(engine.sync_engine.pool, "size", None)  # QueuePool; others: no limit
        self.limit = max(0, min(KEEP, size() - 2)) if callable(size) else KEEP
        """How many connections are kept at most."""

    async def take(self) -> tuple[AsyncConnection, Any]:
        """A kept connection and what was kept with it, else one from the pool and None."""
        now = time.monotonic()
        while self._idle:
            conn, companion, since = self._idle.pop()
            if not conn.closed and not conn.invalidated and now - since <= self._idle_seconds:
                return conn, companion
            await conn.close()
        return await self._engine.connect(), None

    async def give_back(self, conn: AsyncConnection, companion: Any = None) -> None:
        """Keep ``conn`` (with ``companion``) for the next use, or return it to the pool.

        It goes back to the pool when it broke, is in a transaction (SQLAlchemy began one
        for a statement it ran itself), enough are kept already, or after :meth:`close`.
        """
        if (
            conn.closed
            or conn.invalidated
            or conn.in_transaction()
            or len(self._idle) >= self.limit
            or self._closed
        ):
            await conn.close()
        else:
            self._idle.append((conn, companion, time.monotonic()))

    async def close(self) -> None:
        """Return every kept connection to the pool; later ones are not kept."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn, _companion, _since in idle:
            await conn.close()
