"""The one seam through which services run a Core statement: storage picks the executor.

Services hand a statement and its parameters to :func:`execute`; which executor runs it
(the inline SQLite connection, asyncpg straight, the plan's SQL through SQLAlchemy's
``exec_driver_sql``, or SQLAlchemy's compiled-statement path) is storage's choice, made
from the statement and how the session's connection was opened, never the caller's.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from zndraw_joblib_server.storage.database import DIRECT_PG, session_connection
from zndraw_joblib_server.storage.direct import direct_of, direct_plan
from zndraw_joblib_server.storage.direct_pg import run_direct_pg

__all__ = ["execute"]


async def execute(session: AsyncSession, stmt: Any, params: Any = None) -> Any:
    """Run a Core statement on the session's connection, past the ORM session layer.

    The statements of the hot paths need nothing from the ORM (no identity map, no flush),
    so they skip ``Session.execute``'s per-statement work; they still run in the session's
    transaction (the connection is the session's own, fetched once per session). On an
    inline SQLite connection they also skip the greenlet bridge, as nothing underneath
    awaits (see :func:`~zndraw_joblib_server.storage.database.session_connection`).
    Prebuilt statements run from their plan (see :mod:`.direct`).
    """
    conn, sync = await session_connection(session)
    line = sync if sync is not None else conn.sync_connection
    direct = direct_of(session)
    plan = direct_plan(stmt, line.dialect) if direct is not None else None
    bound = plan.bind(params) if plan is not None else None
    # With a listener other than the statement counter (a host's tracing), SQLAlchemy
    # runs every statement, so the listener sees it as usual.
    count = direct.counter(line.engine) if direct is not None and bound is not None else None
    if plan is None or bound is None or count is None:  # SQLAlchemy compiles (or renders) it
        return sync.execute(stmt, params) if sync is not None else await conn.execute(stmt, params)
    if sync is not None:
        result = plan.run_sqlite(sync.connection.driver_connection, bound, params)
        count()
        return result
    if session.info.get(DIRECT_PG):
        if plan.rows_of is not None and direct is not None:
            found = await direct.shared.run(conn, plan, bound, params)
        else:
            found = await run_direct_pg(conn, plan, bound, params)
        if found is not None:
            count()
            return found
    # In a transaction (or on aiosqlite's thread): the plan's SQL through SQLAlchemy, which
    # counts it; SQLAlchemy then neither derives the statement's cache key nor compiles it.
    sql, values, many = bound
    return plan.adopt(
        await conn.exec_driver_sql(sql, [*map(tuple, values)] if many else tuple(values))
    )
