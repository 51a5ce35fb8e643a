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

__all__ = ["asyncpg_outside_transaction", "run_direct_pg", "translate"]


def asyncpg_outside_transaction(conn: AsyncConnection) -> Any:
    """The asyncpg connection under ``conn`` if it is outside a transaction, else None."""
    sync = conn.sync_connection
    if sync is None or sync.dialect.driver != "asyncpg":
        return None
    driver: Any = sync.connection.driver_connection
    return None if driver.is_in_transaction() else driver


async def run_direct_pg(
    conn: AsyncConnection, plan: Plan, bound: Bound, params: Any
) -> DirectResult | None:
    """Run ``bound`` (see :meth:`Plan.bind`) on the asyncpg connection under ``conn``.

    ``conn`` must be outside a transaction (an autocommit connection); None, having done
    nothing, when its asyncpg connection is in one after all, or is not asyncpg's.
    """
    driver = asyncpg_outside_transaction(conn)
    if driver is None:
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
        status = (await driver.execute(sql, *values)).rpartition(" ")[2]  # "UPDATE 3"
        return plan.empty(int(status) if status.isdigit() else -1)
    except Exception as error:
        import asyncpg  # only PostgreSQL servers need it

        # An internal client error: asyncpg lost track of the connection's protocol state
        # (say, the server ended it while a statement was being sent): it cannot be reused.
        broken = driver.is_closed() or isinstance(error, asyncpg.exceptions.InternalClientError)
        if broken:
            await conn.invalidate()
        translated = translate(error, sql, params, broken=broken)
        if translated is error:
            raise
        raise translated from error


# By PostgreSQL's SQLSTATE classes: 08 connection exception, 25 invalid transaction state,
# 28 invalid authorization, 40 serialization failure or deadlock, 53 insufficient resources,
# 55 lock not available, 57 operator intervention (shutdown, cancel).
_BY_SQLSTATE_CLASS: dict[str, type[exc.DBAPIError]] = {
    state: cls
    for cls, states in (
        (exc.OperationalError, "08 27 28 34 40 53 54 55 57 58 HV"),
        (exc.NotSupportedError, "0A"),
        (exc.DataError, "22"),
        (exc.IntegrityError, "23"),
        (exc.InternalError, "25 26 2B 2D 2F F0 P0 XX"),
        (exc.ProgrammingError, "3D 3F 42 44"),
    )
    for state in states.split()
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
