"""A worker's usual report on its own task as one ``UPDATE ... RETURNING``.

Its conditions are the general path's (``services.updates``) for the case where everything
is in order: the task is held by the named worker, that worker belongs to the caller, the
task is in a state the transition table lets move to the target, and its lease has not run
out. The new values are those the general path sets, written as SQL. Parameters: ``b_id``,
``b_worker``, ``b_user``, ``b_now``, ``v_progress``, ``v_message``, and ``b_lease``
(running) or ``v_result``, ``v_error`` (completed).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Float, Interval, bindparam, func, update
from sqlalchemy.ext.asyncio import AsyncSession

from zndraw_joblib_core import ACTIVE_STATUSES, TaskStatus, can_transition
from zndraw_joblib_server.models import status_is
from zndraw_joblib_server.storage import records
from zndraw_joblib_server.storage.prebuilt import prebuilt
from zndraw_joblib_server.storage.records import TASKS, TaskRecord, task_param
from zndraw_joblib_server.storage.rules_sql import lease_held_sql, lease_seconds_sql
from zndraw_joblib_server.storage.stores.statements import callers_worker

__all__ = ["REPORTED", "STATEMENTS", "run_report"]

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
    owned = callers_worker(worker)
    stmt = (
        update(TASKS)
        .where(
            c.id == task_param("b_id", "id"),
            c.worker_id == worker,
            status_is(*sources),
            lease_held_sql(c.lease_expires_at, now),
            owned,
        )
        .values(values)
        .returning(*c)
    )
    return prebuilt(stmt)


STATEMENTS = {target: _statement(target) for target in REPORTED}
"""The one-statement report of each target, built once."""


async def run_report(
    session: AsyncSession, status: TaskStatus, params: Callable[[], dict[str, Any] | None]
) -> TaskRecord | None:
    """Run the report to ``status`` (see ``Store.report``): the task, or None if unwritten."""
    values = params()
    tasks = [] if values is None else await records.fetch(session, STATEMENTS[status], values)
    return tasks[0] if tasks else None
