"""Creating the tables, safely when several server processes start at once."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from zndraw_auth import Base

import zndraw_joblib_server.models  # noqa: F401  (registers the tables on Base.metadata)

__all__ = ["create_tables"]

_LOCK_KEY = 0x6A6F626C6962  # "joblib": serialises concurrent create_all on PostgreSQL


async def create_tables(engine: AsyncEngine) -> None:
    """Create zndraw-auth's and the queue's tables if they are missing.

    On PostgreSQL an advisory lock makes concurrent starts of several processes wait for
    each other instead of racing on ``CREATE TABLE``.
    """
    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
        await conn.run_sync(Base.metadata.create_all)
