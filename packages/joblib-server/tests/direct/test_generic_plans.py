"""PostgreSQL: the hot statements keep using the claim index under generic plans.

asyncpg prepares every statement, and after a few executions PostgreSQL may plan it once
for any parameter values (a generic plan). The claim index is partial (pending tasks only):
a plan can use it only where the statement names the status as a constant. With the status
as a parameter, a claim or a submit's queue position scanned every task of the job.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import insert, text
from sqlalchemy.dialects.postgresql import asyncpg as asyncpg_dialect

from zndraw_joblib_core import TaskStatus
from zndraw_joblib_server.storage import Database, positions
from zndraw_joblib_server.storage.direct import Plan
from zndraw_joblib_server.storage.records import TASKS
from zndraw_joblib_server.storage.stores.claim_sql import claim_statement

pytestmark = pytest.mark.backends("postgres")


def _literal(value: Any) -> str:
    """``value`` (as the driver gets it) written as an SQL literal for ``EXECUTE``."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


async def _generic_plan(db: Database, stmt: Any, params: dict[str, Any]) -> str:
    """The plan PostgreSQL's generic plan for ``stmt`` would run, as text."""
    bound = Plan(stmt, asyncpg_dialect.dialect()).bind(params)
    assert bound is not None
    sql, values, _ = bound
    args = ", ".join(_literal(v) for v in values)
    async with db.read() as session:
        await session.execute(text("SET LOCAL plan_cache_mode = force_generic_plan"))
        conn = await session.connection()
        raw = (await conn.get_raw_connection()).driver_connection
        await raw.execute(f"PREPARE hot AS {sql}")
        try:
            rows = await raw.fetch(f"EXPLAIN EXECUTE hot({args})")
        finally:
            await raw.execute("DEALLOCATE hot")
    return "\n".join(r[0] for r in rows)


async def test_claim_and_positions_use_the_claim_index_in_generic_plans(
    db: Database, job_id: uuid.UUID, task_row, flow
) -> None:
    """Claims (in and outside a transaction) and queue positions (read, and at submit).

    The queue as a busy server has it: two jobs, a backlog of one submitted by a user (each
    task due when created), finished tasks of both.
    """
    other = uuid.UUID(str((await flow.job(name="Other"))["id"]))
    async with db.read() as session:
        user = (await session.execute(text('SELECT id FROM "user" LIMIT 1'))).scalar()

    def queued(n: int) -> dict[str, Any]:
        due = task_row.t0 + timedelta(microseconds=n)
        return task_row(job_id, n, priority=0, run_after=due, created_by_id=user)

    rows = [queued(n) for n in range(2000)]
    rows += [
        task_row(job, n, status=TaskStatus.COMPLETED)
        for job in (job_id, other)
        for n in range(2000, 4000)
    ]
    async with db.write() as uow:
        await uow.session.execute(insert(TASKS), rows)
        await uow.session.execute(text("ANALYZE joblib_task"))
    now: datetime = task_row.t0 + timedelta(hours=1)
    new = task_row(job_id, 9999)
    place = {k: new[k] for k in ("job_id", "priority", "run_after", "created_at")}
    claim_params = {
        "b_now": now,
        "b_worker": uuid.uuid4(),
        "b_claimed_at": now,
        "b_lease_until": now,
        "b_limit": 1,
        "b_job_id": job_id,
        "b_beat": now,
        "b_user": uuid.uuid4(),
    }
    alone = db.store.standalone()
    assert alone is not None
    statements = {
        "claim": (claim_statement(db.store, False, False), claim_params),
        "claim outside a transaction": (claim_statement(alone, False, True), claim_params),
        "claim of a worker's only job": (
            claim_statement(alone, False, True, True),
            claim_params,
        ),
        "position": (positions._AHEAD_OF_ONE, place),
        "position of a new task": (positions._position_of_new(db.store), place),
        "insert with its position": (
            positions._insert_one(db.store, False, "kept"),
            {**new, "j_updated_at": None, **{f"r_{k}": v for k, v in place.items()}},
        ),
    }
    for name, (stmt, params) in statements.items():
        plan = await _generic_plan(db, stmt, params)
        assert "ix_joblib_task_claim" in plan, f"{name}:\n{plan}"
        # No other index of the tasks: one of the pending tasks (another partial index)
        # would be read whole and filtered, at a cost growing with the queue.
        assert set(re.findall(r"ix_joblib_task_\w+", plan)) == {"ix_joblib_task_claim"}, (
            f"{name}:\n{plan}"
        )
