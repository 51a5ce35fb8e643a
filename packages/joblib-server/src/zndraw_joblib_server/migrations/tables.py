"""Creating the tables from the models directly: for tests (servers and hosts migrate).

Servers and :class:`~zndraw_joblib_server.JobQueue` set up and upgrade the schema with the
queue's migrations (:mod:`zndraw_joblib_server.migrations`); the CI compares the
migrations' result with what :func:`create_tables` makes.
"""

from __future__ import annotations

from sqlalchemy import Connection, inspect
from sqlalchemy.ext.asyncio import AsyncEngine
from zndraw_auth import Base

import zndraw_joblib_server.models

# Registers the pending counts' DDL (tables, triggers) to run with ``create_all``.
import zndraw_joblib_server.storage.pending  # noqa: F401
from zndraw_joblib_server.migrations.runner import current_revision, run_command, run_locked
from zndraw_joblib_server.migrations.scope import owned_table

__all__ = ["create_tables"]


async def create_tables(engine: AsyncEngine) -> None:
    """Create zndraw-auth's and the queue's tables from the current models if missing.

    A database that had none of the queue's tables is stamped with the newest revision
    (``create_all`` made exactly that schema). Existing tables are left as they are (the
    kept pending counts are recounted); bring those up to date with the migrations. Several
    processes calling it at once wait for each other (the migrations' lock).
    """
    await run_locked(engine, _create)


def _create(conn: Connection) -> None:
    fresh = current_revision(conn) is None and not any(
        owned_table(name) for name in inspect(conn).get_table_names()
    )
    Base.metadata.create_all(conn)
    if fresh:
        run_command(conn, "stamp", "head")
