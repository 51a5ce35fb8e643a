"""Bulk-insert task rows straight into the server's ``joblib_task`` table.

The rows are generated inside the database (``generate_series`` on PostgreSQL, a recursive
CTE on SQLite) by one ``INSERT ... SELECT`` per chunk, so a million rows take seconds rather
than minutes. Ids of the job and the user come from the API; SQLAlchemy binds them with the
column types of the server's own model, so they are stored exactly as the server stores them.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import create_async_engine

from zndraw_joblib_core import TaskStatus
from zndraw_joblib_server.models import Task

__all__ = ["preload_tasks"]

CHUNK = 200_000


def _sql(dialect: str, status: str) -> str:
    finished = status == "completed"
    if dialect == "postgresql":
        new_id, rows = "gen_random_uuid()", "generate_series(1, :n) AS s(i)"
        prefix = ""
    else:
        new_id, rows = "lower(hex(randomblob(16)))", "s"
        prefix = "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < :n) "
    return (
        f"{prefix}INSERT INTO joblib_task (id, job_id, room_id, created_by_id, worker_id, "
        "status, payload, priority, run_after, created_at, claimed_at, started_at, "
        "completed_at, attempt, max_attempts, cancel_requested, version) "
        f"SELECT {new_id}, :job_id, :room_id, :user_id, "
        f"{':worker_id' if finished else 'NULL'}, :status, '{{}}', 0, :ts, :ts, "
        f"{':ts, :ts, :ts, 1' if finished else 'NULL, NULL, NULL, 0'}, 1, false, "
        f"{'3' if finished else '0'} FROM {rows}"
    )


async def _preload(
    url: str,
    job_id: str,
    room_id: str,
    user_id: str,
    worker_id: str,
    counts: dict[str, int],
) -> None:
    engine = create_async_engine(url, connect_args={"timeout": 60})
    cols = Task.__table__.c
    try:
        dialect = engine.dialect.name
        for status, total in counts.items():
            ts = datetime.now(UTC) - timedelta(hours=1)
            sql = _sql(dialect, status)
            binds = [
                bindparam("job_id", type_=cols.job_id.type),
                bindparam("user_id", type_=cols.created_by_id.type),
                bindparam("ts", type_=cols.created_at.type),
                bindparam("status", type_=cols.status.type),
            ]
            if ":worker_id" in sql:
                binds.append(bindparam("worker_id", type_=cols.worker_id.type))
            stmt = text(sql).bindparams(*binds)
            done = 0
            while done < total:
                n = min(CHUNK, total - done)
                params: dict[str, object] = {
                    "n": n,
                    "job_id": uuid.UUID(job_id),
                    "room_id": room_id,
                    "user_id": uuid.UUID(user_id),
                    "ts": ts,
                    "status": TaskStatus(status),
                }
                if ":worker_id" in sql:
                    params["worker_id"] = uuid.UUID(worker_id)
                async with engine.begin() as conn:
                    await conn.execute(stmt, params)
                done += n
        if dialect == "postgresql":
            async with engine.connect() as conn:
                await conn.execution_options(isolation_level="AUTOCOMMIT")
                await conn.execute(text("VACUUM ANALYZE joblib_task"))
        else:
            async with engine.begin() as conn:
                await conn.execute(text("ANALYZE joblib_task"))
    finally:
        await engine.dispose()


def preload_tasks(
    url: str,
    *,
    job_id: str,
    room_id: str,
    user_id: str,
    worker_id: str,
    pending: int,
    completed: int,
) -> None:
    """Insert ``completed`` finished rows, then ``pending`` claimable rows of one job."""
    counts = {"completed": completed, "pending": pending}
    asyncio.run(_preload(url, job_id, room_id, user_id, worker_id, counts))
