"""Creating the tables, safely when several server processes start at once."""

from __future__ import annotations

from sqlalchemy import Connection, inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine
from zndraw_auth import Base

# Registers the pending counts' DDL (tables, triggers) to run with ``create_all``.
import zndraw_joblib_server.storage.pending  # noqa: F401
from zndraw_joblib_server.models import Job, Task, Worker, WorkerJobLink
from zndraw_joblib_server.storage.pending_pg import SCHEMA_LOCK_KEY

__all__ = ["create_tables"]


async def create_tables(engine: AsyncEngine) -> None:
    """Create zndraw-auth's and the queue's tables if they are missing.

    On PostgreSQL an advisory lock makes concurrent starts of several processes wait for
    each other instead of racing on ``CREATE TABLE``.
    """
    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            lock = text("SELECT pg_advisory_xact_lock(:key)")
            await conn.execute(lock, {"key": SCHEMA_LOCK_KEY})
        await conn.run_sync(Base.metadata.create_all)
        await conn.run_sync(_upgrade)


def _upgrade(conn: Connection) -> None:
    """Bring tables an older version created up to date (``create_all`` skips existing ones).

    Adds the job's ``owner_id`` column (existing jobs stay without an owner) and the
    queue's indexes that are missing.
    """
    inspector = inspect(conn)
    jobs = Job.__table__
    if "owner_id" not in {c["name"] for c in inspector.get_columns(jobs.name)}:
        kind = jobs.c.owner_id.type.compile(dialect=conn.dialect)
        conn.execute(
            text(
                f"ALTER TABLE {jobs.name} ADD COLUMN owner_id {kind} "
                'REFERENCES "user" (id) ON DELETE SET NULL'
            )
        )
    for table in (jobs, Task.__table__, Worker.__table__, WorkerJobLink.__table__):
        existing = {index["name"] for index in inspector.get_indexes(table.name)}
        for index in table.indexes:
            if index.name not in existing:
                index.create(conn)
