"""Prebuilt statements run straight on asyncpg, for work outside a transaction.

The PostgreSQL counterpart of :mod:`.direct`: a write that runs without a transaction
(``Database.write(autocommit=True)``) sends its prebuilt statements on the asyncpg
connection itself (asyncpg's public ``fetch``, ``execute``, ``executemany``), with the plan
compiled once (SQL, parameter order, type processors), skipping SQLAlchemy's execution and
result layers, which cost more CPU per statement there than asyncpg itself. Values are sent
and read as SQLAlchemy would (its own processors, on a connection set up by its dialect);
asyncpg keeps the prepared statement. asyncpg's errors are raised as SQLAlchemy's exception
classes by :func:`translate` (the classes the DBAPI specifies for each SQLSTATE class, as
psycopg maps them), and a connection the error closed is invalidated, as SQLAlchemy would.

Only a connection outside a transaction qualifies: inside one, SQLAlchemy's adapter opens
the transaction on its first statement, which a statement sent past it would miss.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import exc
from sqlalchemy.ext.asyncio import AsyncConnection

from zndraw_joblib_server.storage.direct import Bound, Plan
from zndraw_joblib_server.storage.direct_result import DirectResult

__all__ = ["run_direct_pg", "translate"]


async def run_direct_pg(
    conn: AsyncConnection, plan: Plan, bound: Bound, params: Any
) -> DirectResult | None:
    """Run ``bound`` (see :meth:`Plan.bind`) on the asyncpg connection under ``conn``.

    ``conn`` must be outside a transaction (an autocommit connection); None, having done
    nothing, when its asyncpg connection is in one after all, or is not asyncpg's.
    """
    sync = conn.sync_connection
    if sync is None or sync.dialect.driver != "asyncpg":
        return None
    driver: Any = sync.connection.driver_connection
    if driver.is_in_transaction():
        return None
    sql, values, many = bound
    try:
        if many:
            await driver.executemany(sql, values)
            return plan.empty(-1)
        if plan.returns_rows:
            if not plan.learned:  # once per plan: the result's columns and their types
                found = (await driver.prepare(sql)).get_attributes()
                plan.learn([(column.name, column.type.oid) for column in found])
            records = await driver.fetch(sql, *values)
            return plan.result(records, len(records))
        return plan.empty(_rowcount(await driver.execute(sql, *values)))
    except Exception as error:
        broken = driver.is_closed() or _confused(error)
        if broken:
            await conn.invalidate()
        translated = translate(error, sql, params, broken=broken)
        if translated is error:
            raise
        raise translated from error


def _confused(error: Exception) -> bool:
    """Whether asyncpg lost track of its connection's protocol state (it cannot be reused).

    asyncpg raises this when, say, the server ended the connection while a statement was
    being sent, before asyncpg itself noticed the connection closing.
    """
    import asyncpg  # only PostgreSQL servers need it

    return isinstance(error, asyncpg.exceptions.InternalClientError)


def _rowcount(status: str) -> int:
    """The row count of a command status such as ``UPDATE 3`` (-1 when it has none)."""
    last = status.rpartition(" ")[2]
    return int(last) if last.isdigit() else -1


_BY_SQLSTATE_CLASS: dict[str, type[exc.DBAPIError]] = {
    "08": exc.OperationalError,  # connection exception
    "0A": exc.NotSupportedError,
    "22": exc.DataError,
    "23": exc.IntegrityError,
    "25": exc.InternalError,  # invalid transaction state
    "26": exc.InternalError,
    "27": exc.OperationalError,
    "28": exc.OperationalError,  # invalid authorization
    "2B": exc.InternalError,
    "2D": exc.InternalError,
    "2F": exc.InternalError,
    "34": exc.OperationalError,
    "3D": exc.ProgrammingError,
    "3F": exc.ProgrammingError,
    "40": exc.OperationalError,  # serialization failure, deadlock
    "42": exc.ProgrammingError,
    "44": exc.ProgrammingError,
    "53": exc.OperationalError,  # insufficient resources
    "54": exc.OperationalError,
    "55": exc.OperationalError,  # lock not available
    "57": exc.OperationalError,  # operator intervention (shutdown, cancel)
    "58": exc.OperationalError,
    "F0": exc.InternalError,
    "HV": exc.OperationalError,
    "P0": exc.InternalError,
    "XX": exc.InternalError,
}
"""SQLAlchemy's exception class by SQLSTATE class (the first two characters)."""


def translate(error: Exception, sql: str, params: Any, *, broken: bool = False) -> Exception:
    """``error`` raised by asyncpg as the SQLAlchemy exception callers handle.

    A server error (``asyncpg.PostgresError``) by its SQLSTATE class (see
    :data:`_BY_SQLSTATE_CLASS`; others ``DatabaseError``); a client-side one
    (``asyncpg.InterfaceError``, such as a closed connection, or asyncpg's internal client
    error) ``InterfaceError``, which callers answer 503. The
    original is the new exception's ``orig`` (its ``sqlstate`` stays readable). Any other
    exception is returned as it is.

    Args:
        error: What asyncpg raised.
        sql: The statement.
        params: Its parameters (for the message).
        broken: The connection is broken (and was invalidated).
    """
    import asyncpg  # only PostgreSQL servers need it

    cls: type[exc.DBAPIError]
    if isinstance(error, asyncpg.PostgresError):
        state = str(getattr(error, "sqlstate", "") or "")
        cls = _BY_SQLSTATE_CLASS.get(state[:2], exc.DatabaseError)
    elif isinstance(error, asyncpg.InterfaceError | asyncpg.exceptions.InternalClientError):
        cls = exc.InterfaceError
    else:
        return error
    return cls(sql, params, error, connection_invalidated=broken)
