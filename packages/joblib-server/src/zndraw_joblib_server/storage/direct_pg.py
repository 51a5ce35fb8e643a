"""Prebuilt statements run straight on asyncpg, for work outside a transaction.

The PostgreSQL counterpart of :mod:`.direct`: a write that runs without a transaction
(``Database.write(autocommit=True)``) sends its prebuilt statements on the asyncpg
connection itself, with the plan SQLAlchemy compiled once (SQL, parameter order, type
processors), skipping SQLAlchemy's execution and result layers, which cost more CPU per
statement there than asyncpg itself. Values are sent and read as SQLAlchemy
would (its own processors, on a connection set up by its dialect); asyncpg keeps the
prepared statement. Driver errors are translated as SQLAlchemy's asyncpg adapter translates
them and raised as SQLAlchemy's exception classes; a connection found broken is
invalidated, as SQLAlchemy would.

Only a connection outside a transaction qualifies: inside one, SQLAlchemy's adapter opens
the transaction on its first statement, which a statement sent past it would miss.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import exc
from sqlalchemy.ext.asyncio import AsyncConnection

from zndraw_joblib_server.storage.direct import counter_for, direct_plan
from zndraw_joblib_server.storage.direct_result import DirectResult

__all__ = ["run_direct_pg"]


async def run_direct_pg(conn: AsyncConnection, stmt: Any, params: Any) -> DirectResult | None:
    """Run ``stmt`` directly on the asyncpg connection under ``conn`` (outside a transaction).

    None, having done nothing, when it must go through SQLAlchemy instead: not prebuilt,
    parameters SQLAlchemy renders at execution, an engine with execution listeners other
    than the statement counter, not asyncpg, or a connection in a transaction.
    """
    sync = conn.sync_connection
    if sync is None or sync.dialect.driver != "asyncpg":
        return None
    count = counter_for(sync.engine)
    if count is None:
        return None
    adapter: Any = sync.connection.dbapi_connection
    if not getattr(adapter, "autocommit", False):
        return None
    plan = direct_plan(stmt, sync.dialect)
    if plan is None:
        return None
    bound = plan.bind(params)
    if bound is None:
        return None
    sql, values, many = bound
    driver: Any = sync.connection.driver_connection
    try:
        if many:
            await driver.executemany(sql, values)
            result = plan.empty(-1)
        elif plan.returns_rows:
            if not plan.learned:  # once per plan: the result's columns and their types
                found = (await driver.prepare(sql)).get_attributes()
                plan.learn([(column.name, column.type.oid) for column in found])
            records = await driver.fetch(sql, *values)
            result = plan.result(records, len(records))
        else:
            status = await driver.execute(sql, *values)
            result = plan.empty(_rowcount(status))
    except Exception as error:
        await _raise_translated(conn, adapter, sql, params, error)
        raise  # pragma: no cover - _raise_translated always raises
    count()
    return result


def _rowcount(status: str) -> int:
    """The row count of a command status such as ``UPDATE 3`` (-1 when it has none)."""
    last = status.rpartition(" ")[2]
    return int(last) if last.isdigit() else -1


async def _raise_translated(
    conn: AsyncConnection, adapter: Any, sql: str, params: Any, error: Exception
) -> None:
    """Raise ``error`` as SQLAlchemy raises a driver error.

    Translated by its adapter, wrapped in its exception classes, the connection
    invalidated when it is broken.
    """
    dbapi_error = adapter.dbapi.Error
    try:
        adapter._handle_exception(error)
    except dbapi_error as translated:
        broken = conn.dialect.is_disconnect(translated, adapter, None)
        if broken:
            await conn.invalidate()
        raise exc.DBAPIError.instance(
            sql, params, translated, dbapi_error, connection_invalidated=broken
        ) from error
