"""SQLite's store: every write is one transaction, serialised by the process's write gate."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from zndraw_joblib_core import TaskStatus
from zndraw_joblib_server.storage.execute import execute
from zndraw_joblib_server.storage.prebuilt import prebuilt
from zndraw_joblib_server.storage.store import Store, Write
from zndraw_joblib_server.storage.stores.base import SqlStore, beat_worker
from zndraw_joblib_server.storage.stores.claim_sql import LINKS

__all__ = ["SqliteStore"]

_JOBS_OF_WORKER = prebuilt(
    select(LINKS.c.job_id).where(
        LINKS.c.worker_id == bindparam("worker_id", type_=LINKS.c.worker_id.type)
    )
)
"""The ids of the jobs a worker (``worker_id``) serves."""


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

    def pick_ids(self, column: Any, ids: Any) -> Any:
        """SQL: ``column IN (ids)``."""
        return column.in_(ids)

    async def touch_worker(
        self, session: AsyncSession, worker_id: uuid.UUID, user_id: Any, now: datetime
    ) -> tuple[bool, list[uuid.UUID]]:
        """Beat the worker, then read its jobs (two local statements)."""
        if not await beat_worker(session, worker_id, user_id, now):
            return False, []
        rows = await execute(session, _JOBS_OF_WORKER, {"worker_id": worker_id})
        return True, list(rows.scalars())

    async def lock_exclusive(self, session: AsyncSession, key: int) -> None:
        """Nothing: SQLite's write transaction already excludes every other writer."""

    async def fold_counts(self, write: Write) -> None:
        """Nothing: SQLite keeps one count row per job."""
