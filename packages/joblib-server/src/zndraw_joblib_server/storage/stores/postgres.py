"""PostgreSQL's store: transactions, or (for guarded hot paths) statements that commit alone."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import any_, bindparam, func, select, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession

from zndraw_joblib_core import TaskStatus
from zndraw_joblib_server.storage import positions, records
from zndraw_joblib_server.storage.caches import caches_of
from zndraw_joblib_server.storage.execute import execute
from zndraw_joblib_server.storage.pending import counts_kept, kept_count
from zndraw_joblib_server.storage.pending_pg import FOLD
from zndraw_joblib_server.storage.prebuilt import prebuilt
from zndraw_joblib_server.storage.store import Store, Write
from zndraw_joblib_server.storage.stores.claim_sql import claim_statement, job_params
from zndraw_joblib_server.storage.stores.report_sql import STATEMENTS, run_report
from zndraw_joblib_server.storage.stores.statements import LINKS, TOUCH, WORKERS

__all__ = ["PostgresStore"]

_TOUCHED = TOUCH.cte("touched")
_TOUCH_AND_JOBS = prebuilt(
    select(_TOUCHED.c.id, LINKS.c.job_id).select_from(
        _TOUCHED.outerjoin(LINKS, LINKS.c.worker_id == _TOUCHED.c.id)
    )
)
"""The heartbeat and the jobs of the worker in one statement (one round trip)."""

_OWNER_AND_JOBS = prebuilt(
    select(WORKERS.c.user_id, LINKS.c.job_id)
    .select_from(WORKERS.outerjoin(LINKS, LINKS.c.worker_id == WORKERS.c.id))
    .where(WORKERS.c.id == bindparam("b_worker_id", type_=WORKERS.c.id.type))
)
"""A worker's owner and jobs (read only: outside a transaction the claim itself beats)."""

_LOCK = text("SELECT pg_advisory_xact_lock(:key)")


class PostgresStore:
    """PostgreSQL, in a transaction (``alone=False``) or statement by statement (``alone``).

    Work alone is for the hot paths whose every statement is safe on its own (see
    ``Database.write``): it saves the ``BEGIN`` and ``COMMIT`` round trips.
    """

    def __init__(self, alone: bool = False) -> None:
        self._alone = alone
        self._standalone: Store | None = None if alone else PostgresStore(alone=True)

    def standalone(self) -> Store | None:
        """The store of work outside a transaction (None: this is it)."""
        return self._standalone

    async def claim(
        self,
        session: AsyncSession,
        params: dict[str, Any],
        user_id: Any,
        job_ids: list[uuid.UUID] | None,
        *,
        start: bool,
        worker_timeout: float,
    ) -> list[records.TaskRecord] | None:
        """Alone: checked and beaten by the statement (every time), which may find the job.

        Alone, it also keeps the worker's claim hint (whether it served one job, and
        whether this claim found tasks) that decides its next claim's first try.
        """
        if job_ids is None and not self._alone:
            return None
        several = job_ids is not None and job_params(params, job_ids)
        if self._alone:
            params |= {"b_beat": params["b_now"], "b_user": user_id}
        stmt = claim_statement(self, several, self._alone, job_ids is None, start)
        tasks = await records.fetch(session, stmt, params)
        if self._alone:  # the hint for the worker's next claim (see ``claim_tasks``)
            one_job = job_ids is None or len(job_ids) == 1
            caches_of(session).claim_hints.put(params["b_worker"], (one_job, bool(tasks)))
        return tasks

    async def report(
        self,
        session: AsyncSession,
        status: TaskStatus,
        params: Callable[[], dict[str, Any] | None],
    ) -> records.TaskRecord | None:
        """Alone: the report checks and writes in one ``UPDATE`` (in a transaction: None)."""
        if not self._alone or status not in STATEMENTS:
            return None
        return await run_report(session, status, params)

    async def insert_one(
        self, session: AsyncSession, row: dict[str, Any], *, keyed: bool
    ) -> tuple[bool, int | None]:
        """The insert's ``RETURNING`` answers the position too (one round trip, not two)."""
        return await positions.insert_one(session, self, row, keyed=keyed, counting=True)

    async def load_for_update(
        self, session: AsyncSession, ids: Iterable[uuid.UUID], *, light: bool
    ) -> tuple[dict[uuid.UUID, records.TaskRecord], records.Owners]:
        """Row-locked in a transaction; alone, unlocked (the save checks versions)."""
        return await records.load_with_owners(session, ids, light=light, locked=not self._alone)

    async def save(
        self,
        session: AsyncSession,
        tasks: Iterable[records.TaskRecord],
        *,
        skip_stale: bool = False,
    ) -> None:
        """In a transaction, as SQLite; alone, each task only if its version is unchanged."""
        await records.save(session, tasks, guarded=self._alone, skip_stale=skip_stale)

    def pick_ids(self, column: Any, ids: Any) -> Any:
        """SQL: ``column = ANY(ARRAY(ids))``, matched through the primary key.

        With ``IN (SELECT ...)`` a generic plan (which takes a limit for a tenth of the
        queue) may hash-join the whole tasks table instead.
        """
        return column == any_(func.array(ids.scalar_subquery()))

    def insert(self, table: Any) -> Any:
        """``INSERT`` in postgresql's dialect (its ``ON CONFLICT`` clause)."""
        return postgresql.insert(table)

    def kept_count(self, job_id: Any) -> Any:
        """SQL: the sum of the job's count rows (one per backend until folded), 0 without."""
        return kept_count("postgresql", job_id)

    async def touch_worker(
        self, session: AsyncSession, worker_id: uuid.UUID, user_id: Any, now: datetime
    ) -> tuple[bool, list[uuid.UUID]]:
        """Beat the worker and read its jobs, in as few round trips as the mode allows.

        In a transaction: one statement (its row lock makes a concurrent ``DELETE /workers``
        wait for the claim). Alone: read the owner and jobs only (the claim statement beats),
        beating here only when there is nothing to claim.
        """
        params = {"b_worker_id": worker_id, "b_user_id": user_id, "b_now": now}
        if not self._alone:
            rows = (await execute(session, _TOUCH_AND_JOBS, params)).all()
            return bool(rows), [job_id for _id, job_id in rows if job_id is not None]
        rows = (await execute(session, _OWNER_AND_JOBS, params)).all()
        touched = bool(rows) and rows[0][0] == user_id
        job_ids = [job_id for _owner, job_id in rows if job_id is not None]
        if touched and not job_ids:
            await execute(session, TOUCH, params)  # nothing to claim: beat on its own
        return touched, job_ids

    async def lock_exclusive(self, session: AsyncSession, key: int) -> None:
        """A transaction-scoped advisory lock."""
        await session.execute(_LOCK, {"key": key})

    async def fold_counts(self, write: Write) -> None:
        """Fold the per-backend counts into their jobs' base rows, in a write of its own.

        Keeps the counts table at a few rows per job as connections (and so backend pids)
        come and go; it never waits for a row a transaction holds.
        """
        async with write() as uow:
            if await counts_kept(uow.session):
                await uow.session.execute(FOLD)
