"""What both stores do alike, told apart by a few attributes each store sets."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from typing import Any, cast

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from zndraw_joblib_core import TaskStatus
from zndraw_joblib_server.storage import positions, records
from zndraw_joblib_server.storage.pending import kept_count
from zndraw_joblib_server.storage.store import Store
from zndraw_joblib_server.storage.stores.report_sql import run_report

__all__ = ["SqlStore"]


class SqlStore:
    """The methods the stores share (see :class:`~zndraw_joblib_server.storage.store.Store`)."""

    dialect: str
    """The database's dialect name (its ``INSERT`` and kept counts)."""
    counting: bool
    """Whether an insert's ``RETURNING`` answers the new task's position too."""
    alone = False
    """Whether work runs statement by statement, outside a transaction."""
    reports: frozenset[TaskStatus] = frozenset()
    """The targets of the reports written in one ``UPDATE`` (see ``stores.report_sql``)."""

    async def report(
        self,
        session: AsyncSession,
        status: TaskStatus,
        params: Callable[[], dict[str, Any] | None],
    ) -> records.TaskRecord | None:
        """The report in one ``UPDATE`` when :attr:`reports` holds ``status`` (else None)."""
        if status not in self.reports:
            return None
        return await run_report(session, status, params)

    async def insert_one(
        self, session: AsyncSession, row: dict[str, Any], *, keyed: bool
    ) -> tuple[bool, int | None]:
        """The insert; with :attr:`counting` its ``RETURNING`` answers the position too.

        Where the position costs a round trip of its own (PostgreSQL) it comes with the
        insert; on SQLite a position read afterwards costs none.
        """
        return await positions.insert_one(
            session, cast(Store, self), row, keyed=keyed, counting=self.counting
        )

    async def load_for_update(
        self, session: AsyncSession, ids: Iterable[uuid.UUID], *, light: bool
    ) -> tuple[dict[uuid.UUID, records.TaskRecord], records.Owners]:
        """The tasks among ``ids`` to change, and the owners of the workers holding them.

        Row-locked in a transaction (SQLite locks nothing by row: the write gate excludes);
        alone, unlocked (the save checks versions).
        """
        return await records.load_with_owners(session, ids, light=light, locked=not self.alone)

    async def save(
        self,
        session: AsyncSession,
        tasks: Iterable[records.TaskRecord],
        *,
        skip_stale: bool = False,
    ) -> None:
        """Write what changed: one ``executemany`` per set of changed columns.

        Alone, each task only if its version is unchanged.
        """
        await records.save(session, tasks, guarded=self.alone, skip_stale=skip_stale)

    def insert(self, table: Any) -> Any:
        """``INSERT`` in the database's dialect (its ``ON CONFLICT`` clause)."""
        return (postgresql if self.dialect == "postgresql" else sqlite).insert(table)

    def kept_count(self, job_id: Any) -> Any:
        """SQL: the job's kept pending count (see ``storage.pending.kept_count``)."""
        return kept_count(self.dialect, job_id)
