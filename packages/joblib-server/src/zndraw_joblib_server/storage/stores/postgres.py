"""PostgreSQL's store: transactions, or (for guarded hot paths) statements that commit alone."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import any_, bindparam, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from zndraw_joblib_server.storage.execute import execute
from zndraw_joblib_server.storage.pending import counts_kept
from zndraw_joblib_server.storage.pending_pg import FOLD
from zndraw_joblib_server.storage.prebuilt import prebuilt
from zndraw_joblib_server.storage.store import Store, Write
from zndraw_joblib_server.storage.stores.base import REPORTED, SqlStore
from zndraw_joblib_server.storage.stores.claim_sql import LINKS, TOUCH, WORKERS

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


class PostgresStore(SqlStore):
    """PostgreSQL, in a transaction (``alone=False``) or statement by statement (``alone``).

    Work alone is for the hot paths whose every statement is safe on its own (see
    ``Database.write``): it saves the ``BEGIN`` and ``COMMIT`` round trips. Only alone does
    a report check and write in one ``UPDATE``. In both modes a claim may find the worker's
    only job in its statement, which then checks and beats the worker too (its row lock
    holds a concurrent ``DELETE /workers`` back, as :meth:`touch_worker`'s does); the
    insert's ``RETURNING`` answers the position too (one round trip, not two); a job's kept
    count is the sum of its count rows (one per backend until folded), 0 without.
    """

    dialect = "postgresql"
    counting = True
    finding_beats = True
    chains = True

    def __init__(self, alone: bool = False) -> None:
        self.alone = alone
        self.reports = frozenset(REPORTED if alone else ())
        self._standalone: Store | None = None if alone else PostgresStore(alone=True)

    def standalone(self) -> Store | None:
        """The store of work outside a transaction (None: this is it)."""
        return self._standalone

    def pick_ids(self, column: Any, ids: Any) -> Any:
        """SQL: ``column = ANY(ARRAY(ids))``, matched through the primary key.

        With ``IN (SELECT ...)`` a generic plan (which takes a limit for a tenth of the
        queue) may hash-join the whole tasks table instead.
        """
        return column == any_(func.array(ids.scalar_subquery()))

    async def touch_worker(
        self, session: AsyncSession, worker_id: uuid.UUID, user_id: Any, now: datetime
    ) -> tuple[bool, list[uuid.UUID]]:
        """Beat the worker and read its jobs, in as few round trips as the mode allows.

        In a transaction: one statement (its row lock makes a concurrent ``DELETE /workers``
        wait for the claim). Alone: read the owner and jobs only (the claim statement beats),
        beating here only when there is nothing to claim.
        """
        params = {"b_worker_id": worker_id, "b_user_id": user_id, "b_now": now}
        if not self.alone:
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
