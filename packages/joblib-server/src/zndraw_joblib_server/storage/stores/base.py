"""What both stores do alike, told apart by a few attributes each store sets.

Also a worker's usual report on its own task as one ``UPDATE ... RETURNING``
(:data:`STATEMENTS`). Its conditions are the general path's (``services.updates``) for the
case where everything is in order: the task is held by the named worker, that worker
belongs to the caller, the task is in a state the transition table lets move to the
target, and its lease has not run out. The new values are those the general path sets,
written as SQL. Parameters: ``b_id``, ``b_worker``, ``b_user``, ``b_now``, ``v_progress``,
``v_message``, and ``b_lease`` (running) or ``v_result``, ``v_error`` (completed).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from datetime import datetime
from functools import lru_cache
from typing import Any, cast

from sqlalchemy import Float, Interval, bindparam, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from zndraw_joblib_core import ACTIVE_STATUSES, TaskStatus, can_transition
from zndraw_joblib_server.domain.rules import beat_due
from zndraw_joblib_server.models import status_is
from zndraw_joblib_server.storage import positions, records
from zndraw_joblib_server.storage.caches import caches_of
from zndraw_joblib_server.storage.execute import execute
from zndraw_joblib_server.storage.pending import kept_count
from zndraw_joblib_server.storage.prebuilt import BY_WORKER, prebuilt
from zndraw_joblib_server.storage.records import TASKS, task_param
from zndraw_joblib_server.storage.rules_sql import lease_held_sql, lease_seconds_sql
from zndraw_joblib_server.storage.store import Store
from zndraw_joblib_server.storage.stores.claim_sql import (
    TOUCH,
    callers_worker,
    claim_statement,
    job_params,
)

__all__ = ["REPORTED", "STATEMENTS", "SqlStore", "beat_worker"]

REPORTED = (TaskStatus.RUNNING, TaskStatus.COMPLETED)
"""The targets reported in one statement."""


def _seconds(value: Any) -> Any:
    """SQL: an interval of ``value`` seconds (a float expression)."""
    return func.make_interval(0, 0, 0, 0, 0, 0, value, type_=Interval)


def _statement(target: TaskStatus) -> Any:
    c = TASKS.c
    now = task_param("b_now", "started_at")
    sources = [s for s in ACTIVE_STATUSES if can_transition(s, target)]
    values: dict[str, Any] = {
        "status": target,
        "version": c.version + 1,
        "progress": func.coalesce(task_param("v_progress", "progress"), c.progress),
        "message": func.coalesce(task_param("v_message", "message"), c.message),
    }
    if target == TaskStatus.RUNNING:
        lease = lease_seconds_sql(c.lease_seconds, bindparam("b_lease", Float))
        values |= {
            "started_at": now,
            "lease_expires_at": now + _seconds(lease),
            "deadline_at": func.coalesce(now + _seconds(c.timeout_seconds), c.deadline_at),
        }
    else:
        values |= {
            "completed_at": now,
            "lease_expires_at": None,
            "deadline_at": None,
            "result": task_param("v_result", "result"),
            "error": func.coalesce(task_param("v_error", "error"), c.error),
        }
    worker = task_param("b_worker", "worker_id")
    stmt = (
        update(TASKS)
        .where(
            c.id == task_param("b_id", "id"),
            c.worker_id == worker,
            status_is(*sources),
            lease_held_sql(c.lease_expires_at, now),
            callers_worker(worker),
        )
        .values(values)
        .returning(*c)
    )
    return prebuilt(stmt, rows_of=BY_WORKER)


STATEMENTS = {target: _statement(target) for target in REPORTED}
"""The one-statement report of each target, built once."""


@lru_cache(maxsize=8)
def _chained(store: Store, target: TaskStatus, start: bool) -> Any:
    """The report to ``target`` and, if it wrote, the claim of the worker's only job.

    Both ``UPDATE`` s are ``WITH`` queries of one statement (PostgreSQL): the claim's
    condition reads the report's ``RETURNING``; the answer is the rows of both.
    """
    reported = STATEMENTS[target].cte("reported")
    claim = claim_statement(store, False, True, True, start)  # guarded, finding the job
    claimed = claim.where(select(reported.c.id).exists()).cte("claimed")
    return prebuilt(select(reported).union_all(select(claimed)), rows_of=BY_WORKER)


async def beat_worker(session: AsyncSession, worker_id: Any, user_id: Any, now: datetime) -> bool:
    """Beat the worker if it is the caller's (``TOUCH``), noting when; whether it was."""
    params = {"b_worker_id": worker_id, "b_user_id": user_id, "b_now": now}
    touched = (await execute(session, TOUCH, params)).scalar_one_or_none() is not None
    if touched:
        caches_of(session).beats.put(worker_id, time.monotonic())
    return touched


class SqlStore:
    """The methods the stores share (see :class:`~zndraw_joblib_server.storage.store.Store`)."""

    dialect: str
    """The database's dialect name (its ``INSERT`` and kept counts)."""
    counting: bool
    """Whether an insert's ``RETURNING`` answers the new task's position too."""
    finding_beats = False
    """Whether a claim that finds the worker's job also beats (and row-locks) the worker in
    its statement; else it beats afterwards, when due (SQLite: its write gate already
    keeps a concurrent ``DELETE /workers`` out)."""
    alone = False
    """Whether work runs statement by statement, outside a transaction."""
    reports: frozenset[TaskStatus] = frozenset()
    """The targets of the reports written in one ``UPDATE`` (see :data:`STATEMENTS`)."""
    chains = False
    """Whether such a report and the worker's next claim can be one statement (``WITH``
    queries that write: PostgreSQL)."""

    async def claim(
        self,
        session: AsyncSession,
        params: dict[str, Any],
        user_id: Any,
        job_ids: list[uuid.UUID] | None,
        *,
        start: bool,
        worker_timeout: float,
    ) -> list[records.TaskRecord]:
        """The jobs' claim statement, or without ``job_ids`` the worker's only job's.

        The latter checks the worker's owner in the statement and beats the worker (in the
        statement where :attr:`finding_beats`, else after it when due); alone, the
        statement also checks and beats the worker every time. The claim keeps the
        worker's claim hint (whether it served one job, and whether this claim found
        tasks) that decides its next claim's first try.
        """
        finding = job_ids is None
        several = job_ids is not None and job_params(params, job_ids)
        guarded = self.alone or (finding and self.finding_beats)
        if guarded:
            params["b_beat"] = params["b_now"]
        if guarded or finding:
            params["b_user"] = user_id
        stmt = claim_statement(self, several, guarded, finding, start)
        tasks = await records.fetch(session, stmt, params)
        caches = caches_of(session)
        if finding and tasks and not guarded:  # the statement did not beat the worker
            # Only when due: a busy worker's claims need not each rewrite its row (SQLite).
            worker = params["b_worker"]
            if beat_due(caches.beats.get(worker), time.monotonic(), worker_timeout):
                await beat_worker(session, worker, user_id, params["b_now"])
        one_job = job_ids is None or len(job_ids) == 1  # the hint (see ``claim_tasks``)
        caches.claim_hints.put(params["b_worker"], (one_job, bool(tasks)))
        return tasks

    async def report(
        self,
        session: AsyncSession,
        status: TaskStatus,
        params: Callable[[], dict[str, Any] | None],
    ) -> records.TaskRecord | None:
        """The report in one ``UPDATE`` when :attr:`reports` holds ``status`` (else None)."""
        if status not in self.reports:
            return None
        values = params()
        tasks = [] if values is None else await records.fetch(session, STATEMENTS[status], values)
        return tasks[0] if tasks else None

    async def report_and_claim(
        self,
        session: AsyncSession,
        status: TaskStatus,
        params: Callable[[], tuple[dict[str, Any], dict[str, Any]] | None],
        *,
        start: bool,
    ) -> tuple[records.TaskRecord | None, list[records.TaskRecord]] | None:
        """Both in one statement where :attr:`chains` (else None); see ``Store``."""
        built = params() if self.chains and status in self.reports else None
        if built is None:
            return None
        report, claim = built
        values = {**claim, **report, "b_beat": report["b_now"]}
        rows = await records.fetch(session, _chained(self, status, start), values)
        reported = next((row for row in rows if row.id == report["b_id"]), None)
        claimed = [row for row in rows if row is not reported]
        if reported is not None:
            caches_of(session).claim_hints.put(report["b_worker"], (True, bool(claimed)))
        return reported, claimed

    async def insert_one(
        self,
        session: AsyncSession,
        row: dict[str, Any],
        job_changed_at: datetime | None,
        *,
        keyed: bool,
    ) -> tuple[bool, int | None]:
        """The insert; with :attr:`counting` its ``RETURNING`` answers the position too.

        Where the position costs a round trip of its own (PostgreSQL) it comes with the
        insert; on SQLite a position read afterwards costs none.
        """
        return await positions.insert_one(
            session, cast(Store, self), row, job_changed_at, keyed=keyed, counting=self.counting
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
