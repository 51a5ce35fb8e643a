"""SQLite's store: every write is one transaction, serialised by the process's write gate."""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from zndraw_joblib_core import TaskStatus
from zndraw_joblib_server.domain.rules import beat_due
from zndraw_joblib_server.storage import records
from zndraw_joblib_server.storage.caches import caches_of
from zndraw_joblib_server.storage.execute import execute
from zndraw_joblib_server.storage.store import Store, Write
from zndraw_joblib_server.storage.stores.base import SqlStore
from zndraw_joblib_server.storage.stores.claim_sql import claim_statement, job_params
from zndraw_joblib_server.storage.stores.statements import JOBS_OF_WORKER, TOUCH

__all__ = ["SqliteStore"]


class SqliteStore(SqlStore):
    """SQLite: one transaction per write (no statement-alone mode), one count row per job.

    Completions are reported in one ``UPDATE`` (a start's lease needs interval arithmetic);
    a position read after an insert costs no round trip here; the job's count row is
    ``NULL`` without one (only a hand edit removes it).
    """

    dialect = "sqlite"
    counting = False
    reports = frozenset({TaskStatus.COMPLETED})

    def standalone(self) -> Store | None:
        """None: work always runs in a transaction (the write gate makes it cheap)."""
        return None

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
        """The jobs' claim statement, or without ``job_ids`` the worker's only job's.

        The latter checks the worker's owner in the statement and beats the worker after
        it only when due (a busy worker's claims need not each rewrite its row).
        """
        worker = params["b_worker"]
        caches = caches_of(session)
        if job_ids is None:
            params["b_user"] = user_id
            tasks = await records.fetch(
                session, claim_statement(self, False, False, True, start), params
            )
            if tasks and beat_due(caches.beats.get(worker), time.monotonic(), worker_timeout):
                await self.touch_worker(session, worker, user_id, params["b_now"], jobs=False)
        else:
            stmt = claim_statement(self, job_params(params, job_ids), False, start=start)
            tasks = await records.fetch(session, stmt, params)
        caches.claim_hints.put(worker, (job_ids is None or len(job_ids) == 1, bool(tasks)))
        return tasks

    def pick_ids(self, column: Any, ids: Any) -> Any:
        """SQL: ``column IN (ids)``."""
        return column.in_(ids)

    async def touch_worker(
        self,
        session: AsyncSession,
        worker_id: uuid.UUID,
        user_id: Any,
        now: datetime,
        *,
        jobs: bool = True,
    ) -> tuple[bool, list[uuid.UUID]]:
        """Beat the worker, then read its jobs (two local statements; ``jobs``: the read)."""
        params = {"b_worker_id": worker_id, "b_user_id": user_id, "b_now": now}
        touched = (await execute(session, TOUCH, params)).scalar_one_or_none() is not None
        if touched:
            caches_of(session).beats.put(worker_id, time.monotonic())
        if not touched or not jobs:
            return touched, []
        rows = await execute(session, JOBS_OF_WORKER, {"worker_id": worker_id})
        return True, list(rows.scalars())

    async def lock_exclusive(self, session: AsyncSession, key: int) -> None:
        """Nothing: SQLite's write transaction already excludes every other writer."""

    async def fold_counts(self, write: Write) -> None:
        """Nothing: SQLite keeps one count row per job."""
