"""A worker's usual report on its own task as one ``UPDATE ... RETURNING``.

Its conditions are the general path's (``services.updates``) for the case where everything
is in order: the task is held by the named worker, that worker belongs to the caller, the
task is in a state the transition table lets move to the target, and its lease has not run
out. The new values are those the general path sets, written as SQL. Parameters: ``b_id``,
``b_worker``, ``b_user``, ``b_now``, ``v_progress``, ``v_message``, and ``b_lease``
(running) or ``v_result``, ``v_error`` (completed).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Float, Interval, bindparam, exists, func, select, update

from zndraw_joblib_core import ACTIVE_STATUSES, TaskStatus, can_transition
from zndraw_joblib_server.models import Worker, status_is
from zndraw_joblib_server.storage.prebuilt import prebuilt
from zndraw_joblib_server.storage.records import TASKS, task_param
from zndraw_joblib_server.storage.rules_sql import lease_held_sql, lease_seconds_sql

__all__ = ["REPORTED", "STATEMENTS"]

REPORTED = (TaskStatus.RUNNING, TaskStatus.COMPLETED)
"""The targets reported in one statement."""

_WORKERS = Worker.__table__


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
    owned = exists(
        select(_WORKERS.c.id).where(
            _WORKERS.c.id == worker,
            _WORKERS.c.user_id == bindparam("b_user", type_=_WORKERS.c.user_id.type),
        )
    )
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
