"""The one seam through which services run a Core statement: storage picks the executor.

Services hand a statement and its parameters to :func:`execute`; which executor runs it
(the inline SQLite connection, asyncpg straight, or SQLAlchemy's connection) is storage's
choice, made from how the session's connection was opened, never the caller's.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from zndraw_joblib_server.storage.database import DIRECT_PG, session_connection
from zndraw_joblib_server.storage.direct import run_direct
from zndraw_joblib_server.storage.direct_pg import run_direct_pg

__all__ = ["execute"]


async def execute(session: AsyncSession, stmt: Any, params: Any = None) -> Any:
    """Run a Core statement on the session's connection, past the ORM session layer.

    The statements of the hot paths need nothing from the ORM (no identity map, no flush),
    so they skip ``Session.execute``'s per-statement work; they still run in the session's
    transaction (the connection is the session's own, fetched once per session). On an
    inline SQLite connection they also skip the greenlet bridge, as nothing underneath
    awaits (see :func:`~zndraw_joblib_server.storage.database.session_connection`).
    """
    conn, sync = await session_connection(session)
    if sync is not None:
        result = run_direct(sync, stmt, params)
        return result if result is not None else sync.execute(stmt, params)
    if session.info.get(DIRECT_PG):
        found = await run_direct_pg(conn, stmt, params)
        if found is not None:
            return found
    return await conn.execute(stmt, params)
