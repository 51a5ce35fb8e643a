"""SQLite's store: every write is one transaction, serialised by the process's write gate."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from zndraw_joblib_core import TaskStatus
from zndraw_joblib_server.domain.rules import beat_due
from zndraw_joblib_server.storage import positions, records
from zndraw_joblib_server.storage.caches import caches_of
from zndraw_joblib_server.storage.execute import execute
from zndraw_joblib_server.storage.pending import kept_count
from zndraw_joblib_server.storage.store import Store, Write
from zndraw_joblib_server.storage.stores.claim_sql import claim_statement, job_params
from zndraw_joblib_server.storage.stores.report_sql import run_report
from zndraw_joblib_server.storage.stores.statements import JOBS_OF_WORKER, TOUCH

__all__ = ["SqliteStore"]


class SqliteStore:
    """SQLite: one transaction per write (no statement-alone mode), one count row per job."""

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

    async def report(
        self,
        session: AsyncSession,
        status: TaskStatus,
        params: Callable[[], dict[str, Any] | None],
    ) -> records.TaskRecord | None:
        """Completions in one ``UPDATE`` (a start's lease needs interval arithmetic: None)."""
        if status != TaskStatus.COMPLETED:
            return None
        return await run_report(session, status, params)

    async def insert_one(
        self, session: AsyncSession, row: dict[str, Any], *, keyed: bool
    ) -> tuple[bool, int | None]:
        """The insert alone: a position read afterwards costs no round trip here."""
        return await positions.insert_one(session, self, row, keyed=keyed, counting=False)

    async def load_for_update(
        self, session: AsyncSession, ids: Iterable[uuid.UUID], *, light: bool
    ) -> tuple[dict[uuid.UUID, records.TaskRecord], records.Owners]:
        """Row-locked as asked (SQLite locks nothing by row: the write gate excludes)."""
        return await records.load_with_owners(session, ids, light=light, locked=True)

    async def save(
        self,
        session: AsyncSession,
        tasks: Iterable[records.TaskRecord],
        *,
        skip_stale: bool = False,
    ) -> None:
        """One ``executemany`` per set of changed columns (no task changes meanwhile)."""
        await records.save(session, tasks, guarded=False, skip_stale=skip_stale)

    def pick_ids(self, column: Any, ids: Any) -> Any:
        """SQL: ``column IN (ids)``."""
        return column.in_(ids)

    def insert(self, table: Any) -> Any:
        """``INSERT`` in sqlite's dialect (its ``ON CONFLICT`` clause)."""
        return sqlite.insert(table)

    def kept_count(self, job_id: Any) -> Any:
        """SQL: the job's count row; ``NULL`` without one (only a hand edit removes it)."""
        return kept_count("sqlite", job_id)

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
