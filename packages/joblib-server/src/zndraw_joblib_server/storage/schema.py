"""Creating the tables, safely when several server processes start at once."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from zndraw_auth import Base

import zndraw_joblib_server.models  # noqa: F401  (registers the tables on Base.metadata)
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
